"""The output storage refuses writes mid-run (issue 8): a full disk, or a file-size limit.

The run must stop with one line (exit 1), leave no half-written file counted as done, and the
same command, once there is space again, must finish with the documents of an uninterrupted run
without redoing the parts that were done.

A real full disk without root: a tiny tmpfs mounted in a user+mount namespace (`unshare -rm`,
skipped where unprivileged namespaces are off), giving ENOSPC to every process of the run. And
everywhere: RLIMIT_FSIZE on the run's process tree, so the kernel refuses (EFBIG) any write that
would make a file larger than the limit, mid-file, as a full disk does.
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import FAST_STAGES, REPO, documents, report, require_shared_data, run_cli, write_config

pytestmark = pytest.mark.integration


def _config(tmp: Path, name: str) -> tuple[Path, Path]:
    data = require_shared_data()
    out = tmp / name
    warc = str(data / "warc" / "web-pages-a.warc.gz")  # 15 parts of ~100 KB of documents
    return write_config(tmp / f"{name}.yaml", [warc], out, FAST_STAGES), out


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    cfg, out = _config(tmp_path_factory.mktemp("clean"), "clean")
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _cli(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "refine.cli", "run", str(cfg), "--workers", "2", "--no-progress"]


def _namespaces_work(tmp: Path) -> bool:
    probe = tmp / "probe"
    probe.mkdir()
    script = 'mount -t tmpfs -o size=64k refine-probe "$1" && touch "$1/x"'
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(probe)], capture_output=True
    )
    return r.returncode == 0


def _run_on_full_disk(cfg: Path, out: Path, size_kb: int) -> subprocess.CompletedProcess:
    """Run with OUT on a tmpfs of ``size_kb``; afterwards OUT holds what the run left there (the
    tmpfs lives only as long as the namespace, so its content is copied out, mtimes kept)."""
    if shutil.which("unshare") is None or not _namespaces_work(out.parent):
        pytest.skip("no unprivileged user and mount namespaces here (unshare -rm)")
    saved = out.with_name("saved")
    out.mkdir()
    saved.mkdir()
    script = (
        'size=$1; out=$2; saved=$3; shift 3; mount -t tmpfs -o size="$size"k refine-full "$out" '
        '|| exit 97; "$@"; rc=$?; cp -a "$out"/. "$saved"/; exit $rc'
    )
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(size_kb), str(out), str(saved)]
        + _cli(cfg),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert r.returncode != 97, r.stderr
    shutil.copytree(saved, out, dirs_exist_ok=True)  # copy2: mtimes kept
    return r


def _run_with_file_size_limit(cfg: Path, limit: int) -> subprocess.CompletedProcess:
    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return subprocess.run(
        _cli(cfg),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        preexec_fn=limit_files,
    )


@pytest.mark.parametrize("fault", ["full_disk", "file_size_limit"])
def test_output_storage_refusing_writes_stops_cleanly_and_the_rerun_resumes(tmp_path, clean, fault):
    cfg, out = _config(tmp_path, "out")
    sizes = sorted(p.stat().st_size for p in (clean / "documents" / "01_extract").glob("part-*"))
    if fault == "full_disk":
        r = _run_on_full_disk(cfg, out, size_kb=sum(sizes) // 3 // 1024)
        errno_text = "No space left on device"
    else:
        limit = sizes[len(sizes) // 2]  # about half the parts fit
        r = _run_with_file_size_limit(cfg, limit)
        errno_text = "File too large"

    # one clear line, exit 1, no traceback
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("refine: error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert errno_text in errors[0] and "re-run the same command" in errors[0], errors[0]

    # nothing half-written is counted as done: every part with a done marker is whole
    assert not list(out.rglob(".tmp-*")), "temporary files left behind"
    markers = sorted((out / "_state" / "done" / "01_extract").glob("part-*.json"))
    total = len(sizes)
    assert 0 < len(markers) < total, (len(markers), total)
    done_mtimes = {}
    for marker in markers:
        name = marker.name.replace(".json", ".parquet")
        read_stats, extract_stats = json.loads(marker.read_text())["stats"]
        docs = pq.read_table(out / "documents" / "01_extract" / name)
        assert docs.num_rows == extract_stats["docs_out"]
        assert (
            pq.read_table(out / "stages" / "01_extract" / name).num_rows == extract_stats["docs_in"]
        )
        assert pq.read_table(out / "stages" / "00_read" / name).num_rows == read_stats["docs_in"]
        done_mtimes[name] = (out / "documents" / "01_extract" / name).stat().st_mtime_ns
    if (out / "report.json").exists():  # a full disk may not even take the report
        assert report(out)["complete"] is False

    # space again: the same command finishes, redoing only the parts that were not done
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["complete"] is True
    assert rep["parts"] == {"total": total, "resumed": len(markers), "failed": 0}
    for name, mtime in done_mtimes.items():
        assert (out / "documents" / "01_extract" / name).stat().st_mtime_ns == mtime, name
    a, b = documents(out), documents(clean)
    assert a["id"].to_pylist() == b["id"].to_pylist()
    assert a["text"].to_pylist() == b["text"].to_pylist()
    counts = [(s["docs_in"], s["docs_out"]) for s in rep["stages"]]
    assert counts == [(s["docs_in"], s["docs_out"]) for s in report(clean)["stages"]]
    assert not list(out.rglob(".tmp-*"))
