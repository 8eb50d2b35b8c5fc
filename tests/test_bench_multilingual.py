"""scripts/bench_multilingual.py runs on one small WARC and prints coherent JSON lines.

Speed targets are not asserted (they belong to the benchmark's output and docs/benchmarks.md):
this checks that every side ran on both languages and that refine and datatrove decided alike.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO, require_shared_data

pytest.importorskip("datatrove", reason="datatrove==0.10.1 not installed")
pytest.importorskip("jieba", reason="datatrove's Chinese tokenizer needs jieba (the test extra)")


def test_bench_multilingual_lines():
    data = require_shared_data()
    warc = data / "warc" / "cc-main-2020-34-sample.warc.gz"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_multilingual.py"), "--input", str(warc)]
        + ["--repeat", "2", "--min-mb", "0.02"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    *per_language, summary = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["language"] for r in per_language] == ["deu_Latn", "cmn_Hani"]
    for r in per_language:
        assert r["docs"] > 0 and r["mb"] >= 0.02 and r["replicated"] >= 1
        assert r["agreement"] == 1.0 and r["kept"]["refine"] == r["kept"]["datatrove"]
        assert len(r["ratio_cpu_by_round"]) == 2 and r["ratio_cpu"] > 0
        assert set(r["cpu_seconds"]) == {"refine", "before", "datatrove"}
    assert set(summary["languages"]) == {"deu_Latn", "cmn_Hani"}
    assert isinstance(summary["target_met"], bool)
