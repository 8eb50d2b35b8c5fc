"""scripts/bench_read_text.py runs on a tiny corpus and prints a coherent JSON line.

Timing targets are not asserted (they belong to the benchmark's own output and
docs/benchmarks.md): this checks that every contender ran on every format and that all of them
gave the same documents.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO, require_shared_data

pytest.importorskip("datatrove", reason="datatrove==0.10.1 not installed")

FORMATS = {"parquet", "dolma", "flat"}
CONTENDERS = {"bare", "bare_core", "refine", "refine_core", "datatrove"}
RATIOS = {
    "refine_vs_bare",
    "refine_core_vs_bare_core",
    "refine_vs_datatrove",
    "refine_core_vs_datatrove",
    "metadata_cost",
}


def test_bench_read_text_line(tmp_path):
    data = require_shared_data()
    if not (data / "text" / "cc-main-2019-30-en.jsonl.gz").is_file():
        pytest.skip("shared/data/text/cc-main-2019-30-en.jsonl.gz not found")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_read_text.py"),
            "--data",
            str(data),
            "--mb",
            "2",
            "--repeat",
            "1",
            "--inner",
            "1",
            "--work",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "read_text"
    assert set(result["formats"]) == FORMATS
    assert set(result["files"]) == FORMATS
    records, docs = result["records"], result["docs"]
    # ~2 MiB of dolma JSON: part of one copy of the 697 records, the empty texts dropped
    assert 100 < docs < records <= 697
    for fmt, entry in result["formats"].items():
        assert result["files"][fmt]["rows"] == records
        assert set(entry["contenders"]) == CONTENDERS
        for name, c in entry["contenders"].items():
            assert c["docs"] == docs, (fmt, name)
            assert c["chars"] == result["chars"], (fmt, name)
            assert c["cpu_s"] > 0 and c["wall_s"] > 0
            assert c["docs_per_cpu_s"] == pytest.approx(docs / c["cpu_s"], rel=0.05)
        assert set(entry["ratios"]) == RATIOS
        bare, refine = entry["contenders"]["bare"], entry["contenders"]["refine"]
        datatrove = entry["contenders"]["datatrove"]
        ratios = entry["ratios"]
        assert ratios["refine_vs_bare"]["ratio"] == pytest.approx(
            refine["cpu_s"] / bare["cpu_s"], rel=0.05
        )
        assert ratios["refine_vs_datatrove"]["ratio"] == pytest.approx(
            datatrove["cpu_s"] / refine["cpu_s"], rel=0.05
        )
        assert set(entry["targets_met"]) == {"refine_vs_bare<=1.10", "refine_vs_datatrove>=2"}
        assert entry["bare_loop"]
    assert result["files"]["parquet"]["compression"] == "SNAPPY"
