"""scripts/bench_scale.py on a tiny generated corpus: every global stage measured, the truth
scored. Sizes and targets belong to the benchmark (docs/scaling.md), not to this test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO, require_shared_data

sys.path.insert(0, str(REPO / "scripts"))
from bench_scale import STAGES  # noqa: E402


def test_bench_scale_line(tmp_path):
    require_shared_data()
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_scale.py"), "--docs", "400"]
        + ["--root", str(tmp_path), "--modes", "distributed", "--workers", "1", "--json"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    assert run["docs"] == 400 and run["documents_read"] == 400 and not run["one_task_paths"]
    assert list(run["stages"]) == list(STAGES) and len(STAGES) == 7
    for name, m in run["stages"].items():
        assert m["cpu_seconds"] > 0 and m["wall_seconds"] > 0, name
        assert m["driver_peak_rss_mb"] > 50 and m["worker_peak_rss_mb"] > 50, name
        assert 0 < m["docs_out"] <= m["docs_in"] <= 400, name
    minhash = run["stages"]["dedup_minhash"]["counters"]
    assert minhash["cc_converged"] == 1 and "cc_one_task" not in minhash  # distributed path
    truth = run["minhash"]
    assert truth["clusters"] > 0 and truth["exactly_one_share"] >= 0.8
    assert truth["false_removal_share"] <= 0.01
    assert not (tmp_path / "out-400-distributed").exists()  # outputs removed unless kept


def test_bench_scale_vs_datatrove(tmp_path):
    """``--vs-datatrove``: datatrove's four MinHash stages on the documents dedup_minhash got."""
    require_shared_data()
    pytest.importorskip("datatrove", reason="datatrove==0.10.1 not installed")
    pytest.importorskip("psutil", reason="psutil not installed")
    names = ["dedup_url", "dedup_exact", "dedup_minhash"]
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_scale.py"), "--docs", "1000"]
        + ["--root", str(tmp_path), "--modes", "distributed", "--workers", "1", "--json"]
        + ["--vs-datatrove", "--stages", *names[::-1]],  # run in STAGES order whatever the order
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = json.loads(proc.stdout.strip().splitlines()[-1])["runs"]
    assert list(run["stages"]) == names and run["minhash"]["clusters"] > 0
    minhash = run["stages"]["dedup_minhash"]
    vs = run["vs_datatrove"]
    dt = vs["datatrove"]
    for name in ("minhash_1", "minhash_2", "minhash_3", "minhash_4"):
        assert dt[name]["cpu_seconds"] > 0 and dt[name]["wall_seconds"] > 0, name
        assert 50 < dt[name]["peak_rss_mb"] <= dt[name]["tree_peak_rss_mb"], name
        assert dt[name]["peak_rss_mb"] <= dt["largest_peak_rss_mb"], name
    assert dt["cpu_seconds"] > dt["cpu_seconds_without_fixed"] > 0
    assert vs["refine_dedup_minhash"]["cpu_seconds"] > 0 and vs["cpu_ratio"] > 0
    assert vs["refine_dedup_minhash"]["worker_peak_rss_mb"] == minhash["worker_peak_rss_mb"]
    # the same documents on both sides; each removal counted once
    assert (
        vs["documents"] == minhash["docs_in"] == dt["steps"]["minhash_4.minhash_stage_4"]["total"]
    )
    removed = vs["removed"]
    assert removed["refine"] == minhash["docs_in"] - minhash["docs_out"]
    assert removed["datatrove"] == dt["steps"]["minhash_4.minhash_stage_4"]["dropped"] > 0
    assert 0 < removed["both"] <= min(removed["refine"], removed["datatrove"])
    differ = (
        removed["refine_clusters_without_datatrove_survivor"] + removed["datatrove_extra_survivors"]
    )
    assert 0 <= differ <= 0.1 * removed["refine"]
    truth = vs["datatrove_minhash_truth"]
    assert truth["clusters"] == run["minhash"]["clusters"]
    for key in ("exactly_one_share", "false_removal_share"):
        assert 0 <= truth[key] <= 1, key
    assert truth["exactly_one_share"] >= 0.8 and truth["false_removal_share"] <= 0.01
    assert not (tmp_path / "datatrove-1000-distributed").exists()  # removed unless kept


def test_bench_scale_vs_datatrove_needs_minhash(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_scale.py"), "--docs", "100"]
        + ["--root", str(tmp_path), "--vs-datatrove", "--stages", "dedup_url"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "include it in --stages" in proc.stderr
    assert not list(tmp_path.iterdir())  # refused before any corpus or run
