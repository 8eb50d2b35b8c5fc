"""scripts/cpu_by_process.py: each process of the tree is counted once, under its role, and the
command's own stdout does not spoil the one JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from support import REPO

# a parent that prints, then waits for a child that burns ~0.6 CPU-s; both live for >1 s
COMMAND = """
import subprocess, sys, time
print("the command's own output")
child = subprocess.Popen([sys.executable, "-c", "import time\\nt = time.process_time()\\n"
    "while time.process_time() - t < 0.6: pass\\ntime.sleep(0.5)"])
child.wait()
time.sleep(0.3)
"""


def test_counts_the_driver_and_its_child_and_prints_one_json_line():
    out = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "cpu_by_process.py"),
            "--",
            sys.executable,
            "-c",
            COMMAND,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    line = json.loads(out.stdout)  # only the JSON line on stdout
    assert "the command's own output" in out.stderr
    assert line["returncode"] == 0
    procs = line["processes"]
    assert len(procs) == 2 and len({p["pid"] for p in procs}) == 2
    driver = next(p for p in procs if p["role"] == "driver")
    child = next(p for p in procs if p is not driver)
    assert child["role"] == os.path.basename(sys.executable)  # no Dask role: its executable
    assert 0.4 <= child["cpu"] <= 2.0  # the 0.6 CPU-s it burned, sampled every 0.05 s
    assert abs(line["cpu_seconds_sampled"] - sum(p["cpu"] for p in procs)) < 0.02
    assert line["by_role"][child["role"]] == child["cpu"]
    # wait4's total of the waited-for tree is the upper reference of the sampled total
    assert line["cpu_seconds_rusage"] >= line["cpu_seconds_sampled"] - 0.05
