"""Stage statistics add up the same whatever order the parts finish in, and stay bounded."""

from __future__ import annotations

import random

from refine.pipeline.runner import SegmentOutcome
from refine.pipeline.stats import MAX_ERROR_SAMPLES, StageStats


def part_stats(i: int) -> list[dict]:
    read = StageStats("read", docs_in=10, docs_out=8, parts=1)
    read.drop("corrupt_record", 2)
    for k in range(3):  # 3 problems per part: more than MAX_ERROR_SAMPLES over the run
        read.error("corrupt_record", f"file-{i:05d}.warc.gz#{k * 100}", f"bad member {k}")
    extract = StageStats("extract", docs_in=8, docs_out=7, parts=1)
    extract.drop("no_text")
    return [read.to_dict(), extract.to_dict()]


def test_segment_totals_do_not_depend_on_completion_order():
    results = [{"part": str(i), "stats": part_stats(i)} for i in range(200)]
    reports = []
    for seed in range(3):
        order = results[:]
        random.Random(seed).shuffle(order)
        out = SegmentOutcome(total=len(order))
        for r in order:
            out.add(r)
        assert out.done == 200 and len(out.stats) == 2  # one sum per stage, not one per part
        reports.append([s.to_dict() for s in out.stats])
    assert reports[0] == reports[1] == reports[2]
    read, extract = reports[0]
    assert (read["docs_in"], read["docs_out"], read["dropped"]) == (
        2000,
        1600,
        {"corrupt_record": 400},
    )
    assert (extract["docs_in"], extract["docs_out"], read["parts"]) == (1600, 1400, 200)
    # the kept examples are the first by source, whichever parts finished first
    assert len(read["errors"]) == MAX_ERROR_SAMPLES
    assert read["errors"][0]["source"] == "file-00000.warc.gz#0"
    sources = [e["source"] for e in read["errors"]]
    assert sources == sorted(sources)
