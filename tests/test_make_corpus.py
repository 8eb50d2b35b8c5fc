"""scripts/make_corpus.py: a 3,000-document corpus made from the real text sample, checked against
its own truth: the layout refine reads, determinism, length, and that every planted kind is what
the truth says (exact copies, near-duplicates near, chain ends far, boilerplate and passages where
recorded, and no near-duplicates that were not planted: exact 5-gram Jaccard over all pairs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from support import REPO, require_shared_data

from refine.extract.stages import ReadParams, ReadWarc

DOCS = 3000
ARGS = ["--docs", str(DOCS), "--seed", "7", "--shard-docs", "1000", "--row-group-docs", "400"]
_WORDS = re.compile(r"\w+")


def make(out: Path, *args: str) -> subprocess.CompletedProcess:
    data = require_shared_data()
    cmd = [sys.executable, str(REPO / "scripts" / "make_corpus.py"), "--data", str(data)]
    return subprocess.run(
        [*cmd, "--out", str(out), *args], capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("corpus")
    proc = make(out, *ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    docs = pq.read_table(sorted(out.glob("shard-*.parquet")))
    truth = feather.read_table(out / "_truth.arrow").to_pylist()
    summary = json.loads((out / "_truth.json").read_text())
    return {
        "out": out,
        "docs": docs,
        "texts": docs["text"].to_pylist(),
        "truth": truth,
        "summary": summary,
    }


def shingles(text: str, n: int = 5) -> set[int]:
    w = _WORDS.findall(text.lower())
    return {hash(tuple(w[i : i + n])) for i in range(len(w) - n + 1)}


def jaccard(a: str, b: str) -> float:
    x, y = shingles(a), shingles(b)
    return len(x & y) / len(x | y)


def groups(truth: list[dict], kind: str) -> dict[int, list[dict]]:
    """Rows of each group of ``kind``, by member."""
    out: dict[int, list[dict]] = {}
    for row in truth:
        if row["kind"] == kind:
            out.setdefault(row["group"], []).append(row)
    return {g: sorted(rows, key=lambda r: r["member"]) for g, rows in out.items()}


def test_layout_and_columns(corpus):
    out = corpus["out"]
    assert sorted(p.name for p in out.iterdir()) == [
        "_truth.arrow",
        "_truth.json",
        "shard-00000.parquet",
        "shard-00001.parquet",
        "shard-00002.parquet",
    ]
    for path in sorted(out.glob("shard-*.parquet")):
        meta = pq.ParquetFile(path).metadata
        assert meta.num_rows == 1000
        assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [400, 400, 200]
    docs = corpus["docs"]
    assert docs.schema.names == ["text", "id", "dump", "url", "date"]
    assert {str(t) for t in docs.schema.types} == {"string"}
    assert docs.num_rows == DOCS
    assert len(set(docs["id"].to_pylist())) == DOCS
    assert len(set(docs["url"].to_pylist())) == DOCS
    assert all(u.startswith("https://") for u in docs["url"].to_pylist())
    for date in docs["date"].to_pylist()[:50]:
        assert date.endswith("Z") and datetime.fromisoformat(date).year >= 2019
    assert set(docs["dump"].to_pylist()) <= {
        f"CC-MAIN-{y}" for y in ("2019-30", "2020-34", "2021-43", "2022-49", "2023-50", "2024-10")
    }
    # pyarrow's dataset discovery skips the _truth files: the folder reads as the corpus
    assert pq.read_table(out).num_rows == DOCS


def test_realistic_length(corpus):
    sizes = np.array([len(t.encode()) for t in corpus["texts"]])
    assert sizes.mean() >= 2048
    assert corpus["summary"]["mean_text_bytes"] == pytest.approx(sizes.mean(), abs=0.1)
    assert np.median(sizes) >= 1500 and sizes.min() >= 100  # no stubs, a long tail
    assert (sizes > 8000).any()


def test_same_args_same_bytes_and_layout_does_not_change_documents(corpus, tmp_path):
    again = make(tmp_path / "again", *ARGS)
    assert again.returncode == 0, again.stderr[-3000:]
    for path in corpus["out"].iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    other = make(tmp_path / "one", *ARGS[:4], "--shard-docs", "5000", "--compression", "snappy")
    assert other.returncode == 0, other.stderr[-3000:]
    one = pq.read_table(tmp_path / "one" / "shard-00000.parquet")
    assert one["text"].to_pylist() == corpus["texts"]
    assert one["id"].to_pylist() == corpus["docs"]["id"].to_pylist()
    seed = make(tmp_path / "seed", "--docs", "100", "--seed", "8")
    assert seed.returncode == 0, seed.stderr[-3000:]
    texts = pq.read_table(tmp_path / "seed" / "shard-00000.parquet")["text"].to_pylist()
    assert texts != corpus["texts"][:100]


def test_truth_covers_every_document(corpus):
    truth, summary = corpus["truth"], corpus["summary"]
    assert [r["id"] for r in truth] == corpus["docs"]["id"].to_pylist()
    assert [r["position"] for r in truth] == list(range(DOCS))
    assert [r["shard"] for r in truth] == [p // 1000 for p in range(DOCS)]
    kinds = summary["kinds"]
    assert sum(k["docs"] for k in kinds.values()) == DOCS
    for kind, name in (("exact_dup", "groups"), ("near_dup", "clusters"), ("chain", "chains")):
        by_group = groups(truth, kind)
        assert len(by_group) == kinds[kind][name] > 0
        assert sum(len(rows) for rows in by_group.values()) == kinds[kind]["docs"]
        for rows in by_group.values():
            assert [r["member"] for r in rows] == list(range(len(rows)))
            assert {r["group_size"] for r in rows} == {len(rows)} and len(rows) >= 2
            positions = [r["position"] for r in rows]
            assert positions == sorted(positions)  # member 0 comes first in the corpus
    unique = [r for r in truth if r["kind"] == "unique"]
    assert len(unique) == kinds["unique"]["docs"]
    assert all(r["group"] == -1 and r["group_size"] == 1 for r in unique)
    assert len(groups(truth, "near_dup")[0]) == summary["kinds"]["near_dup"]["giant_size"] == 30
    keeps = summary["perfect_dedup_keeps"]
    exact_extra = sum(len(g) - 1 for g in groups(truth, "exact_dup").values())
    assert keeps["exact"] == DOCS - exact_extra


def test_exact_duplicates_are_the_same_text_and_only_theirs(corpus):
    texts, truth = corpus["texts"], corpus["truth"]
    owner: dict[str, set] = {}
    for row, text in zip(truth, texts, strict=True):
        owner.setdefault(text, set()).add((row["kind"], row["group"]))
    for g, rows in groups(truth, "exact_dup").items():
        assert len({texts[r["position"]] for r in rows}) == 1
        assert owner[texts[rows[0]["position"]]] == {("exact_dup", g)}
        assert len({r["id"] for r in rows}) == len(rows)
    assert sum(len(v) for v in owner.values()) == len(owner)  # no other text occurs twice
    assert len(owner) == DOCS - sum(len(g) - 1 for g in groups(truth, "exact_dup").values())


def test_near_duplicates_are_near_their_original(corpus):
    texts = corpus["texts"]
    scores, edits = [], []
    for rows in groups(corpus["truth"], "near_dup").values():
        first = texts[rows[0]["position"]]
        assert rows[0]["edit_frac"] == 0
        for r in rows[1:]:
            scores.append(jaccard(first, texts[r["position"]]))
            edits.append(r["edit_frac"])
    scores, edits = np.array(scores), np.array(edits)
    assert edits.min() >= 0.01 and edits.max() <= 0.06
    assert scores.min() >= 0.75, np.sort(scores)[:5]
    assert np.median(scores) >= 0.88
    assert (scores >= 0.8).mean() >= 0.98


def test_chains_link_neighbours_but_not_ends(corpus):
    texts = corpus["texts"]
    chains = groups(corpus["truth"], "chain")
    for rows in chains.values():
        assert len(rows) >= 50
        steps = [
            jaccard(texts[a["position"]], texts[b["position"]])
            for a, b in zip(rows, rows[1:], strict=False)
        ]
        assert min(steps) >= 0.88 and np.median(steps) >= 0.93, steps
        assert jaccard(texts[rows[0]["position"]], texts[rows[-1]["position"]]) < 0.35
        assert all(0.003 <= r["edit_frac"] <= 0.015 for r in rows[1:])


def test_no_unplanned_near_duplicates(corpus):
    """Exact 5-gram Jaccard of every pair (a sparse product): every pair at 0.5 or more is two
    members of one planted group; documents of kind unique are far from every other."""
    texts, truth = corpus["texts"], corpus["truth"]
    sets = [np.fromiter(shingles(t), np.int64) for t in texts]
    cols, index = np.unique(np.concatenate(sets), return_inverse=True)
    rows = np.repeat(np.arange(len(sets)), [len(s) for s in sets])
    x = sp.csr_matrix((np.ones(len(rows), np.int32), (rows, index)), (len(sets), len(cols)))
    inter = sp.triu(x @ x.T, k=1).tocoo()
    size = np.array([len(s) for s in sets])
    jac = inter.data / (size[inter.row] + size[inter.col] - inter.data)
    label = [(r["kind"], r["group"]) if r["kind"] != "unique" else None for r in truth]
    close = jac >= 0.5
    for i, j in zip(inter.row[close].tolist(), inter.col[close].tolist(), strict=True):
        assert label[i] is not None and label[i] == label[j], (truth[i], truth[j])
    unique = np.array([lab is None for lab in label])
    either = unique[inter.row] | unique[inter.col]
    assert jac[either].max() < 0.3


def test_boilerplate_lines_are_where_the_truth_says(corpus):
    summary = corpus["summary"]
    lines = {b["text"]: b["id"] for b in summary["boilerplate"]}
    assert all(len(t) >= 20 for t in lines)
    counts = dict.fromkeys(lines.values(), 0)
    for row, text in zip(corpus["truth"], corpus["texts"], strict=True):
        found = sorted(lines[line] for line in text.split("\n") if line in lines)
        assert found == sorted(row["boilerplate"]), row
        for b in found:
            counts[b] += 1
    for kind in ("exact_dup", "near_dup", "chain"):  # a group shares its site's template
        for rows in groups(corpus["truth"], kind).values():
            assert all(r["boilerplate"] == rows[0]["boilerplate"] for r in rows)
    shares = {b["id"]: b["docs"] / DOCS for b in summary["boilerplate"]}
    assert counts == {b["id"]: b["docs"] for b in summary["boilerplate"]}
    assert min(shares.values()) < 0.005 and 0.07 < max(shares.values()) < 0.13


def test_passages_are_in_their_hosts_only(corpus):
    texts, truth = corpus["texts"], corpus["truth"]
    passages = corpus["summary"]["passages"]
    assert len(passages) >= 3
    for p in passages:
        assert 60 <= p["words"] <= 300 and len(p["text"].split()) == p["words"]
        hosts = [i for i, t in enumerate(texts) if p["text"] in t]
        assert len(hosts) == p["hosts"] >= 3
        assert all(truth[i]["passage"] == p["id"] and truth[i]["kind"] == "unique" for i in hosts)
        for i in hosts:  # the passage is a minority of its host
            assert len(texts[i].split()) >= 2 * p["words"]
    assert sum(r["passage"] >= 0 for r in truth) == sum(p["hosts"] for p in passages)


def test_refine_reads_the_folder_as_text_input(corpus):
    stage = ReadWarc(ReadParams())
    files = stage.resolve_inputs([str(corpus["out"])])
    assert [Path(f.url).name for f in files] == [f"shard-0000{i}.parquet" for i in range(3)]
    results = [stage.read(part) for part in stage.plan(files)]
    assert sum(r.stats.docs_in for r in results) == DOCS
    assert sum(r.stats.docs_out for r in results) == DOCS
    assert all(not r.stats.dropped for r in results)
    ids = [i for r in results for i in r.table["id"].to_pylist()]
    assert ids == corpus["docs"]["id"].to_pylist()
    assert all(r.table["date"].null_count == 0 for r in results)
    assert all("dump" in r.table.column_names for r in results)


def test_cli_says_what_is_wrong_in_one_line(corpus, tmp_path):
    again = make(corpus["out"], *ARGS)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1 and "--overwrite" in again.stderr
    cmd = [sys.executable, str(REPO / "scripts" / "make_corpus.py")]
    missing = subprocess.run(
        [*cmd, "--docs", "100", "--out", str(tmp_path / "x"), "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
    assert "cc-main-2019-30-en.jsonl.gz" in missing.stderr
