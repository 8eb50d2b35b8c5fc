"""Faults a long run meets: a worker killed with SIGKILL mid-run, and the same output whatever
the number of workers (issue 8)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support import REPO, dask_cluster, require_shared_data, run_cli, write_config

pytestmark = pytest.mark.integration

STAGES = "  - read: {slice_mb: 0.25}\n  - extract: {engine: trafilatura, timeout: 20}\n"


def _part_digests(out: Path) -> dict[str, str]:
    folder = out / "documents" / "01_extract"
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("part-*"))
    }


def test_worker_killed_mid_run_changes_nothing(tmp_path):
    """SIGKILL one of two workers (nanny and worker) mid-run: the run completes on the other,
    and every document part is byte-identical to an undisturbed run's."""
    data = require_shared_data()
    warc = str(data / "warc" / "web-pages-a.warc.gz")
    clean = tmp_path / "clean"
    cfg = write_config(tmp_path / "clean.yaml", [warc], clean, STAGES)
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]

    out = tmp_path / "killed"
    cfg = write_config(tmp_path / "killed.yaml", [warc], out, STAGES)
    with dask_cluster(2) as (address, workers):
        cmd = [
            sys.executable,
            "-m",
            "refine.cli",
            "run",
            str(cfg),
            "--scheduler",
            address,
            "--no-progress",
        ]
        run = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        done = out / "_state" / "done" / "01_extract"
        deadline = time.time() + 300
        while time.time() < deadline:
            if done.is_dir() and len(list(done.glob("part-*.json"))) >= 5:
                break
            assert run.poll() is None, run.communicate()[1][-2000:]
            time.sleep(0.2)
        os.killpg(workers[0].pid, signal.SIGKILL)  # the nanny and its worker, no goodbye
        stdout, stderr = run.communicate(timeout=600)
    assert run.returncode == 0, stderr[-3000:]
    assert _part_digests(out) == _part_digests(clean)
    assert not list(out.rglob(".tmp-*")), "half-written files left behind"


def _all_digests(out: Path) -> dict[str, str]:
    """Every document part of every stage, and every file under tokens/ (shards, manifest)."""
    files = sorted((out / "documents").rglob("part-*.parquet"))
    files += sorted(p for p in (out / "tokens").rglob("*") if p.is_file())
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_config_gives_byte_identical_documents_and_shards_with_1_2_4_workers(tmp_path):
    data = require_shared_data()
    inputs = [
        str(p) for p in sorted((data / "warc").glob("*.warc.gz")) if "web-pages" not in p.name
    ]
    stages = (
        "  - read: {slice_mb: 0.1}\n  - extract: {engine: resiliparse}\n"
        "  - url_filter: {}\n  - gopher_repetition: {}\n  - gopher_quality: {}\n  - c4: {}\n"
        "  - pii: {}\n  - dedup_url: {}\n  - dedup_exact: {}\n  - dedup_minhash: {}\n"
        "  - shuffle: {seed: 5, docs_per_part: 16}\n  - tokenize: {shard_tokens: 20000}\n"
    )
    digests = []
    for workers in (1, 2, 4):
        out = tmp_path / f"w{workers}"
        cfg = write_config(
            tmp_path / f"w{workers}.yaml", inputs, out, stages, "keep_intermediate: true\n"
        )
        r = run_cli("run", str(cfg), "--workers", str(workers), "--no-progress")
        assert r.returncode == 0, r.stderr[-2000:]
        digests.append(_all_digests(out))
    assert len(digests[0]) > 20  # every stage's parts
    shards = [k for k in digests[0] if k.startswith("tokens/") and k.endswith(".bin")]
    assert len(shards) > 4 and "tokens/manifest.json" in digests[0]
    assert digests[0] == digests[1] == digests[2]
