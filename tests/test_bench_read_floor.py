"""scripts/bench_read_floor.py on the shared dolma sample: every contender runs and the parse
reads every record (timings are the benchmark's business, not asserted)."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest
from support import REPO, require_shared_data


def test_bench_read_floor_line():
    path = require_shared_data() / "text" / "cc-main-2019-30-en.jsonl.gz"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    contenders = "inflate,inflate_parse,refine,refine_core"
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_read_floor.py"), str(path)]
        + ["--repeat", "1", "--contenders", contenders],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["bench"] == "read_floor"
    figures = result["files"][path.name]
    for who in contenders.split(","):
        assert figures[who] > 0, who
    with gzip.open(path, "rb") as f:
        lines = sum(1 for line in f if line.strip())
    assert figures["records_parsed"] == lines
