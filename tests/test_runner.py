"""The runner with a global stage between map stages (the path dedup and shuffle will take)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from distributed import Client
from test_stage import MinWords
from warcgen import record, write_warc

from refine.pipeline import registry
from refine.pipeline.config import PipelineConfig
from refine.pipeline.runner import Runner
from refine.pipeline.stage import GlobalStage, MapStage, StageResult, decision_log
from refine.pipeline.stats import StageStats
from refine.pipeline.storage import list_parts, write_parquet_atomic


class ExactTextDedup(GlobalStage):
    """A small global stage for the test: keeps the smallest id of each distinct text."""

    name = "test_dedup"

    def run(self, ctx):
        table = pa.concat_tables(pq.read_table(p) for p in list_parts(Path(ctx.input_dir)))
        keep_ids = set(table.group_by("text").aggregate([("id", "min")])["id_min"].to_pylist())
        stats = StageStats(self.name, parts=1)
        for part in list_parts(Path(ctx.input_dir)):
            t = pq.read_table(part)
            kept = pc.is_in(t["id"], pa.array(sorted(keep_ids)))
            reasons = pc.if_else(kept, pa.scalar(None, pa.string()), pa.scalar("duplicate"))
            out = t.filter(kept)
            write_parquet_atomic(out, Path(ctx.output_dir) / part.name)
            write_parquet_atomic(
                decision_log(t, kept, reasons, None), Path(ctx.log_dir) / part.name
            )
            stats.docs_in += t.num_rows
            stats.docs_out += out.num_rows
            stats.drop("duplicate", t.num_rows - out.num_rows)
        return stats


PAGE = "<html><body><article><p>{}</p></article></body></html>"


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(registry.STAGES, "test_dedup", "test_runner:ExactTextDedup")
    monkeypatch.setitem(registry.STAGES, "min_words", "test_stage:MinWords")


def test_global_stage_between_map_stages_with_resume(tmp_path, registered):
    texts = [
        "the same words repeated in several documents of the corpus",
        "a different document with enough words to pass the filter",
        "the same words repeated in several documents of the corpus",
        "short one",
        "the same words repeated in several documents of the corpus",
    ]
    warc = tmp_path / "a.warc.gz"
    write_warc(
        warc,
        [
            record(
                "response",
                f"http://x.example/{i}",
                PAGE.format(t).encode(),
                record_id=f"<urn:uuid:{i:08d}>",
            )
            for i, t in enumerate(texts)
        ],
    )
    cfg = PipelineConfig(
        input=[str(warc)],
        output=str(tmp_path / "out"),
        stages=[
            {"read": {}},
            {"extract": {"engine": "resiliparse"}},
            {"test_dedup": {}},
            {"min_words": {"min_words": 4}},
        ],
    )
    with Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
    ) as client:
        summary = Runner.prepare(cfg).run(client)
        names = [s["name"] for s in summary.report["stages"]]
        assert names == ["read", "extract", "test_dedup", "min_words"]
        dedup = summary.report["stages"][2]
        assert (dedup["docs_in"], dedup["docs_out"], dedup["dropped"]) == (5, 3, {"duplicate": 2})
        final = pq.read_table(tmp_path / "out" / "documents" / "03_min_words").sort_by("id")
        assert final["id"].to_pylist() == ["<urn:uuid:00000000>", "<urn:uuid:00000001>"]
        assert summary.parts_skipped == 0
        again = Runner.prepare(cfg).run(client)
        assert again.parts_skipped == again.parts_total  # the global stage is resumed too
        assert again.report["stages"] == summary.report["stages"]
        # a changed threshold after the global stage recomputes only the last segment, from
        # the saved signals: no document is scored again
        cfg.stages[3] = {"min_words": {"min_words": 1}}
        MinWords.scored = 0
        third = Runner.prepare(cfg).run(client)
        assert third.parts_skipped == third.parts_total - 1
        assert MinWords.scored == 0
        assert third.report["stages"][3]["counters"]["signals_reused"] == 3
        final = pq.read_table(tmp_path / "out" / "documents" / "03_min_words")
        assert final.num_rows == 3
        assert not (tmp_path / "out" / "_state" / "signals").exists() or not any(
            (tmp_path / "out" / "_state" / "signals").iterdir()
        )


class Scratch(MapStage):
    """Adds per-partition scratch that fused stages may share; it must never be written."""

    name = "test_scratch"

    def process(self, table):
        n = table.num_rows
        out = table.append_column("_scratch", pa.array(range(n), pa.int64()))
        kept = pa.array([True] * n)
        stats = StageStats(self.name, docs_in=n, docs_out=n, parts=1)
        return StageResult(out, decision_log(table, kept, pa.nulls(n, pa.string()), None), stats)


def test_hidden_columns_are_not_written(tmp_path, monkeypatch):
    monkeypatch.setitem(registry.STAGES, "test_scratch", "test_runner:Scratch")
    warc = tmp_path / "a.warc.gz"
    write_warc(warc, [record("response", "http://x.example/", PAGE.format("some words").encode())])
    cfg = PipelineConfig(
        input=[str(warc)],
        output=str(tmp_path / "out"),
        keep_intermediate=True,
        stages=[{"read": {}}, {"extract": {"engine": "resiliparse"}}, {"test_scratch": {}}],
    )
    with Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c:
        Runner.prepare(cfg).run(c)
    docs = pq.read_table(tmp_path / "out" / "documents" / "02_test_scratch")
    assert docs.num_rows == 1 and "_scratch" not in docs.column_names


class Probe(MapStage):
    """Remembers the columns it was given."""

    name = "test_probe"
    seen: list[str] = []

    def process(self, table):
        Probe.seen = list(table.column_names)
        n = table.num_rows
        stats = StageStats(self.name, docs_in=n, docs_out=n, parts=1)
        return StageResult(
            table, decision_log(table, pa.array([True] * n), pa.nulls(n, pa.string()), None), stats
        )


def test_scratch_is_dropped_after_a_stage_that_rewrites_text(tmp_path):
    """pii changes the text: word splits made before it must not reach later filters."""
    from refine.filters.pii import PiiAnonymizer
    from refine.pipeline.runner import PartJob, run_part
    from refine.pipeline.stage import Partition

    part = tmp_path / "in.parquet"
    pq.write_table(
        pa.table(
            {
                "id": ["d0"],
                "url": ["http://x/"],
                "text": ["write to someone@example.org today"],
                "source": ["f#0"],
                "_words": pa.array([["stale"]], pa.list_(pa.large_string())),
            }
        ),
        part,
    )
    job = PartJob(
        root=str(tmp_path / "out"),
        segment_key="01_test_probe",
        fingerprint="x",
        stages=[("00_pii", PiiAnonymizer()), ("01_test_probe", Probe())],
        partition=Partition("00000", str(part)),
        keep_intermediate=False,
    )
    run_part(job)
    assert "_words" not in Probe.seen and "text" in Probe.seen
