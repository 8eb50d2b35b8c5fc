"""scripts/bench_vs_datatrove.py runs end to end on a real WARC slice and prints a coherent line.

Timing targets are not asserted here (they live in the benchmark's own output and
docs/benchmarks.md); this checks that both tools ran on the same pages, that the kept sets were
compared, and that the numbers in the line agree with each other and with the input.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from support import REPO, require_shared_data

pytest.importorskip("datatrove", reason="datatrove==0.10.1 not installed")
pytest.importorskip("psutil", reason="psutil not installed")

pytestmark = pytest.mark.integration

MAX_RECORDS = 30


def _html_pages(warc, limit: int) -> int:
    """Independent count: HTML responses among the first ``limit`` response records (warcio)."""
    from warcio.archiveiterator import ArchiveIterator

    pages = responses = 0
    with open(warc, "rb") as f:
        for rec in ArchiveIterator(f):
            if rec.rec_type != "response":
                continue
            responses += 1
            if "html" in (rec.http_headers.get_header("Content-Type") or ""):
                pages += 1
            if responses >= limit:
                break
    return pages


def test_bench_vs_datatrove_line(tmp_path):
    data = require_shared_data()
    warc = data / "warc" / "web-pages-a.warc.gz"
    if not warc.is_file():
        pytest.skip(f"{warc} not found")
    keep = tmp_path / "keep"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_vs_datatrove.py"),
            "--input",
            str(warc),
            "--max-records",
            str(MAX_RECORDS),
            "--repeat",
            "1",
            "--workers",
            "1",
            "--keep",
            str(keep),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[-2000:]
    r = json.loads(lines[0])

    pages = _html_pages(warc, MAX_RECORDS)
    assert pages > 0
    assert r["pages"] == pages
    assert r["workers"] == 1 and r["max_records"] == MAX_RECORDS
    # both tools saw exactly the pages of the cut input
    assert r["refine"]["pages_in"] == pages
    assert r["datatrove"]["pages_in"] == pages

    for side in ("refine", "datatrove", "bare_trafilatura"):
        s = r[side]
        assert s["seconds"] > 0
        assert s["docs_per_s"] == pytest.approx(pages / s["seconds"], rel=0.02)
    for side in ("refine", "datatrove"):
        s = r[side]
        assert s["kept"] > 0
        assert 0 < s["peak_rss_mb"] < 16 * 1024
        assert s["process_seconds"] >= s["seconds"]
    assert r["ratio"] == pytest.approx(
        r["refine"]["docs_per_s"] / r["datatrove"]["docs_per_s"], rel=0.02
    )
    assert r["refine_overhead_vs_bare"] == pytest.approx(
        r["bare_trafilatura"]["docs_per_s"] / r["refine"]["docs_per_s"] - 1, abs=0.02
    )

    # agreement: recompute it from the two kept outputs the script left behind
    import gzip

    import pyarrow.parquet as pq

    report = json.loads((keep / "refine" / "refine_out" / "report.json").read_text())
    final = report["stages"][-1]
    assert final["name"] == "dedup_minhash"
    # refine ran with the survivor rule closest to datatrove's, and says so
    config = json.loads((keep / "refine" / "refine.yaml").read_text())
    assert r["minhash_keep"] == "first"
    assert config["stages"][-1] == {"dedup_minhash": {"keep": "first"}}
    ours = set(
        pq.read_table(keep / "refine" / "refine_out" / "documents" / final["folder"])[
            "id"
        ].to_pylist()
    )
    theirs = set()
    for path in (keep / "datatrove" / "datatrove" / "deduped").glob("*.jsonl.gz"):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            theirs.update(json.loads(line)["id"] for line in f)
    a = r["agreement"]
    assert a["both"] == len(ours & theirs) > 0
    assert a["refine_only"] == len(ours - theirs)
    assert a["datatrove_only"] == len(theirs - ours)
    assert a["jaccard"] == pytest.approx(len(ours & theirs) / len(ours | theirs), abs=1e-4)
    assert r["refine"]["kept"] == len(ours) and r["datatrove"]["kept"] == len(theirs)
    # restricted to the pages both readers produced (refine's read log: kept rows)
    read_log = pq.read_table(keep / "refine" / "refine_out" / "stages" / "00_read")
    read_ids = set(read_log.filter(read_log["kept"])["id"].to_pylist())
    assert 0 < a["common_input_pages"] <= len(read_ids)
    mine, yours = ours & read_ids, theirs & read_ids
    assert a["refine_only_common_input"] <= len(mine - yours)
    assert 0.0 <= a["jaccard_common_input"] <= 1.0
    # each of refine's near-duplicate clusters counted once: refine keeps one id per cluster, so
    # mapping ids to their cluster's survivor can only merge, never split, documents
    assert a["jaccard_common_input"] <= a["jaccard_common_input_by_cluster"] <= 1.0
    # every stage of the chain is in refine's per-stage profile
    assert list(r["refine_stages"]) == [
        "read",
        "extract",
        "language",
        "gopher_repetition",
        "gopher_quality",
        "c4",
        "fineweb",
        "dedup_minhash",
    ]
    assert r["refine_stages"]["read"]["docs_in"] == MAX_RECORDS


def test_bench_vs_datatrove_prefilter_and_fixed_cost():
    """--refine-prefilter is reported as such and its skipped pages as extract drops;
    --fixed-cost measures each side on a small whole file and takes it out per page."""
    data = require_shared_data()
    warc = data / "warc" / "web-pages-a.warc.gz"
    small = data / "warc" / "wget-sample-0001.warc.gz"
    if not warc.is_file() or not small.is_file():
        pytest.skip(f"{warc} or {small} not found")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "bench_vs_datatrove.py"),
            "--input", str(warc), "--max-records", str(MAX_RECORDS),
            "--repeat", "1", "--workers", "1",
            "--refine-prefilter", "--fixed-cost", "--fixed-input", str(small),
        ],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["refine_prefilter"] is True
    extract = r["refine_stages"]["extract"]
    assert extract["dropped"].get("language_prefilter", 0) > 0  # web-pages-a is mostly German
    fixed = r["fixed_cost"]
    assert fixed["input"] == small.name and fixed["pages"] > 0
    for side in ("refine", "datatrove"):
        assert fixed[side]["pages"] == fixed["pages"] and fixed[side]["cpu_seconds"] > 0
        per_page = fixed[f"{side}_cpu_ms_per_page_without_fixed"]
        expected = (r[side]["cpu_seconds"] - fixed[side]["cpu_seconds"]) / (
            r["pages"] - fixed["pages"]
        )
        rounding = 1000 * 0.011 / (r["pages"] - fixed["pages"])  # both CPU figures are rounded
        assert per_page == pytest.approx(1000 * expected, abs=rounding + 0.01)
