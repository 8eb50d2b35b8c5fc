"""dedup_substring: spans of >= K tokens repeated across documents stay only in the smallest id.

Ground truth is computed here by brute force (every K-token window of every document in a dict,
its owner the smallest id holding it), on real Common Crawl text from shared/data with a planted
passage, and compared with the stage run over 1, 2 and 4 partitions and several shard sizes.
"""

from __future__ import annotations

import gzip
import html
import json
import random
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import dask_cluster, report, require_shared_data, run_cli, stage, write_config
from warcgen import record, write_warc

from refine.dedup.substring import (
    _ANCHOR_BASE,
    REASON,
    DedupSubstring,
    anchor_hashes,
    index_shard,
    tokenize,
)
from refine.pipeline.stage import GlobalContext

K = 50
#: the documented tokenisation, written out again: non-space runs, one token per Han/kana/Thai
#: character
_CJK = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\s{_CJK}]+")


def real_docs() -> list[tuple[str, str]]:
    data = require_shared_data()
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [(r["id"], r["text"]) for r in rows]


def expected(docs: list[tuple[str, str]], k: int = K, min_tokens: int = 50) -> dict[str, str]:
    """Brute force: the owner of a window is the smallest id holding it; a document cuts every
    window owned by another one, each run of cut tokens with the whitespace after it (before it
    at the end of the text); a document that lost text and keeps < min_tokens tokens goes."""
    owner: dict[tuple[str, ...], str] = {}
    spans = {}
    for doc_id, text in docs:
        spans[doc_id] = [(m.start(), m.end()) for m in _TOKEN.finditer(text)]
        toks = [text[a:b] for a, b in spans[doc_id]]
        for i in range(len(toks) - k + 1):
            w = tuple(toks[i : i + k])
            if w not in owner or doc_id < owner[w]:
                owner[w] = doc_id
    out = {}
    for doc_id, text in docs:
        sp = spans[doc_id]
        toks = [text[a:b] for a, b in sp]
        cut = [False] * len(toks)
        for i in range(len(toks) - k + 1):
            if owner[tuple(toks[i : i + k])] != doc_id:
                cut[i : i + k] = [True] * k
        if not any(cut):
            out[doc_id] = text
            continue
        new, cursor, i = [], 0, 0
        while i < len(toks):
            if not cut[i]:
                i += 1
                continue
            j = i
            while j < len(toks) and cut[j]:
                j += 1
            start = sp[i][0] if (j < len(toks) or i == 0) else sp[i - 1][1]
            end = sp[j][0] if j < len(toks) else len(text)
            new.append(text[cursor:start])
            cursor, i = end, j
        new.append(text[cursor:])
        result = "".join(new)
        if len(toks) - sum(cut) >= min_tokens and result.strip():
            out[doc_id] = result
    return out


def planted_corpus() -> tuple[list[tuple[str, str]], str, list[str]]:
    """Real documents; a 200-token passage (taken from a real document left out of the corpus)
    planted between two paragraphs of 20 documents that had no repeated span of their own, and
    one document that is nothing but the passage and a few words (it must go)."""
    docs = real_docs()
    truth = expected(docs)
    clean = [(i, t) for i, t in docs if truth.get(i) == t]
    source = next(d for d in clean if len(tokenize(d[1])) >= 1000)
    passage = " ".join(tokenize(source[1])[300:500])
    corpus = [d for d in docs if d[0] != source[0]]
    chosen = [
        i for i, t in clean if i != source[0] and len(tokenize(t)) >= 150 and t.count("\n") >= 3
    ][:20]
    assert len(chosen) == 20
    planted = []
    for doc_id, text in corpus:
        if doc_id in chosen:
            paras = text.split("\n")
            mid = len(paras) // 2
            text = "\n".join(paras[:mid] + [passage] + paras[mid:])
        planted.append((doc_id, text))
    planted.append(("zzzz-only-the-passage", "Read this: " + passage))
    return planted, passage, chosen


def run_stage(tmp_path: Path, docs, n_parts: int, workers: int, languages=None, **params):
    """Run the stage over ``docs`` in ``n_parts`` parts (``languages``: id -> language column)."""
    inp, out, logs = tmp_path / "in", tmp_path / "out", tmp_path / "logs"
    inp.mkdir(parents=True)
    size = -(-len(docs) // n_parts)
    for p in range(n_parts):
        chunk = docs[p * size : (p + 1) * size]
        columns = {
            "id": [d for d, _ in chunk],
            "url": [f"http://x.example/{d}" for d, _ in chunk],
            "text": pa.array([t for _, t in chunk], pa.large_string()),
            "source": ["s"] * len(chunk),
        }
        if languages is not None:
            columns["language"] = [languages[d] for d, _ in chunk]
        pq.write_table(pa.table(columns), inp / f"part-{p:05d}.parquet")
    stage = DedupSubstring(DedupSubstring.Params(**params))
    with Client(
        processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
    ) as c:
        stats = stage.run(GlobalContext(str(inp), str(out), str(logs), str(tmp_path / "w"), c))
    table = pq.read_table(out)
    got = dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))
    return stats, got, pq.read_table(logs)


@pytest.fixture(scope="module")
def planted():
    return planted_corpus()


@pytest.fixture(scope="module")
def truth(planted):
    return expected(planted[0])


def test_tokens_are_words_and_single_cjk_characters():
    assert tokenize("Hello,  world!\n日本語のtext 3.5 กขค") == (
        ["Hello,", "world!", "日", "本", "語", "の", "text", "3.5", "ก", "ข", "ค"]
    )


def test_planted_passage_stays_in_exactly_one_document(tmp_path, planted, truth):
    docs, passage, chosen = planted
    stats, got, log = run_stage(tmp_path, docs, 3, 2)
    assert got == truth
    holders = [i for i, t in got.items() if passage in t]
    assert holders == [min(chosen)]
    original = dict(real_docs())
    for doc_id in chosen:
        if doc_id == min(chosen):
            assert got[doc_id] == dict(docs)[doc_id]
            continue
        paras = original[doc_id].split("\n")
        mid = len(paras) // 2
        # the document's own text on both sides of the cut is still there, in order (the first
        # words after the passage go too where two documents continue it the same way: that
        # is a repeated 50-token span as well)
        before, after = "\n".join(paras[:mid]), "\n".join(paras[mid:]).strip()
        assert got[doc_id].startswith(before) and got[doc_id].rstrip().endswith(after[-200:])
        left, own = len(tokenize(got[doc_id])), len(tokenize(original[doc_id]))
        assert own - (K - 1) <= left <= own
    assert "zzzz-only-the-passage" not in got
    assert stats.dropped == {REASON: len(docs) - len(truth)}
    stats.check_balance()
    rows = {r["id"]: r for r in log.to_pylist()}
    assert len(rows) == len(docs)
    for doc_id in chosen:
        if doc_id == min(chosen):
            continue
        r = rows[doc_id]
        assert r["kept"] and r["kept_by"] == min(chosen)
        assert r["removed_spans"][0] == {"text": passage[:300], "kept_by": min(chosen)}
        assert r["tokens_removed"] >= 200
    gone = rows["zzzz-only-the-passage"]
    assert (gone["kept"], gone["reason"]) == (False, REASON)
    assert gone["detail"] == "2 tokens left after removing 200"
    changed = {i for i, t in docs if truth.get(i) != t}
    assert {r["id"] for r in rows.values() if r["spans_removed"]} == changed
    assert stats.counters["docs_with_spans_removed"] == len(changed)
    assert stats.counters["tokens_removed"] == sum(r["tokens_removed"] for r in rows.values())
    assert stats.counters["bytes_removed"] == sum(r["bytes_removed"] for r in rows.values())
    assert stats.counters["tokens_in"] == sum(len(tokenize(t)) for _, t in docs)


def test_nothing_removed_without_a_repeated_span(tmp_path):
    docs = real_docs()[:200]
    truth = expected(docs)
    untouched = [i for i, t in docs if truth.get(i) == t]
    assert len(untouched) > 150  # most real documents have no repeated span >= 50 words
    _, got, log = run_stage(tmp_path / "a", docs, 2, 1)
    assert got == truth
    assert all(got[i] == dict(docs)[i] for i in untouched)
    rows = {r["id"]: r for r in log.to_pylist()}
    assert all(rows[i]["spans_removed"] == 0 and rows[i]["kept_by"] is None for i in untouched)
    # with K longer than any document nothing is ever removed
    stats, got, _ = run_stage(tmp_path / "b", docs, 2, 1, min_span_tokens=100_000)
    assert got == dict(docs)
    assert stats.counters["spans_removed"] == 0 and stats.counters["windows"] == 0


def test_same_result_with_1_2_4_partitions_and_any_shard_size(tmp_path, planted, truth):
    docs = planted[0]
    results = {}
    for n_parts, workers, shard_bytes in [
        (1, 1, 2**26),
        (2, 2, 2**26),
        (4, 2, 2**26),
        (4, 2, 40_000),
    ]:
        stats, got, log = run_stage(
            tmp_path / f"{n_parts}-{shard_bytes}", docs, n_parts, workers, shard_bytes=shard_bytes
        )
        keys = ("spans_removed", "tokens_removed", "bytes_removed", "docs_with_spans_removed")
        results[(n_parts, shard_bytes)] = (
            got,
            {k: stats.counters[k] for k in keys},
            sorted(log.to_pylist(), key=lambda r: r["id"]),
        )
    first = results[(1, 2**26)]
    assert first[0] == truth
    for key, value in results.items():
        assert value == first, key


def test_shard_size_bounds_the_largest_suffix_array(tmp_path, planted, truth):
    docs = planted[0]
    budget = 40_000
    big, got_big, _ = run_stage(tmp_path / "big", docs, 2, 1)
    small, got_small, _ = run_stage(tmp_path / "small", docs, 2, 1, shard_bytes=budget)
    assert got_small == got_big == truth
    largest_doc = max(len(t.encode()) for _, t in docs)
    assert small.counters["largest_shard_bytes"] <= max(budget, largest_doc)
    # a suffix array entry per token (and per document end): bounded by the shard, not the corpus
    largest_doc_tokens = max(len(tokenize(t)) + 1 for _, t in docs)
    assert small.counters["largest_suffix_array"] <= max(budget // 2, largest_doc_tokens)
    tokens = sum(len(tokenize(t)) + 1 for _, t in docs)
    assert big.counters["largest_suffix_array"] >= tokens // 2  # one shard per part
    assert small.counters["largest_suffix_array"] * 5 < big.counters["largest_suffix_array"]
    assert small.counters["shards"] > 20 and big.counters["shards"] == 2
    # the repeats that cross shards were found by the window hash shuffle
    assert small.counters["cross_shard_windows"] > big.counters["cross_shard_windows"] > 0


PAGE = "<html><body><article>{}</article></body></html>"


def test_runner_writes_the_stage_counts_to_report(tmp_path, planted):
    docs, passage, _ = planted
    pages = [d for d in docs if passage in d[1]][:6] + [d for d in docs if passage not in d[1]][:6]
    warc = tmp_path / "pages.warc.gz"
    write_warc(
        warc,
        [
            record(
                "response",
                f"http://site{i}.example/page",
                PAGE.format(
                    "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n") if p.strip())
                ).encode(),
                record_id=f"<urn:uuid:{i:08d}-0000-0000-0000-000000000000>",
            )
            for i, (_, text) in enumerate(pages)
        ],
    )
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path / "c.yaml",
        [str(warc)],
        out,
        "  - read: {}\n  - extract: {engine: resiliparse}\n"
        f"  - dedup_substring: {{min_span_tokens: {K}, min_tokens: 50}}\n",
    )
    with dask_cluster(2) as (address, _):
        proc = run_cli("run", str(cfg), "--scheduler", address, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    extracted = pq.read_table(out / "documents" / "01_extract")
    before = list(zip(extracted["id"].to_pylist(), extracted["text"].to_pylist(), strict=True))
    truth = expected(before)
    final = pq.read_table(out / "documents" / "02_dedup_substring")
    assert dict(zip(final["id"].to_pylist(), final["text"].to_pylist(), strict=True)) == truth
    entry = stage(report(out), "dedup_substring")
    assert (entry["docs_in"], entry["docs_out"]) == (len(before), len(truth))
    changed = [i for i, t in before if truth.get(i) != t]
    assert len(changed) >= 5  # the planted passage, cut from all its copies but one
    assert entry["counters"]["docs_with_spans_removed"] == len(changed)
    assert entry["counters"]["spans_removed"] >= 5
    assert entry["bytes_in"] - entry["bytes_out"] >= 5 * len(passage)
    assert (
        json.loads((out / "stats" / "02_dedup_substring.json").read_text())["counters"]
        == (entry["counters"])
    )
    # the decision log answers `refine explain` and `refine inspect`
    victim = changed[-1]
    exp = run_cli("explain", str(out), "--id", victim, "--json")
    assert exp.returncode == 0, exp.stderr
    (fate,) = json.loads(exp.stdout).values()
    last = fate[-1]
    assert last["name"] == "dedup_substring" and last["signals"]["spans_removed"] >= 1
    assert passage[:100] in last["signals"]["removed_spans"][0]["text"]


# -- anchors: only the windows whose anchor is in two shards are shuffled ------------------------
W = DedupSubstring.Params().anchor_windows
#: lengths of the planted spans, in tokens: every length around K and K + w, and longer ones
SPAN_LENGTHS = [*range(K, K + W + 4), K + 20, 2 * K + 7, 150]


def test_anchor_is_the_smallest_sub_window_hash():
    """Against the definition written out: per window start, the minimum over its w sub-windows
    of k0 = K - w + 1 tokens of sum th[t_i] B^i mod 2^64, on a sequence of three documents."""
    rng = np.random.default_rng(3)
    th = rng.integers(0, 2**64 - 1, 30, dtype=np.uint64, endpoint=True)
    docs = [rng.integers(1, 30, n) for n in (17, 9, 25)]
    seq = np.concatenate([np.append(d, 0) for d in docs]).astype(np.uint32)  # 0: separator
    modulus = 2**64

    def sub_hash(tokens) -> int:
        return sum(int(th[t]) * pow(_ANCHOR_BASE, i, modulus) for i, t in enumerate(tokens))

    for k, w in [(6, 3), (6, 1), (6, 6), (6, 10), (8, 4), (5, 2)]:
        got = anchor_hashes(th, seq, k, w)
        ww = min(w, k)
        k0 = k - ww + 1
        start = 0
        for d in docs:
            for s in range(start, start + d.size - k + 1):  # the document's K-windows
                want = min(sub_hash(seq[s + j : s + j + k0]) % modulus for j in range(ww))
                assert int(got[s]) == want, (k, w, s)
            start += d.size + 1


def test_equal_windows_have_equal_anchors_in_any_shard():
    rng = random.Random(5)
    text = " ".join(f"w{rng.randrange(1000)}" for _ in range(400))
    a = index_shard([text, "x " * 60], ["a", "b"], K, anchor_windows=W)
    b = index_shard(["y " * 70, text[1000:]], ["c", "d"], K, anchor_windows=W)
    anchor_a = {(h1, h2): x for h1, h2, x in zip(a["h1"], a["h2"], a["anchor"], strict=True)}
    shared = [
        (anchor_a[h1, h2], x)
        for h1, h2, x in zip(b["h1"], b["h2"], b["anchor"], strict=True)
        if (h1, h2) in anchor_a
    ]
    assert len(shared) > 100
    assert all(x == y for x, y in shared)
    # consecutive windows share their anchor: about 2 / (w + 1) distinct anchors per window
    assert np.unique(a["anchor"]).size < 0.4 * a["anchor"].size


def spans_corpus(seed: int = 7) -> tuple[list[tuple[str, str]], list[tuple[str, list[str]]]]:
    """300 real documents; spans of every length in SPAN_LENGTHS (from a document left out) each
    planted at a random token offset of 3 documents far apart (other shards and parts)."""
    rng = random.Random(seed)
    docs = real_docs()
    source = next(t for _, t in docs[300:] if len(tokenize(t)) >= 2000)
    src = tokenize(source)
    corpus = dict(docs[:300])
    ids = sorted(i for i, t in corpus.items() if len(tokenize(t)) >= 100)
    hosts = rng.sample(ids, 3 * len(SPAN_LENGTHS))
    planted, at = [], 0
    for n, length in enumerate(SPAN_LENGTHS):
        span = " ".join(src[at : at + length])
        at += length + 5
        mine = sorted(hosts[3 * n : 3 * n + 3])
        for doc_id in mine:
            text = corpus[doc_id]
            starts = [m.start() for m in _TOKEN.finditer(text)][1:]
            cut = rng.choice([s for s in starts if text[s - 1].isspace()])
            corpus[doc_id] = f"{text[:cut]}{span} {text[cut:]}"
        planted.append((span, mine))
    return list(corpus.items()), planted


@pytest.fixture(scope="module")
def spans():
    return spans_corpus()


def _sorted_log(log: pa.Table) -> list[dict]:
    return sorted(log.to_pylist(), key=lambda r: r["id"])


def test_anchors_find_every_copied_span_exactly(tmp_path, spans):
    docs, planted = spans
    runs = {
        w: run_stage(tmp_path / str(w), docs, 3, 2, shard_bytes=30_000, anchor_windows=w)
        for w in (W, 1)
    }
    (anchored, got, log), (every, got_1, log_1) = runs[W], runs[1]
    assert got == got_1 == expected(docs)
    assert _sorted_log(log) == _sorted_log(log_1)
    for span, hosts in planted:
        assert [h for h in hosts if span in got.get(h, "")] == [hosts[0]], len(tokenize(span))
    assert anchored.counters["shards"] > 20
    assert anchored.counters["cross_shard_windows"] == every.counters["cross_shard_windows"] > 0
    # w = 1: each window its own anchor, so every window is shuffled twice (anchor, window)
    assert every.counters["anchors"] == every.counters["windows"] == anchored.counters["windows"]
    # measured at w = 16: 0.12 distinct anchors per window, 0.14x the bytes shuffled of w = 1
    assert anchored.counters["anchors"] < 0.2 * anchored.counters["windows"]
    assert anchored.counters["shuffled_bytes"] < 0.25 * every.counters["shuffled_bytes"]
    for stats in (anchored, every):
        c = stats.counters
        assert c["shuffled_bytes"] == 16 * c["anchors"] + 24 * c["candidate_windows"]
        assert c["cross_shard_windows"] <= c["candidate_windows"]


def test_anchors_by_language_compare_within_a_language_only(tmp_path, spans):
    docs, planted = spans
    # the three copies of each span: the first two in one language, the third in another
    languages = {i: "eng_Latn" for i, _ in docs}
    for _, hosts in planted:
        languages[hosts[2]] = "fra_Latn"
    got = {}
    for w in (W, 1):
        _, got[w], log = run_stage(
            tmp_path / str(w),
            docs,
            3,
            2,
            languages=languages,
            shard_bytes=30_000,
            anchor_windows=w,
            by="language",
        )
        got[w] = (got[w], _sorted_log(log))
    assert got[W] == got[1]
    kept = got[W][0]
    for span, hosts in planted:
        assert [h for h in hosts if span in kept.get(h, "")] == [hosts[0], hosts[2]]
