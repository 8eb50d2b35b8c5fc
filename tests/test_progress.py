"""The live progress display as a terminal of a given width shows it: every line fits, and the bar,
the parts done, the documents kept and the rate are all there."""

from __future__ import annotations

import io
import itertools
import re

import pytest
from rich.cells import cell_len
from rich.console import Console

from refine.pipeline.progress import RichProgress

# the map stages of configs/sample.yaml, fused into one segment
SAMPLE_CHAIN = (
    "read+extract+url_filter+language+gopher_repetition+gopher_quality+c4+fineweb+"
    "llama3_heuristics+perplexity+quality_classifier+model_classifier+pii+decontaminate"
)


@pytest.mark.parametrize("width", [100, 80])
def test_fused_chain_bar_fits_the_terminal(monkeypatch, width):
    clock = itertools.count(0, 0.2)  # seconds: 0.2 per part, 100 s for 500 parts
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    out = io.StringIO()
    bar = RichProgress(Console(file=out, width=width))(SAMPLE_CHAIN, 1200)
    for _ in range(500):
        bar.advance(12_345, 20_000)
    bar.close()
    lines = out.getvalue().splitlines()
    assert all(cell_len(x) <= width for x in lines), lines
    line = next(x for x in lines if "parts" in x)
    assert line.startswith("━━━━━") and "500/1200 parts" in line, line
    assert "kept 6,172,500 (61.7%)" in line and "61,725 docs/s" in line, line
    assert re.search(r"docs/s \d+:\d\d:\d\d$", line), line  # then the elapsed time
    header = " ".join(" ".join(lines[: lines.index(line)]).split())  # wrapped over lines
    assert header.split(" + ") == SAMPLE_CHAIN.split("+")


@pytest.mark.parametrize("width", [100, 80])
def test_global_stage_phases_fit_the_terminal(width):
    out = io.StringIO()
    display = RichProgress(Console(file=out, width=width)).global_stage("dedup_substring")
    for label in ("index part", "candidate owners", "apply"):
        done = display.phase(label, 1234)
        for _ in range(1000):
            done()
    display.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(cell_len(x) <= width for x in lines), lines
    for line in lines:
        assert line.startswith("dedup_substring · ") and "━━━━━" in line, line
        assert "1000/1234 tasks" in line, line
