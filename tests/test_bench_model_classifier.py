"""scripts/bench_model_classifier.py runs and measures both sides (a smoke run: 1 layer)."""

from __future__ import annotations

import json

import pytest
from support import REPO, require_shared_data

pytest.importorskip("transformers")


def test_bench_model_classifier_smoke():
    import subprocess
    import sys

    require_shared_data()
    r = subprocess.run(
        [sys.executable, "scripts/bench_model_classifier.py", "--docs", "4", "--batch-size", "2",
         "--layers", "1", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["docs"] == 4 and out["threads"] == 1
    assert out["plain_fp32_docs_per_cpu_s"] > 0 and out["refine_docs_per_cpu_s"] > 0
    assert out["max_abs_score_diff"] < 0.01  # bf16 where the CPU has it, else fp32 (0)
