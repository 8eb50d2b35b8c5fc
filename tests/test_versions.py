"""Reproducible runs: report.json names the versions of refine and of the libraries whose output
matters, and a resume under other versions of a stage's libraries recomputes that stage (and
says so) instead of mixing outputs of two versions."""

from __future__ import annotations

import logging

import pyarrow as pa
import pyarrow.parquet as pq
from distributed import Client

from refine.pipeline import versions
from refine.pipeline.config import PipelineConfig
from refine.pipeline.registry import stage_class
from refine.pipeline.runner import Runner


def _run(tmp_path, stages):
    path = tmp_path / "docs.parquet"
    if not path.exists():
        rows = [
            {"id": f"d{i}", "text": f"This is a plain English sentence number {i}, about cats."}
            for i in range(40)
        ]
        pq.write_table(pa.Table.from_pylist(rows), path)
    cfg = PipelineConfig(input=[str(path)], output=str(tmp_path / "out"), stages=stages)
    with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
        return Runner.prepare(cfg).run(client)


def test_report_names_refine_and_library_versions(tmp_path):
    summary = _run(tmp_path, [{"read": {}}, {"pii": {}}])
    v = summary.report["versions"]
    assert v["refine"].startswith(summary.report["refine_version"])
    for name in ("python", "trafilatura", "lxml", "resiliparse", "fasttext", "tokenizers",
                 "pyarrow", "dask", "datasketch", "kenlm", "sentencepiece"):  # fmt: skip
        assert name in v
    assert v["pyarrow"] == pa.__version__


def test_stage_fingerprints_follow_their_libraries(monkeypatch):
    extract = stage_class("extract")()
    tokenize = stage_class("tokenize")()
    before = (extract.fingerprint(), tokenize.fingerprint())
    real = versions.library_version
    monkeypatch.setattr(
        versions, "library_version", lambda n: "9.9.9" if n == "trafilatura" else real(n)
    )
    assert extract.fingerprint() != before[0]  # trafilatura decides what extract outputs
    assert tokenize.fingerprint() == before[1]  # tokenize does not use it
    resiliparse = stage_class("extract")(stage_class("extract").Params(engine="resiliparse"))
    assert "trafilatura" not in resiliparse.library_versions()


def test_resume_under_another_library_version_recomputes_and_says_so(tmp_path, monkeypatch, caplog):
    stages = [{"read": {}}, {"language": {"languages": ["en"]}}, {"dedup_exact": {}}]
    first = _run(tmp_path, stages)
    assert first.parts_skipped == 0
    again = _run(tmp_path, stages)
    assert again.parts_skipped == again.parts_total  # same versions: everything resumed
    real = versions.library_version
    monkeypatch.setattr(
        versions, "library_version", lambda n: "0.0.1" if n == "fasttext" else real(n)
    )
    with caplog.at_level(logging.WARNING, logger="refine"):
        third = _run(tmp_path, stages)
    assert third.parts_skipped == 0  # the fused read+language segment and dedup after it
    assert any(
        "library versions changed" in r.message and "fasttext" in r.message and "-> 0.0.1" in
        r.message for r in caplog.records
    ), [r.message for r in caplog.records]  # fmt: skip
    docs = pq.read_table(tmp_path / "out" / "documents" / "02_dedup_exact")
    assert docs.num_rows == 40  # recomputed, not mixed: every document once
