"""refine.redact on hand-made reports: what the environment gave a remote URL is published as
the config wrote it (tests/test_push.py covers whole runs)."""

from __future__ import annotations

import pyarrow as pa

from refine.redact import Redactor


def _report(tmp_path, written: str, given: str, urls: list[str]) -> dict:
    return {
        "output": str(tmp_path / "out"),
        "config": {"input": [given], "stages": [{"read": {"slice_mb": 1}}]},
        "config_env": [{"at": ["input", 0], "written": written}],
        "inputs": {"urls": urls},
        "cluster": {},
    }


def test_a_variable_inside_a_remote_url_is_put_back_and_credentials_still_go(tmp_path):
    report = _report(
        tmp_path,
        "s3://bucket/${RUN}/crawl/*.warc.gz",
        "s3://bucket/run-7f3a/crawl/*.warc.gz",
        ["s3://bucket/run-7f3a/crawl/a.warc.gz?X-Amz-Signature=planted&part=1"],
    )
    redactor = Redactor.for_run(tmp_path / "out", report)
    public = redactor.report(report)
    assert public["config"]["input"] == ["s3://bucket/${RUN}/crawl/*.warc.gz"]
    assert public["inputs"]["urls"] == ["s3://bucket/${RUN}/crawl/a.warc.gz?part=1"]
    sources = pa.chunked_array([["s3://bucket/run-7f3a/crawl/a.warc.gz#12", None]])
    assert redactor.column(sources).to_pylist() == ["s3://bucket/${RUN}/crawl/a.warc.gz#12", None]
    # in free text too (an example's message), and nothing else is touched
    text = "bad record at s3://bucket/run-7f3a/crawl/a.warc.gz#9; s3://bucket/other/b.warc.gz"
    assert redactor.text(text) == (
        "bad record at s3://bucket/${RUN}/crawl/a.warc.gz#9; s3://bucket/other/b.warc.gz"
    )


def test_a_whole_url_from_the_environment_keeps_its_variable(tmp_path):
    report = _report(
        tmp_path,
        "${MIRROR}/x.warc.gz",
        "https://mirror.internal.example/planted/x.warc.gz",
        ["https://mirror.internal.example/planted/x.warc.gz"],
    )
    public = Redactor.for_run(tmp_path / "out", report).report(report)
    assert public["inputs"]["urls"] == ["${MIRROR}/x.warc.gz"]
    assert "mirror.internal" not in str(public)


def test_local_paths_from_the_environment_are_shown_relative_as_before(tmp_path):
    data = tmp_path / "data"
    report = _report(
        tmp_path, "${DATA}/warc/*.warc.gz", f"{data}/warc/*.warc.gz", [f"{data}/warc/a.warc.gz"]
    )
    redactor = Redactor.for_run(tmp_path / "out", report)
    assert redactor.env == []
    assert redactor.report(report)["inputs"]["urls"] == ["a.warc.gz"]


def test_credentials_in_a_config_string_with_a_variable_are_not_published(tmp_path):
    """``${HOST}/x?token=...`` has no scheme for the URL rule to see: its credential parameters
    go all the same, in the config as written and in the inputs' URLs."""
    report = _report(
        tmp_path,
        "${HOST}/x.warc.gz?token=planted&part=1",
        "https://h.internal.example/x.warc.gz?token=planted&part=1",
        ["https://h.internal.example/x.warc.gz?token=planted&part=1"],
    )
    public = Redactor.for_run(tmp_path / "out", report).report(report)
    assert public["config"]["input"] == ["${HOST}/x.warc.gz?part=1"]
    assert public["inputs"]["urls"] == ["${HOST}/x.warc.gz?part=1"]
    assert "planted" not in str(public) and "h.internal" not in str(public)
