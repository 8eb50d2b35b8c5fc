"""shuffle: a seeded permutation that does not depend on partitions or workers."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client
from warcgen import record, write_warc

from refine.pipeline import registry
from refine.pipeline.config import PipelineConfig
from refine.pipeline.runner import Runner
from refine.pipeline.storage import list_parts

PAGE = "<html><body><article><p>{}</p></article></body></html>"


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """Until registry.py lists them (the same lines as in the report)."""
    monkeypatch.setitem(registry.STAGES, "shuffle", "refine.tokenize.shuffle:Shuffle")
    monkeypatch.setitem(registry.STAGES, "tokenize", "refine.tokenize.stage:Tokenize")


def corpus(path, n=60):
    docs = [
        (f"<urn:uuid:d{i:03d}>", f"http://site{i}.example/page", f"document number {i} " * 5)
        for i in range(n)
    ]
    write_warc(
        path,
        [
            record(
                "response",
                u,
                PAGE.format(t).encode(),
                record_id=i,
                date=datetime(2022, 1, 1, tzinfo=UTC),
            )
            for i, u, t in docs
        ],
    )
    return docs


def run(warc, out, slice_mb, workers, stages):
    cfg = PipelineConfig(
        input=[str(warc)],
        output=str(out),
        stages=[{"read": {"slice_mb": slice_mb}}, {"extract": {"engine": "resiliparse"}}, *stages],
    )
    with Client(
        processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
    ) as c:
        return Runner.prepare(cfg).run(c)


def shuffled_order(out):
    parts = list_parts(out / "documents" / "02_shuffle")
    return [pq.read_table(p, columns=["id"])["id"].to_pylist() for p in parts]


def test_order_is_seeded_and_independent_of_partitions_and_workers(tmp_path):
    warc = tmp_path / "a.warc.gz"
    docs = corpus(warc)
    orders = []
    for slice_mb, workers in [(64, 1), (0.0005, 2), (0.001, 4)]:
        out = tmp_path / f"out-{slice_mb}-{workers}"
        summary = run(warc, out, slice_mb, workers, [{"shuffle": {"seed": 7, "docs_per_part": 25}}])
        orders.append((summary.report["stages"][0]["parts"], shuffled_order(out)))
        sh = summary.report["stages"][2]
        assert sh["docs_in"] == sh["docs_out"] == len(docs)
        assert sh["counters"]["output_parts"] == 3
    assert orders[0][0] == 1 and orders[1][0] > 3  # really different input partitionings
    assert orders[0][1] == orders[1][1] == orders[2][1]
    parts = orders[0][1]
    assert [len(p) for p in parts] == [25, 25, 10]  # bounded parts, in rank order
    flat = [i for p in parts for i in p]
    assert sorted(flat) == sorted(d[0] for d in docs)  # none lost, none twice
    assert flat != sorted(flat)  # really shuffled

    other = tmp_path / "other-seed"
    run(warc, other, 64, 1, [{"shuffle": {"seed": 8, "docs_per_part": 25}}])
    assert [i for p in shuffled_order(other) for i in p] != flat


def test_each_part_is_in_key_order_when_written_a_few_rows_at_a_time(tmp_path, monkeypatch):
    """Output parts are written WRITE_ROWS rows at a time (row groups); the documents still come
    in the order of their shuffle keys, across row groups, parts and input parts, and the
    decision log's rank is each document's place in that order."""
    from refine.tokenize import shuffle

    monkeypatch.setattr(shuffle, "WRITE_ROWS", 4)
    warc = tmp_path / "a.warc.gz"
    docs = corpus(warc, n=45)
    out = tmp_path / "out"
    run(warc, out, 0.0005, 2, [{"shuffle": {"seed": 3, "docs_per_part": 20}}])
    files = list_parts(out / "documents" / "02_shuffle")
    assert [pq.ParquetFile(f).metadata.num_row_groups for f in files] == [5, 5, 2]
    flat = [i for p in shuffled_order(out) for i in p]
    ids = [d[0] for d in docs]
    expected = [i for _, i in sorted(zip(shuffle.shuffle_keys(ids, 3), ids, strict=True))]
    assert flat == expected
    log = pq.read_table(out / "stages" / "02_shuffle", columns=["id", "rank"]).to_pylist()
    assert {r["id"]: r["rank"] for r in log} == {i: k for k, i in enumerate(expected)}


def test_shuffle_keeps_every_column(tmp_path):
    warc = tmp_path / "a.warc.gz"
    corpus(warc, n=10)
    out = tmp_path / "out"
    run(warc, out, 0.0005, 2, [{"shuffle": {"docs_per_part": 4}}])
    before = pq.read_table(out / "documents" / "01_extract").sort_by("id")
    after = pq.read_table(out / "documents" / "02_shuffle").sort_by("id")
    assert after.schema.equals(before.schema)
    assert after.equals(before)
    log = pq.read_table(out / "stages" / "02_shuffle")
    assert sorted(log["rank"].to_pylist()) == list(range(10))


def test_files_written_grow_with_parts_plus_outputs_not_their_product(tmp_path):
    """8 input parts of 60 documents (and one empty part) into 16 output parts of 30: moving
    the documents as one fragment file per (input part, output part) pair would write ~8 x 16
    files; the stage writes 3 small files per input part (keys, sorted keys, ranks) and one
    per output part. The order is checked against the keys computed here."""
    from refine.pipeline.stage import GlobalContext
    from refine.tokenize.shuffle import Shuffle, ShuffleParams, shuffle_keys

    n_in, per_part, dpp, seed = 8, 60, 30, 11
    inp = tmp_path / "in"
    inp.mkdir()
    tables = []
    for p in range(n_in + 1):
        n = per_part if p < n_in else 0
        t = pa.table(
            {
                "id": pa.array([f"doc-{p}-{i}" for i in range(n)], pa.string()),
                "text": pa.array([f"text {p} {i} " * 20 for i in range(n)], pa.large_string()),
                "date": pa.array(
                    [datetime(2022, 1, 1 + i % 28, tzinfo=UTC) for i in range(n)],
                    pa.timestamp("us", tz="UTC"),
                ),
                "source": pa.array([f"s{p}.warc.gz"] * n, pa.string()),
            }
        )
        pq.write_table(t, inp / f"part-{p:05d}.parquet")
        tables.append(t)
    out, log = tmp_path / "out", tmp_path / "log"
    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        ctx = GlobalContext(str(inp), str(out), str(log), str(tmp_path / "work"), c)
        stats = Shuffle(ShuffleParams(seed=seed, docs_per_part=dpp)).run(ctx)

    n_out = n_in * per_part // dpp
    assert stats.counters["output_parts"] == n_out == 16
    assert len(list(out.glob("part-*.parquet"))) == n_out
    assert not (tmp_path / "work").exists()
    # what one fragment per (input part, output part) would have written, from the logs' ranks
    pairs = {
        (p.name, r // dpp)
        for p in sorted(log.glob("*.parquet"))
        for r in pq.read_table(p)["rank"].to_pylist()
    }
    assert len(pairs) >= 0.9 * n_in * n_out  # nearly every part sends documents to every output
    assert stats.counters["work_files"] <= 3 * (n_in + 1)
    assert stats.counters["work_files"] + n_out < len(pairs) / 2

    every = pa.concat_tables(tables)
    keys = shuffle_keys(every["id"].to_pylist(), seed)
    assert len(set(keys)) == every.num_rows  # no ties: the order is the keys' order
    order = sorted(range(every.num_rows), key=lambda i: keys[i])
    expected = every.take(order)
    written = [pq.read_table(p) for p in sorted(out.glob("part-*.parquet"))]
    assert [t.num_rows for t in written] == [dpp] * n_out
    got = pa.concat_tables(written)
    assert got.schema.equals(every.schema)
    assert got.equals(expected)


def test_output_part_names_sort_in_number_order_past_99999_parts():
    from refine.tokenize.shuffle import part_width

    for n in (1, 10, 100_000, 100_001, 3_000_000):
        width = part_width(n)
        names = [f"part-{k:0{width}d}.parquet" for k in (0, 9, 99_999, n - 1) if k < n]
        assert names == sorted(names), n
    assert part_width(100_000) == 5 and part_width(100_001) == 6
