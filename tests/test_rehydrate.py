"""rehydrate: dedup_minhash records each survivor's cluster size, rehydrate repeats each survivor
exactly by FineWeb-2's weight for its language and cluster size, shuffle spreads the copies
apart, tokenize writes every copy, and the report counts the repeats.

Expected weights are read here from the JSON with plain Python (the largest key <= the cluster
size), not with the stage's NumPy lookup."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from support import require_shared_data

from refine.dedup.rehydrate import Rehydrate, RehydrateParams, load_weights, repeat_rows
from refine.errors import ConfigError
from refine.pipeline.config import PipelineConfig, build_stages
from refine.pipeline.runner import Runner
from refine.pipeline.stage import GlobalContext
from refine.tokenize import verify

#: made-up words (letters only: dedup_minhash's normalisation turns digits into 0)
VOCAB = ["".join(random.Random(i).choices("abcdefghijklmnopqrstuvwxyz", k=7)) for i in range(5000)]


def fineweb2_weights() -> tuple[Path, dict]:
    path = require_shared_data() / "fineweb2" / "rehydration_up_to_10_reps.json"
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path, json.loads(path.read_text())


def expected_weight(table: dict, lang: str | None, size: int, default: int = 1) -> int:
    keys = [int(k) for k in table.get(lang, {}) if int(k) <= size]
    return table[lang][str(max(keys))] if keys else default


def _text(rng: random.Random) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(80))


def _client():
    return Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None)


def _ctx(tmp: Path, inp: Path, client) -> GlobalContext:
    return GlobalContext(
        input_dir=str(inp),
        output_dir=str(tmp / "out"),
        log_dir=str(tmp / "log"),
        work_dir=str(tmp / "work"),
        client=client,
    )


def test_each_document_is_repeated_by_its_weight(tmp_path):
    _, table = fineweb2_weights()
    rng = random.Random(1)
    rows = []
    for lang in ("deu_Latn", "fra_Latn", "spa_Latn", "zzz_Latn", None):
        for size in (1, 2, 3, 4, 7, 12, 19, 33, 240, 10_000):
            rows.append((f"{lang}-{size}", lang, size))
    rng.shuffle(rows)
    inp = tmp_path / "in"
    inp.mkdir()
    for k in range(3):  # three parts, one with a null cluster size (= 1)
        chunk = rows[k::3]
        sizes = [s for _, _, s in chunk]
        if k == 2:
            sizes[0] = None
        pq.write_table(
            pa.table(
                {
                    "id": [i for i, _, _ in chunk],
                    "text": pa.array([f"text of {i}" for i, _, _ in chunk], pa.large_string()),
                    "language": pa.array([lang for _, lang, _ in chunk], pa.string()),
                    "minhash_cluster_size": pa.array(sizes, pa.int32()),
                }
            ),
            inp / f"part-{k:05d}.parquet",
        )
    null_id = rows[2::3][0][0]
    sizes = {i: (1 if i == null_id else s) for i, _, s in rows}
    langs = {i: lang for i, lang, _ in rows}
    stage = Rehydrate(RehydrateParams(weights=str(fineweb2_weights()[0])))
    stage.check()
    with _client() as client:
        stats = stage.run(_ctx(tmp_path, inp, client))
    stats.check_balance()
    out = pq.read_table(tmp_path / "out")
    want = {i: expected_weight(table, langs[i], sizes[i]) for i in sizes}
    got = Counter(out["id"].to_pylist())
    assert got == want
    assert max(want.values()) == 10 and min(want.values()) == 1  # the table's range is exercised
    # copies are told apart by ``repeat`` 0..w-1 and carry the document unchanged
    copies: dict[str, list[int]] = {}
    for r in out.select(["id", "repeat", "text"]).to_pylist():
        copies.setdefault(r["id"], []).append(r["repeat"])
        assert r["text"] == f"text of {r['id']}"
    assert all(sorted(reps) == list(range(want[i])) for i, reps in copies.items())
    # the report: docs out = docs in + repeats; documents without a table are written once
    assert stats.docs_in == len(rows)
    assert stats.docs_out == sum(want.values()) == len(rows) + stats.counters["repeats"]
    assert stats.counters["rehydrated_docs"] == sum(w > 1 for w in want.values())
    assert stats.counters["language_not_in_weights"] == 20  # zzz_Latn and no language
    assert stats.bytes_out == sum(len(f"text of {i}") * w for i, w in want.items())
    # the decision log has one row per input document, with its weight
    log = pq.read_table(tmp_path / "log").to_pylist()
    assert {r["id"]: r["rehydrate_weight"] for r in log} == want
    assert all(r["kept"] for r in log) and len(log) == len(rows)


def test_max_repeats_and_default_weight(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(
        pa.table(
            {
                "id": ["a", "b", "c", "d", "e"],
                "text": ["x", "y", "z", "w", "v"],
                "language": ["deu_Latn", "deu_Latn", "eng_Latn", "deu_Latn", "de"],
                "minhash_cluster_size": pa.array([1, 50, 50, 5, 2], pa.int64()),
            }
        ),
        inp / "part-00000.parquet",
    )
    inline = {"deu_Latn": {"2": 2, "3": 3, "40": 6}}  # no key 1: size 1 gets default_weight
    stage = Rehydrate(RehydrateParams(weights=inline, default_weight=2, max_repeats=4))
    with _client() as client:
        stats = stage.run(_ctx(tmp_path, inp, client))
    stats.check_balance()
    got = Counter(pq.read_table(tmp_path / "out")["id"].to_pylist())
    assert got == {"a": 2, "b": 4, "c": 2, "d": 3, "e": 2}  # lid.176's "de" is deu_Latn
    assert stats.counters["capped_docs"] == 1 and stats.counters["repeats"] == 8


def test_missing_cluster_size_names_the_stage_to_add(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"id": ["a"], "text": ["x"]}), inp / "part-00000.parquet")
    stage = Rehydrate(RehydrateParams(weights={"deu_Latn": {1: 1}}))
    with _client() as client, pytest.raises(ConfigError, match="dedup_minhash before rehydrate"):
        stage.run(_ctx(tmp_path, inp, client))


@pytest.mark.parametrize(
    "weights, message",
    [
        ("/nonexistent/weights.json", "file not found"),
        ({"deu_Latn": {"one": 1}}, "whole numbers"),
        ({"deu_Latn": {1: 0}}, "at least 1"),
        ({"deu_Latn": {1: 1.5}}, "whole numbers"),
    ],
)
def test_unusable_weights_fail_when_the_pipeline_is_built(weights, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        for stage in build_stages([{"read": {}}, {"rehydrate": {"weights": weights}}]):
            stage.check()
    bad_json = tmp_path / "w.json"
    bad_json.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_weights(str(bad_json))


def test_weights_content_enters_the_fingerprint(tmp_path):
    path = tmp_path / "w.json"
    path.write_text(json.dumps({"deu_Latn": {"1": 1, "2": 2}}))
    before = Rehydrate(RehydrateParams(weights=str(path))).fingerprint()
    path.write_text(json.dumps({"deu_Latn": {"1": 1, "2": 3}}))
    assert Rehydrate(RehydrateParams(weights=str(path))).fingerprint() != before
    inline = Rehydrate(RehydrateParams(weights={"deu_Latn": {1: 1, 2: 3}})).fingerprint()
    assert Rehydrate(RehydrateParams(weights=str(path))).fingerprint() == inline


def _planted_corpus(path: Path, rng: random.Random) -> dict[str, tuple[str, int]]:
    """JSONL of exact-copy clusters in three languages; returns survivor id -> (language, size)
    (the smallest id of each cluster survives dedup_minhash)."""
    records, survivors = [], {}
    n = 0
    for lang, sizes in (
        ("deu_Latn", [1, 1, 2, 3, 5, 9, 12]),
        ("fra_Latn", [1, 4, 8]),
        ("xyz_Latn", [1, 6]),
    ):
        for size in sizes:
            text = _text(rng)
            ids = [f"doc-{n + k:04d}" for k in range(size)]
            n += size
            survivors[min(ids)] = (lang, size)
            records += [{"id": i, "text": text, "language": lang} for i in ids]
    rng.shuffle(records)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return survivors


def test_pipeline_rehydrates_between_dedup_and_shuffle(tmp_path):
    weights_path, table = fineweb2_weights()
    rng = random.Random(7)
    corpus = tmp_path / "docs.jsonl"
    survivors = _planted_corpus(corpus, rng)
    out = tmp_path / "run"
    cfg = PipelineConfig(
        input=[str(corpus)],
        output=str(out),
        stages=[
            {"read": {"slice_mb": 0.005}},
            {"dedup_minhash": {}},
            {"rehydrate": {"weights": str(weights_path)}},
            {"shuffle": {"docs_per_part": 7, "seed": 3}},
            {"tokenize": {"formats": ["parquet"]}},
        ],
    )
    with _client() as client:
        summary = Runner.prepare(cfg).run(client)
    stages = {s["name"]: s for s in summary.report["stages"]}
    # dedup_minhash: one survivor per planted cluster, carrying the cluster's size
    deduped = pq.read_table(out / "documents" / "01_dedup_minhash")
    assert dict(
        zip(deduped["id"].to_pylist(), deduped["minhash_cluster_size"].to_pylist(), strict=True)
    ) == {i: size for i, (_, size) in survivors.items()}
    # shuffled output: each survivor exactly weight times
    final = pq.read_table(out / "documents" / "03_shuffle")
    want = {i: expected_weight(table, lang, size) for i, (lang, size) in survivors.items()}
    assert Counter(final["id"].to_pylist()) == want
    assert sum(w > 1 for w in want.values()) >= 5
    # the report counts the repeats
    rehydrate = stages["rehydrate"]
    assert rehydrate["docs_in"] == len(survivors)
    assert rehydrate["docs_out"] == sum(want.values())
    assert rehydrate["counters"]["repeats"] == sum(want.values()) - len(survivors)
    assert rehydrate["counters"]["language_not_in_weights"] == 2
    assert stages["shuffle"]["docs_in"] == stages["shuffle"]["docs_out"] == sum(want.values())
    # the trainer's shards hold every copy, each a document of its own
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest["documents"] == stages["tokenize"]["docs_out"] == sum(want.values())
    check = verify(out, sample=-1)
    assert check.ok, check.problems
    # the copies are shuffled apart: not all next to each other
    order = [
        i
        for f in sorted((out / "documents" / "03_shuffle").glob("*.parquet"))
        for i in pq.read_table(f)["id"].to_pylist()
    ]
    adjacent = sum(a == b for a, b in zip(order, order[1:], strict=False))
    assert adjacent < (sum(want.values()) - len(survivors)) / 2


def test_copies_of_copies_keep_distinct_repeat_indices():
    """A document an earlier stage already repeated (``repeat`` 0 and 1, same id) gets copies
    whose (id, repeat) pairs are all distinct, so shuffle keys each one apart."""
    table = pa.table({"id": ["a", "a", "b"], "repeat": pa.array([0, 1, None], pa.int32())})
    out = repeat_rows(table, np.array([2, 2, 3]), span=3)
    pairs = list(zip(out["id"].to_pylist(), out["repeat"].to_pylist(), strict=True))
    assert len(set(pairs)) == len(pairs) == 7
    assert [r for i, r in pairs if i == "a"] == [0, 1, 3, 4]
    assert [r for i, r in pairs if i == "b"] == [0, 1, 2]
