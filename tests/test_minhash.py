"""dedup_minhash: signatures match datasketch, planted near-duplicates of real pages collapse to
one survivor each, survivors do not depend on partitioning, chains become one cluster.

Ground truth is computed here, independently of the stage: true Jaccard similarity of word
5-gram sets over a plain-Python normalisation (not the stage's Arrow/NumPy code)."""

from __future__ import annotations

import gzip
import itertools
import json
import random
import re
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import require_shared_data

from refine.dedup.minhash import DedupMinhash, DedupMinhashParams, components_labels
from refine.dedup.signatures import MinHasher, shingle_hashes32
from refine.pipeline.stage import GlobalContext

# -- ground truth ----------------------------------------------------------------------------


def _simple_words(text: str) -> list[str]:
    text = "".join(
        c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn"
    ).lower()
    text = re.sub(r"\d+([.,]\d+)?", "0", text)
    text = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in text)
    return text.split()


def _grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = _simple_words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def _jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


# -- corpora ---------------------------------------------------------------------------------


def _real_texts(min_words: int = 150) -> list[str]:
    data = require_shared_data()
    path = data / "text" / "cc-main-2019-30-en.jsonl.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return [t for t in texts if len(t.split()) >= min_words]


def _distinct(texts: list[str]) -> list[str]:
    """The sample's own near-duplicates removed (it has some: the same page crawled twice), so
    that planted families are the only near-duplicates: no two sources reach Jaccard 0.5."""
    sim = _all_pair_jaccard([_grams(t) for t in texts])
    out, taken = [], set()
    for k, t in enumerate(texts):
        if any(sim.get((i, k), 0.0) >= 0.5 for i in taken):
            continue
        taken.add(k)
        out.append(t)
    return out


def _edit_words(text: str, fraction: float, rng: random.Random) -> str:
    """Replace ``fraction`` of the words with random made-up words (1-5 % edits)."""
    words = text.split(" ")
    for i in rng.sample(range(len(words)), max(1, int(len(words) * fraction))):
        words[i] = _word(rng)
    return " ".join(words)


def _write_parts(tmp: Path, docs: list[tuple[str, str]], n_parts: int) -> Path:
    """The documents as ``n_parts`` Parquet parts, the shape of a refine checkpoint."""
    folder = tmp / f"in-{n_parts}"
    folder.mkdir(parents=True)
    bounds = np.linspace(0, len(docs), n_parts + 1).astype(int)
    for k in range(n_parts):
        chunk = docs[bounds[k] : bounds[k + 1]]
        pq.write_table(
            pa.table(
                {
                    "id": pa.array([d[0] for d in chunk], pa.string()),
                    "url": pa.array([f"http://x.example/{d[0]}" for d in chunk], pa.string()),
                    "text": pa.array([d[1] for d in chunk], pa.large_string()),
                }
            ),
            folder / f"part-{k:05d}.parquet",
        )
    return folder


def _run(tmp: Path, docs, n_parts: int, workers: int, **params):
    inp = _write_parts(tmp, docs, n_parts)
    out = tmp / f"out-{n_parts}-{workers}"
    ctx_dirs = dict(
        input_dir=str(inp),
        output_dir=str(out / "documents"),
        log_dir=str(out / "log"),
        work_dir=str(out / "work"),
    )
    stage = DedupMinhash(DedupMinhashParams(**params))
    with Client(
        processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
    ) as client:
        stats = stage.run(GlobalContext(client=client, **ctx_dirs))
    stats.check_balance()
    kept = pq.read_table(out / "documents")["id"].to_pylist()
    log = pq.read_table(out / "log")
    return stats, set(kept), log


def _planted(rng: random.Random, n_sources: int):
    """Real pages, each with 1-4 variants (1-5 % of words edited) and sometimes an exact copy;
    ids shuffled so survivors are not simply the originals."""
    texts = _distinct(_real_texts())[:n_sources]
    docs, family = [], {}
    for s, text in enumerate(texts):
        members = [text]
        for _ in range(rng.randint(1, 4)):
            members.append(_edit_words(text, rng.uniform(0.01, 0.05), rng))
        if rng.random() < 0.5:
            members.append(text)
        for m in members:
            doc_id = f"<urn:uuid:{rng.getrandbits(64):016x}>"
            docs.append((doc_id, m))
            family[doc_id] = s
    rng.shuffle(docs)
    return docs, family


# -- tests -------------------------------------------------------------------------------------


def test_signatures_equal_datasketch():
    """Our batched signature of a document is datasketch's MinHash of the same shingles."""
    from datasketch import MinHash

    texts = [
        "The quick brown fox jumps over the lazy dog again and again, said Zoë in 2024.",
        "short text",
        "",
        None,
        " ".join(f"w{i}" for i in range(3000)),
    ]
    hasher = MinHasher(112, seed=7, ngram=5)
    sig, sh = hasher.signatures(pa.array(texts, pa.large_string()))
    assert list(sh.counts[:4]) == [12, 0, 0, 0] and sh.counts[4] == 2996
    h32 = shingle_hashes32(sh.hashes)
    start = np.r_[0, np.cumsum(sh.counts)]
    for i in range(len(texts)):
        m = MinHash(num_perm=112, seed=7, hashfunc=lambda x: x)
        m.update_batch(h32[start[i] : start[i + 1]].tolist())
        assert np.array_equal(m.hashvalues, sig[i]), i
    # same shingles whatever the batch: signatures do not depend on batching
    sig2, _ = hasher.signatures(pa.array(texts[:1]))
    assert np.array_equal(sig2[0], sig[0])


@pytest.mark.parametrize("keep", ["smallest_id", "first"])
def test_node_names_split_back_the_same_in_pandas_and_arrow(keep):
    """Both paths read (id, part, row) back from a node name alike, whatever the id holds, and
    names sort by the survivor rule: by id, or by (part, row) however long the ids are."""
    from refine.dedup.minhash import _split_node, _split_node_arrow, node_names

    ids = pa.array(["<urn:uuid:1>", "", None, "a\x00b", "x\x00\x00y", "é€😀"])
    names = node_names(ids, "00003-web.warc.gz", keep)
    want = (
        ["<urn:uuid:1>", "", "", "a\x00b", "x\x00\x00y", "é€😀"],
        ["00003-web.warc.gz"] * 6,
        list(range(6)),
    )
    got_arrow = tuple(col.to_pylist() for col in _split_node_arrow(names, keep))
    got_pandas = tuple(col.tolist() for col in _split_node(names.to_pandas(), keep))
    assert got_arrow == want and got_pandas == want
    ids = pa.array(["z" * 30, "b", "a\x00", "zz"] * 3)
    names = node_names(ids, "00001-0000", keep).to_pylist()
    names += node_names(ids, "00000-0001", keep).to_pylist()
    order = sorted(range(len(names)), key=names.__getitem__)
    if keep == "first":  # part "00000-0001" first, then row by row (12 rows: 10 sorts as 10)
        assert order == list(range(12, 24)) + list(range(12))
    else:
        assert [ids[k % 12].as_py() for k in order[:6]] == ["a\x00"] * 6


@pytest.mark.parametrize("seed", [0, 1, 7, 42, 12345, 2**31 - 1])
def test_permutations_equal_datasketch(seed):
    """The (a, b) drawn without importing datasketch are datasketch's, for any size and seed."""
    from datasketch import MinHash

    from refine.dedup.signatures import affine32_permutations

    for num_perm in (1, 14, 112, 128, 256):
        a, b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        ours = affine32_permutations(num_perm, seed)
        assert ours[0].dtype == a.dtype == np.uint32
        assert np.array_equal(ours[0], a) and np.array_equal(ours[1], b), num_perm
        assert (ours[0] % 2 == 1).all()  # odd multipliers: a bijection mod 2**32


def test_normalisation_ignores_case_punctuation_numbers_and_accents():
    hasher = MinHasher(112, seed=1, ngram=5)
    sig, _ = hasher.signatures(
        pa.array(
            [
                "Café au lait, costs 3.50 EUR -- today at the corner shop!",
                "cafe AU LAIT costs 7,25 eur today at the   corner shop",
            ]
        )
    )
    assert np.array_equal(sig[0], sig[1])


def _all_pair_jaccard(sets: list[set]) -> dict[tuple[int, int], float]:
    """Exact Jaccard of every pair of documents sharing at least one shingle (all other pairs
    have Jaccard 0), through an inverted index: exhaustive without comparing all pairs."""
    index: dict[tuple, list[int]] = {}
    for i, s in enumerate(sets):
        for g in s:
            index.setdefault(g, []).append(i)
    shared: Counter = Counter()
    for docs in index.values():
        for i, j in itertools.combinations(docs, 2):
            shared[i, j] += 1
    return {(i, j): n / (len(sets[i]) + len(sets[j]) - n) for (i, j), n in shared.items()}


def _components(n: int, pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Ground-truth clusters (the test's own union-find over a few hundred documents)."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return list(groups.values())


def test_planted_near_duplicates_of_real_pages(tmp_path):
    rng = random.Random(5)
    docs, family = _planted(rng, n_sources=400)
    ids = [d for d, _ in docs]
    sets = [_grams(t) for _, t in docs]
    sim = _all_pair_jaccard(sets)
    stats, kept, log = _run(tmp_path, docs, n_parts=3, workers=2)
    dup_of = {r["id"]: r["duplicate_of"] for r in log.to_pylist() if not r["kept"]}
    survivor = [dup_of.get(d, d) for d in ids]

    # recall: a cluster of documents linked by true Jaccard >= 0.85 keeps exactly one member,
    # i.e. all its members end with the same survivor
    clusters = [c for c in _components(len(ids), [p for p, j in sim.items() if j >= 0.85])]
    clusters = [c for c in clusters if len(c) > 1]
    one_left = sum(len({survivor[i] for i in c}) == 1 for c in clusters)
    recall = one_left / len(clusters)
    # precision: of all pairs with true Jaccard < 0.5, the share that were merged
    n_pairs = len(ids) * (len(ids) - 1) // 2
    low_pairs = n_pairs - sum(j >= 0.5 for j in sim.values())
    merged = [
        (i, j) for i, j in itertools.combinations(range(len(ids)), 2) if survivor[i] == survivor[j]
    ]
    low_merged = sum(sim.get(p, 0.0) < 0.5 for p in merged)
    print(
        f"docs={len(ids)} gt_clusters={len(clusters)} recall={recall:.4f} "
        f"merged_pairs={len(merged)} low_pairs={low_pairs} low_merged={low_merged} "
        f"({low_merged / low_pairs:.6f} of low pairs, {low_merged / max(1, len(merged)):.4f} of "
        f"merged pairs) counters={dict(stats.counters)}"
    )
    assert len(clusters) >= 100
    assert recall >= 0.95
    assert low_merged <= 0.01 * low_pairs
    # every merge stays within a planted family (sources are distinct pages)
    for d, s in dup_of.items():
        assert s in kept and family[s] == family[d]
    assert stats.dropped["near_duplicate"] == len(docs) - len(kept)
    assert stats.counters["bytes_removed"] == stats.bytes_in - stats.bytes_out > 0
    sizes = {r["id"]: r["minhash_cluster"] for r in log.to_pylist()}
    for d, s in dup_of.items():
        assert sizes[d] == sizes[s] >= 2
    assert stats.counters["clusters"] == len({s for s in dup_of.values()})


def test_survivors_do_not_depend_on_partitions_workers_or_path(tmp_path):
    """The same kept set and the same ``duplicate_of`` and cluster sizes with 1, 2 and 4
    parts and workers, on the one-task path (small data, the default) and on the shuffles."""
    rng = random.Random(11)
    docs, _ = _planted(rng, n_sources=40)
    results = []
    runs = [(1, 1, None), (2, 2, None), (4, 4, None), (1, 1, 0), (4, 2, 0)]
    for n_parts, workers, single in runs:
        params = {} if single is None else {"single_task_rows": single}
        stats, kept, log = _run(tmp_path / f"{single}", docs, n_parts, workers, **params)
        assert stats.counters["cc_one_task"] == (single is None)
        dup = sorted(
            (r["id"], r["duplicate_of"], r["minhash_cluster"])
            for r in log.to_pylist()
            if not r["kept"]
        )
        results.append((sorted(kept), dup, stats.counters["candidate_pairs"]))
    assert all(r == results[0] for r in results)
    assert len(results[0][0]) < len(docs)


def _word(rng: random.Random) -> str:
    """A made-up word of letters (digits would all normalise to 0)."""
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))


def _chain(rng: random.Random, length: int, block: int = 60) -> list[str]:
    """Document k is blocks k and k+1 of made-up words: neighbours share a block (Jaccard
    about 1/3), documents further apart share no shingle at all (Jaccard 0)."""
    blocks = [[_word(rng) for _ in range(block)] for _ in range(length + 1)]
    return [" ".join(blocks[k] + blocks[k + 1]) for k in range(length)]


def _reading_order(docs, n_parts: int) -> dict[str, tuple[int, int]]:
    """(part, row) of each id as ``_write_parts`` lays the documents out."""
    bounds = np.linspace(0, len(docs), n_parts + 1).astype(int)
    return {
        docs[i][0]: (k, i - bounds[k])
        for k in range(n_parts)
        for i in range(bounds[k], bounds[k + 1])
    }


def test_keep_first_keeps_each_clusters_first_document_in_reading_order(tmp_path):
    """``keep: first``: the same clusters as ``smallest_id``, and the survivor of each is its
    member read first (part by part, row by row), on both paths and whatever the partitioning
    (the reading order is the same documents in the same order, cut into 1, 2 or 4 parts)."""
    rng = random.Random(11)
    docs, _ = _planted(rng, n_sources=40)
    _, kept_small, log_small = _run(tmp_path / "small", docs, 2, 2)
    clusters: dict[str, set[str]] = {}
    for r in log_small.to_pylist():
        if not r["kept"]:
            clusters.setdefault(r["duplicate_of"], {r["duplicate_of"]}).add(r["id"])
    assert len(clusters) >= 10
    position = {d: i for i, (d, _) in enumerate(docs)}
    # the test is only worth something if the first member is often not the smallest id
    first_of = {s: min(members, key=position.__getitem__) for s, members in clusters.items()}
    assert sum(f != s for s, f in first_of.items()) >= len(clusters) // 3
    want = {m: first_of[s] for s, members in clusters.items() for m in members if m != first_of[s]}
    for n_parts, workers, single in [(1, 1, None), (4, 2, None), (2, 2, 0), (4, 4, 0)]:
        params = {"keep": "first"}
        if single is not None:
            params["single_task_rows"] = single
        stats, kept, log = _run(tmp_path / f"first-{single}", docs, n_parts, workers, **params)
        got = {r["id"]: r["duplicate_of"] for r in log.to_pylist() if not r["kept"]}
        assert got == want, (n_parts, workers, single)
        assert len(kept) == len(kept_small) and stats.counters["clusters"] == len(clusters)
        where = _reading_order(docs, n_parts)
        assert all(where[s] < where[d] for d, s in got.items())


@pytest.mark.parametrize("keep", ["smallest_id", "first"])
@pytest.mark.parametrize("single_task_rows", [None, 0])
def test_chain_becomes_one_cluster(tmp_path, single_task_rows, keep):
    """a~b~c~d~e~f, each similar only to its neighbours, the smallest id at one end and the
    first read at the other: the label must travel five hops, so propagation needs several
    rounds, and converges (on the shuffle path, ``single_task_rows=0``; the one-task
    union-find has no rounds)."""
    rng = random.Random(3)
    texts = _chain(rng, 6)
    grams = [_grams(t) for t in texts]
    assert all(0.25 < _jaccard(grams[i], grams[i + 1]) < 0.5 for i in range(5))
    assert all(_jaccard(grams[i], grams[j]) == 0 for i in range(6) for j in range(i + 2, 6))
    ids = [f"doc-{c}" for c in "fedcba"]
    docs = list(zip(ids, texts, strict=True))
    noise = [(f"noise-{i:02d}", _chain(rng, 1)[0]) for i in range(20)]
    # 32 one-row bands: any pair sharing a third of its shingles is a candidate
    params = dict(num_bands=32, rows_per_band=1, max_iterations=20, keep=keep)
    if single_task_rows is not None:
        params["single_task_rows"] = single_task_rows
    stats, kept, log = _run(tmp_path, docs + noise, 3, 2, **params)
    survivor = "doc-a" if keep == "smallest_id" else "doc-f"
    assert survivor in kept and not (set(ids) - {survivor}) & kept
    assert all(f"noise-{i:02d}" in kept for i in range(20))
    dup_of = {r["id"]: r["duplicate_of"] for r in log.to_pylist() if not r["kept"]}
    assert set(dup_of.values()) == {survivor}
    sizes = {r["id"]: r["minhash_cluster"] for r in log.to_pylist()}
    assert all(sizes[i] == 6 for i in ids) and sizes["noise-00"] == 1
    assert stats.counters["candidate_pairs"] == 5  # only neighbours
    assert stats.counters["cc_converged"] == 1 and stats.counters["cc_nodes"] == 6
    if single_task_rows == 0:
        assert stats.counters["cc_iterations"] >= 1 and not stats.counters["cc_one_task"]
    else:
        assert stats.counters["cc_iterations"] == 0 and stats.counters["cc_one_task"] == 1
    assert stats.counters["clusters"] == 1


def test_max_iterations_guard_keeps_a_long_chain_split(tmp_path):
    rng = random.Random(4)
    texts = _chain(rng, 10)
    docs = [(f"doc-{9 - i}", t) for i, t in enumerate(texts)]
    params = dict(num_bands=32, rows_per_band=1, max_iterations=1)
    # the one-task union-find has no rounds: the chain becomes one cluster whatever the guard
    _, kept, _ = _run(tmp_path / "one", docs, 2, 1, **params)
    assert kept == {"doc-0"}
    stats, kept, log = _run(tmp_path / "shuffles", docs, 2, 1, single_task_rows=0, **params)
    assert stats.counters["cc_converged"] == 0 and stats.counters["cc_iterations"] == 1
    # not converged: more survivors, never fewer; every removed document names a survivor
    assert 1 < len(kept) < 10
    dup_of = {r["id"]: r["duplicate_of"] for r in log.to_pylist() if not r["kept"]}
    assert set(dup_of.values()) <= kept


def test_jaccard_verification_rejects_weak_candidates(tmp_path):
    rng = random.Random(8)
    base = [_word(rng) for _ in range(400)]
    docs = [("a", " ".join(base))]
    close = base[:]
    close[10] = _word(rng)
    docs.append(("b", " ".join(close)))  # Jaccard ~0.98
    weaker = base[:]
    for i in range(0, 400, 6):
        weaker[i] = _word(rng)
    docs.append(("c", " ".join(weaker)))  # Jaccard ~0.2 but shares many 2-row bands
    params = dict(num_bands=64, rows_per_band=1)
    _, kept_plain, _ = _run(tmp_path / "plain", docs, 2, 1, **params)
    stats, kept, _ = _run(
        tmp_path / "verified", docs, 2, 1, verify_jaccard=True, jaccard_threshold=0.8, **params
    )
    assert kept_plain == {"a"}  # 1-row bands: every shared shingle-minimum is a candidate
    assert kept == {"a", "c"}
    assert stats.counters["pairs_rejected_by_jaccard"] >= 1


def test_empty_and_short_documents(tmp_path):
    docs = [("a", ""), ("b", "two words"), ("c", "two words")]
    stats, kept, log = _run(tmp_path, docs, 2, 1)
    assert kept == {"a", "b", "c"}
    assert stats.counters["no_signature"] == 3 and stats.counters["candidate_pairs"] == 0
    assert log.column("minhash_cluster").to_pylist() == [1, 1, 1]


@pytest.mark.parametrize("npartitions", [1, 3, 7])
def test_connected_components_equal_union_find_at_any_partition_count(tmp_path, npartitions):
    """The stage sizes its component shuffles by the edge count (EDGES_PER_PARTITION), so small
    test corpora run them in one partition: the multi-partition path is checked here directly."""
    from refine.dedup.components import connected_components

    rng = random.Random(7)
    nodes = [f"doc-{i:04d}" for i in range(400)]
    edges = []
    for _ in range(60):  # chains and stars, some long enough to need several rounds
        members = rng.sample(nodes, rng.randint(2, 12))
        if rng.random() < 0.5:
            edges += list(itertools.pairwise(members))
        else:
            edges += [(members[0], m) for m in members[1:]]
    edges_dir = tmp_path / "edges"
    edges_dir.mkdir()
    for i in range(3):
        chunk = edges[i::3]
        table = pa.table({"a": [a for a, _ in chunk], "b": [b for _, b in chunk]})
        pq.write_table(table, edges_dir / f"part-{i}.parquet")
    parent = {n: n for e in edges for n in e}

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for n in parent:
        groups.setdefault(find(n), []).append(n)
    truth = {n: min(members) for members in groups.values() for n in members}

    labels_dir, result = connected_components(edges_dir, tmp_path / "cc", npartitions, 50)
    got = pq.read_table(labels_dir).to_pydict()
    assert result.converged and result.nodes == len(truth)
    assert dict(zip(got["node"], got["label"], strict=True)) == truth
    # the one-task path's union-find gives the same labels
    a, b = zip(*edges, strict=True)
    nodes, labels = components_labels(pa.array(a), pa.array(b))
    assert dict(zip(nodes.to_pylist(), labels.to_pylist(), strict=True)) == truth


def test_one_task_components_order_names_by_code_point():
    """The smallest name is by code point (as pandas' ``min`` on the shuffle path), also for
    non-ASCII ids and ids that are prefixes of others."""
    a = pa.array(["é-doc", "b", "ab", "z", "\u4e2d", "x"])
    b = pa.array(["a", "ab", "abc", "\u4e2d", "\U0001f600", "y"])
    nodes, labels = components_labels(a, b)
    got = dict(zip(nodes.to_pylist(), labels.to_pylist(), strict=True))
    assert got["é-doc"] == "a" and got["b"] == "ab" == got["abc"]
    assert got["\U0001f600"] == "z" == got["\u4e2d"]
    assert got["y"] == "x"


@pytest.mark.parametrize("keep", ["smallest_id", "first"])
def test_a_giant_component_never_lands_in_one_task(tmp_path, monkeypatch, keep):
    """Flags of a 50,000-member component: its size comes from a lookup sent to every task, so
    no task holds its members together; small components are joined by label. The flags equal
    the plain per-component computation."""
    from refine.dedup import minhash as M

    seen: list[int] = []
    real = M._flag_rows

    def spy(df, keep):
        seen.append(len(df))
        return real(df, keep)

    monkeypatch.setattr(M, "_flag_rows", spy)
    rng = random.Random(3)
    files, truth = [], {}
    for f in range(10):  # 10 label files (as connected components writes them)
        part = f"p{f:02d}"
        ids = [f"g{f}-{i:05d}" for i in range(5_000)] + [f"s{f}-{i:04d}" for i in range(600)]
        names = M.node_names(pa.array(ids), part, keep).to_pylist()
        files.append((ids, names))
    giant_label = min(n for _, names in files for n in names[:5_000])
    nodes, labels = [], []
    small: dict[str, list[str]] = {}
    for _, names in files:
        nodes += names
        labels += [giant_label] * 5_000
        for name in names[5_000:]:  # components of 2-5 members, across files
            small.setdefault(f"c{rng.randrange(1_500)}", []).append(name)
    label_of = {n: min(members) for members in small.values() for n in members}
    labels += [label_of[n] for _, names in files for n in names[5_000:]]
    sizes = Counter(labels)
    labels_dir = tmp_path / "labels"
    labels_dir.mkdir()
    for f in range(10):
        rows = slice(f * 5_600, (f + 1) * 5_600)
        table = pa.table({"node": nodes[rows], "label": labels[rows]})
        pq.write_table(table, labels_dir / f"part-{f}.parquet")
    for node, label in zip(nodes, labels, strict=True):
        _, part, row = (x[0] for x in M._split_node_arrow(pa.array([node]), keep))
        survivor = M._split_node_arrow(pa.array([label]), keep)[0][0]
        truth[(part.as_py(), row.as_py())] = (survivor.as_py(), sizes[label], node == label)

    M._cluster_flags(labels_dir, tmp_path / "flags", 4, keep, big=1_000)
    got = pq.read_table(tmp_path / "flags").to_pydict()
    flags = {
        (str(p), r): (s, n, k)
        for p, r, s, n, k in zip(
            got["part"], got["row"], got["survivor"], got["size"], got["is_survivor"], strict=True
        )
    }
    assert flags == truth
    assert seen and max(seen) <= 6_000 < 50_000  # an input partition, or small components
