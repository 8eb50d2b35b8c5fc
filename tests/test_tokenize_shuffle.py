"""shuffle: a seeded permutation that does not depend on partitions or workers."""

from __future__ import annotations

from datetime import UTC, datetime

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
