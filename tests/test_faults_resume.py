"""kill -9 during the global stages (issue 8): the whole run during MinHash and then during
tokenization, and one Dask worker during MinHash's shuffles. The final documents and token shards
must equal an undisturbed run's, byte for byte, and finished work must not be redone."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support import REPO, dask_cluster, report, require_shared_data, run_cli, write_config

pytestmark = pytest.mark.integration

STAGES = """  - read: {slice_mb: 0.5}
  - extract: {engine: resiliparse, timeout: 20}
  - dedup_minhash: {}
  - shuffle: {seed: 7, docs_per_part: 20}
  - tokenize: {shard_tokens: 20000}
"""
#: ~180 real pages in 8 parts: enough for several parts per stage, small enough for CI
INPUTS = ["heritrix-2008-sample.warc.gz", "wget-sample-0000.warc.gz", "wget-sample-0001.warc.gz"]
CHECKPOINTS = ["01_extract", "02_dedup_minhash", "03_shuffle", "04_tokenize"]


def _config(tmp: Path, name: str) -> tuple[Path, Path]:
    data = require_shared_data()
    out = tmp / name
    cfg = write_config(
        tmp / f"{name}.yaml", [str(data / "warc" / "web-pages-a.warc.gz")], out, STAGES
    )
    return cfg, out


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """The undisturbed run every disturbed one is compared with."""
    cfg, out = _config(tmp_path_factory.mktemp("clean"), "clean")
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _ids(out: Path, folder: str) -> list[str]:
    return sorted(pq.read_table(out / "documents" / folder, columns=["id"])["id"].to_pylist())


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.glob("part-*")}


def _assert_same_output(out: Path, clean: Path) -> None:
    for folder in CHECKPOINTS:
        assert _ids(out, folder) == _ids(clean, folder), folder
    # the shuffled checkpoint and every token shard, byte for byte, and the manifest's checksums
    assert _digests(out / "documents" / "03_shuffle") == _digests(
        clean / "documents" / "03_shuffle"
    )
    got, want = _digests(out / "tokens"), _digests(clean / "tokens")
    assert got == want, sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    assert manifest == json.loads((clean / "tokens" / "manifest.json").read_text())
    for shard in manifest["shards"]:
        for name, f in shard["files"].items():
            data = (out / "tokens" / name).read_bytes()
            assert len(data) == f["bytes"] and hashlib.sha256(data).hexdigest() == f["sha256"]
    assert not list(out.rglob(".tmp-*")), "half-written files left behind"
    assert not (out / "_state" / "work").exists() or not any((out / "_state" / "work").iterdir())


def _has_files(folder: Path) -> Callable[[], bool]:
    return lambda: folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def _start(cfg: Path, *extra: str) -> subprocess.Popen:
    """The CLI in its own process group; stderr goes to a file beside the config."""
    cmd = [sys.executable, "-m", "refine.cli", "run", str(cfg), "--no-progress", *extra]
    log = cfg.with_suffix(".stderr")
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            cmd, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=err
        )
    proc.log = log
    return proc


def _wait_for(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    deadline = time.time() + 300
    while not ready():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.log.read_text()[-2000:]}")
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _kill_run_when(proc: subprocess.Popen, ready: Callable[[], bool], what: str) -> None:
    _wait_for(proc, ready, what)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver, its scheduler, nannies, workers
    proc.wait(timeout=60)


def test_kill_during_minhash_then_during_tokenize_then_resume(tmp_path, clean):
    cfg, out = _config(tmp_path, "out")
    done = out / "_state" / "done"
    work = out / "_state" / "work"

    # 1. killed while MinHash writes its band files: extraction is complete, MinHash is not
    _kill_run_when(_start(cfg, "--workers", "2"), _has_files(work / "02_dedup_minhash"), "minhash")
    assert not (done / "02_dedup_minhash").exists() and not (out / "report.json").exists()
    extract_parts = len(list((done / "01_extract").glob("part-*.json")))
    assert extract_parts == len(list((clean / "_state" / "done" / "01_extract").glob("*.json")))
    extracted = _mtimes(out / "documents" / "01_extract")
    logged = _mtimes(out / "stages" / "01_extract")
    assert len(extracted) == extract_parts > 1

    # 2. the same command, killed while tokenize writes its token parts: MinHash and the
    #    shuffle are done (they are redone from the extract checkpoint, never from the WARC)
    _kill_run_when(_start(cfg, "--workers", "2"), _has_files(work / "04_tokenize"), "tokenize")
    assert (done / "02_dedup_minhash" / "part-global.json").exists()
    assert (done / "03_shuffle" / "part-global.json").exists()
    assert not (done / "04_tokenize").exists() and not (out / "tokens" / "manifest.json").exists()
    assert _mtimes(out / "documents" / "01_extract") == extracted, "extraction was redone"
    deduped = _mtimes(out / "documents" / "02_dedup_minhash")
    shuffled = _mtimes(out / "documents" / "03_shuffle")
    assert deduped and shuffled

    # 3. the same command again finishes: only tokenization runs
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    rep = report(out)
    assert rep["complete"] is True
    assert rep["parts"]["resumed"] == extract_parts + 2  # extract parts, minhash, shuffle
    assert rep["parts"]["total"] == extract_parts + 3
    assert _mtimes(out / "documents" / "01_extract") == extracted
    assert _mtimes(out / "stages" / "01_extract") == logged
    assert _mtimes(out / "documents" / "02_dedup_minhash") == deduped, "minhash was redone"
    assert _mtimes(out / "documents" / "03_shuffle") == shuffled, "the shuffle was redone"
    assert [s["docs_out"] for s in rep["stages"]] == [
        s["docs_out"] for s in report(clean)["stages"]
    ]
    _assert_same_output(out, clean)


def test_worker_killed_during_minhash_gives_identical_shards(tmp_path, clean):
    """SIGKILL one of two `dask worker` processes (nanny and worker) while MinHash shuffles its
    buckets: the scheduler moves the work to the other worker and the run completes with the
    same token shards as the undisturbed run."""
    cfg, out = _config(tmp_path, "out")
    with dask_cluster(2) as (address, workers):
        proc = _start(cfg, "--scheduler", address)
        _wait_for(proc, _has_files(out / "_state" / "work" / "02_dedup_minhash"), "minhash")
        os.killpg(workers[0].pid, signal.SIGKILL)
        proc.wait(timeout=600)
    assert proc.returncode == 0, proc.log.read_text()[-3000:]
    rep = report(out)
    assert rep["complete"] is True and rep["parts"]["resumed"] == 0
    _assert_same_output(out, clean)
