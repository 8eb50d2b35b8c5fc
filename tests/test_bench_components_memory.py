"""scripts/bench_components_memory.py on a few thousand edges: the synthetic edge list is what
the stage writes (a < b, the shapes it plants), and both modes (all rounds, first round only)
report. The memory figures belong to the benchmark (docs/scaling.md), not to this test."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from support import REPO

sys.path.insert(0, str(REPO / "scripts"))
from bench_components_memory import make_edges  # noqa: E402


def test_edges_are_ordered_distinct_and_shaped(tmp_path):
    n = make_edges(tmp_path / "e", 20_000, 3)
    t = pq.read_table(tmp_path / "e")
    assert t.num_rows == n >= 20_000 and len(list((tmp_path / "e").iterdir())) == 3
    assert pc.all(pc.less(t["a"], t["b"])).as_py()
    pairs = pc.binary_join_element_wise(t["a"], t["b"], "|")
    assert pc.count_distinct(pairs).as_py() == n
    names = pa.chunked_array(t["a"].chunks + t["b"].chunks)
    counts = pc.value_counts(names).field("counts").to_numpy()
    assert counts.max() == 20_000 // 40  # the giant star's hub: 1 of every 40 edges asked for
    assert (counts == 2).sum() > 1000  # chains: nodes with two links


def test_line_reports_rounds_and_peaks(tmp_path):
    def run(*extra):
        proc = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "bench_components_memory.py")]
            + ["--edges", "3000", "--per-partition", "1000", "--work", str(tmp_path), *extra],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])["runs"][0]

    full, first = run(), run("--rounds", "1")
    assert full["converged"] is True and full["rounds_run"] >= 2
    assert first["converged"] is None and first["rounds_run"] == 1
    for r in (full, first):
        assert r["npartitions"] == 4 and r["edges_per_partition"] <= 1000
        assert r["worker_peak_mb"] >= r["worker_start_mb"] > 20
