"""scripts/bench_scale.py on a tiny generated corpus: every global stage measured, the truth
scored. Sizes and targets belong to the benchmark (docs/scaling.md), not to this test."""

from __future__ import annotations

import json
import subprocess
import sys

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
