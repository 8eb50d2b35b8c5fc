"""Configs are data, and nothing a config or an input names can write outside the output
directory (issue 8): YAML is read with the safe loader, stage names and part ids are checked path
components, and a symbolic link inside the output directory is refused before any work."""

from __future__ import annotations

import os

import pytest
from support import FAST_STAGES, report, run_cli, write_config
from warcgen import record, write_warc

from refine.errors import RefineError
from refine.pipeline.storage import OutputLayout, stage_folder

PAGE = (
    "<html><body><article><p>{} is a paragraph of real prose that a reader would keep, written "
    "with enough words that every extractor takes it as the main content.</p></article></body>"
    "</html>"
)


def _one_line_error(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "tag",
    [
        "!!python/object/apply:os.system [{cmd!r}]",
        "!!python/object/apply:subprocess.check_call [[sh, -c, {cmd!r}]]",
        "!!python/name:os.system",
    ],
)
def test_yaml_tags_that_would_run_code_are_refused(tmp_path, tag):
    marker = tmp_path / "pwned"
    warc = write_warc(tmp_path / "a.warc.gz", [record(http_body=PAGE.format("x").encode())])
    body = tag.format(cmd=f"touch {marker}")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"input: [{str(warc)!r}]\noutput: {str(tmp_path / 'out')!r}\nstages: {body}\n")
    r = run_cli("run", str(cfg))
    assert r.returncode == 2
    assert "not valid YAML" in _one_line_error(r)
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["../x", "/tmp/x", "..", "a/../../b"])
def test_a_stage_name_cannot_be_a_path(tmp_path, name):
    warc = write_warc(tmp_path / "a.warc.gz", [record(http_body=PAGE.format("x").encode())])
    stages = FAST_STAGES + f"  - {name!r}: {{}}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(warc)], tmp_path / "out", stages)
    before = sorted(tmp_path.parent.iterdir())
    r = run_cli("run", str(cfg))
    assert r.returncode == 2
    assert "unknown stage" in _one_line_error(r)
    assert sorted(tmp_path.parent.iterdir()) == before and not (tmp_path / "out").exists()


def test_output_names_are_single_components(tmp_path):
    layout = OutputLayout(tmp_path)
    assert layout.documents(stage_folder(1, "extract")) == tmp_path / "documents" / "01_extract"
    assert layout.done_marker("01_extract", "00003-0001").parent == layout.done_dir("01_extract")
    for bad in ["../x", "..", "a/b", "/abs", ".hidden", "", "x/..", "a\\b", "a\0b"]:
        with pytest.raises(RefineError, match="cannot name"):
            layout.documents(bad)
        with pytest.raises(RefineError, match="cannot name"):
            layout.done_marker("01_extract", bad)
    with pytest.raises(RefineError, match="cannot name"):
        stage_folder(3, "../../etc")


@pytest.mark.parametrize(
    "link",
    ["documents/01_extract", "stages", "tokens", "_state/done/01_extract", "stats"],
)
def test_a_link_inside_the_output_is_refused_before_work(tmp_path, link):
    """Writing or deleting through a link would reach whatever it points to."""
    warc = write_warc(tmp_path / "a.warc.gz", [record(http_body=PAGE.format("x").encode())])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    out = tmp_path / "out"
    (out / link).parent.mkdir(parents=True, exist_ok=True)
    (out / link).symlink_to(elsewhere, target_is_directory=True)
    cfg = write_config(tmp_path / "c.yaml", [str(warc)], out, FAST_STAGES)
    r = run_cli("run", str(cfg), "--no-progress")
    assert r.returncode == 2
    line = _one_line_error(r)
    assert str(out / link) in line and "symbolic link" in line
    assert sorted(p.name for p in elsewhere.iterdir()) == ["precious.txt"]
    assert (elsewhere / "precious.txt").read_text() == "keep me"
    assert not (out / "report.json").exists()


def test_names_from_inputs_never_leave_the_output(tmp_path):
    """Input file names, record ids and URLs full of path tricks name nothing on disk; the
    output folder itself may be a link (to another disk, say)."""
    src = tmp_path / "in" / "..odd dir"
    src.mkdir(parents=True)
    warc = src / "a;b $(touch x) ..warc.gz"
    recs = [
        record(
            url=f"http://x.example/../../../escape{i}",
            http_body=PAGE.format(f"Page {i}").encode(),
            record_id=f"<../../../escape-{i}>",
        )
        for i in range(3)
    ]
    write_warc(warc, recs)
    real_out = tmp_path / "disk" / "out"
    real_out.mkdir(parents=True)
    out = tmp_path / "out"
    out.symlink_to(real_out, target_is_directory=True)
    stages = FAST_STAGES + "  - dedup_exact: {}\n"
    cfg = write_config(tmp_path / "c.yaml", [str(warc)], out, stages)
    outside = {p for p in tmp_path.rglob("*") if real_out not in p.parents}
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert {p for p in tmp_path.rglob("*") if real_out not in p.parents} == outside
    rep = report(real_out)
    assert rep["stages"][-1]["docs_out"] == 3
    written = [p for p in real_out.rglob("*") if p.is_file()]
    assert written and all(os.path.realpath(p).startswith(str(real_out.resolve())) for p in written)
    assert not any("escape" in p.name for p in written)


def test_a_folder_refine_did_not_make_is_never_cleaned(tmp_path):
    """An output folder that already holds documents/ (or tokens/, stages/...) but no marker of
    refine's is refused with one line; nothing in it is touched. A folder refine made is used."""
    warc = write_warc(tmp_path / "a.warc.gz", [record(http_body=PAGE.format("x").encode())])
    out = tmp_path / "someone-elses"
    (out / "documents").mkdir(parents=True)
    (out / "documents" / "mine.parquet").write_text("not refine's")
    cfg = write_config(tmp_path / "c.yaml", [str(warc)], out, FAST_STAGES)
    r = run_cli("run", str(cfg), "--no-progress")
    assert r.returncode == 2
    line = _one_line_error(r)
    assert "was not made by refine" in line and "documents" in line
    assert sorted(p.name for p in (out / "documents").iterdir()) == ["mine.parquet"]
    fresh = tmp_path / "fresh"
    cfg = write_config(tmp_path / "d.yaml", [str(warc)], fresh, FAST_STAGES)
    assert run_cli("run", str(cfg), "--no-progress").returncode == 0
    assert (fresh / ".refine-output").is_file()
    assert run_cli("run", str(cfg), "--no-progress").returncode == 0  # its own: used again
