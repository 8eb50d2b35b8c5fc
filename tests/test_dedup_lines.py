"""dedup_lines: lines repeated across the corpus more than N times are removed everywhere;
ground truth computed here independently of the stage."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from distributed import Client

from refine.dedup.lines import DedupLines, normalize_line
from refine.pipeline.stage import GlobalContext

BOILER = "Copyright 2024 Example Corp. All rights reserved."
SOMETIMES = "Subscribe to our newsletter for weekly updates"


def corpus() -> list[tuple[str, str]]:
    docs = []
    for i in range(24):
        lines = [f"Unique paragraph number {i} talks about its own subject at length."]
        if i % 2 == 0:
            lines.append(BOILER if i % 4 else BOILER.upper())  # case differs: same line
        if i < 3:
            lines.append(SOMETIMES)  # 3 times: under the limit, kept
        lines.append("short")  # under min_chars: never removed
        docs.append((f"d{i:02d}", "\n".join(lines)))
    docs.append(("only-boiler", BOILER + "\n  " + BOILER.lower() + "  "))
    return docs


def expected(docs, max_occurrences=6, min_chars=20):
    """The corpus-wide rule: one bucket (see expected_by_bucket below)."""
    return expected_by_bucket(docs, 1, max_occurrences, min_chars)


def run_stage(tmp_path: Path, docs, n_parts: int, workers: int, **params):
    inp, out, logs = tmp_path / "in", tmp_path / "out", tmp_path / "logs"
    inp.mkdir()
    size = -(-len(docs) // n_parts)
    for k in range(n_parts):
        chunk = docs[k * size : (k + 1) * size]
        pq.write_table(
            pa.table(
                {
                    "id": [d for d, _ in chunk],
                    "url": [f"http://x/{d}" for d, _ in chunk],
                    "text": pa.array([t for _, t in chunk], pa.large_string()),
                    "source": ["s"] * len(chunk),
                }
            ),
            inp / f"part-{k:05d}.parquet",
        )
    stage = DedupLines(DedupLines.Params(**params))
    with Client(
        processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
    ) as c:
        stats = stage.run(GlobalContext(str(inp), str(out), str(logs), str(tmp_path / "work"), c))
    table = pq.read_table(out)
    return stats, dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True)), logs


# single_task_rows None: the default, one task for the counts (small data); 0: Dask's shuffles
@pytest.mark.parametrize(
    "n_parts, workers, single", [(1, 1, None), (5, 2, None), (5, 2, 0), (9, 4, 0)]
)
def test_repeated_lines_removed_everywhere_and_result_independent_of_partitions(
    tmp_path, n_parts, workers, single
):
    docs = corpus()
    params = {} if single is None else {"single_task_rows": single}
    stats, got, logs = run_stage(tmp_path, docs, n_parts, workers, **params)
    assert stats.counters["flags_one_task"] == (single is None)
    assert got == expected(docs)
    assert "only-boiler" not in got
    assert all(BOILER.lower() not in t.lower() for t in got.values())
    assert sum(SOMETIMES in t for t in got.values()) == 3
    assert stats.dropped == {"empty_after_line_dedup": 1}
    assert stats.counters["lines_removed"] == 12 + 2
    stats.check_balance()
    log = pq.read_table(logs).to_pylist()
    assert sum(r["lines_removed"] for r in log) == 14
    assert len(log) == len(docs)
    # the most repeated removed lines, with their corpus count, whatever the partitioning
    counts = Counter(
        normalize_line(line) for _, t in docs for line in t.split("\n") if len(line.strip()) >= 20
    )
    frequent = sorted((-n, line) for line, n in counts.items() if n > 6)
    assert [(-e["count"], normalize_line(e["line"])) for e in stats.examples] == frequent
    assert stats.counters["repeated_lines"] == len(frequent) == 1
    with_boiler = [d for d, t in docs if BOILER.lower() in t.lower()]
    assert stats.examples[0]["id"] == min(with_boiler)  # the smallest id it was removed from


def test_limit_is_a_param(tmp_path):
    docs = corpus()
    _, got, _ = run_stage(tmp_path, docs, 3, 1, max_occurrences=20)
    assert got == dict(docs)  # nothing occurs more than 20 times


HOT = "Skip to main content and browse the site navigation menu"
EDGE_KEPT = "Share this article with your friends on social media"
EDGE_REMOVED = "Sign up for the daily briefing delivered to your inbox"


def hot_corpus(n_docs: int = 420, limit: int = 6) -> list[tuple[str, str]]:
    """One boilerplate line in every document (a third have it twice, in another case and
    spacing), one line exactly ``limit`` times (kept) and one ``limit + 1`` times (removed)."""
    docs = []
    for i in range(n_docs):
        lines = [HOT if i % 2 else "  " + HOT.upper()]
        if i % 5:
            lines.append(f"Document {i} has a paragraph of its own about topic {i * 7919 % 1009}.")
        if i % 3 == 0:
            lines.append(HOT.lower().replace(" ", "   "))
        if i % 71 == 0:
            lines.append(EDGE_KEPT)
        if i % 60 == 0:
            lines.append(EDGE_REMOVED)
        docs.append((f"h{(i * 37) % n_docs:04d}", "\n".join(lines)))
    assert sum(EDGE_KEPT in t for _, t in docs) == limit
    assert sum(EDGE_REMOVED in t for _, t in docs) == limit + 1
    return docs


@pytest.mark.parametrize(
    "n_parts, workers, single", [(1, 1, 0), (3, 2, 0), (7, 2, 0), (7, 2, None)]
)
def test_a_line_in_every_document_is_shuffled_as_one_row_per_part(
    tmp_path, n_parts, workers, single
):
    """Issue 5: a boilerplate line in every document must not bring all its occurrences to one
    shuffled partition; each part sends its own count, so the line's rows in the shuffle are
    at most the number of parts, and the result is the same as counting every occurrence
    (also on the one-task path, whose rows per line are counted the same way)."""
    docs = hot_corpus()
    params = {} if single is None else {"single_task_rows": single}
    stats, got, logs = run_stage(tmp_path, docs, n_parts, workers, **params)
    assert stats.counters["flags_one_task"] == (single is None)
    assert got == expected(docs)
    counts = Counter(
        normalize_line(line) for _, t in docs for line in t.split("\n") if len(line.strip()) >= 20
    )
    hot = normalize_line(HOT)
    occurrences = counts[hot]
    assert occurrences == 420 + 140
    # the hot line is in every part: one shuffled row per part, never one per occurrence
    assert stats.counters["max_rows_per_line_key"] == n_parts
    assert stats.counters["max_rows_per_line_key"] < occurrences
    frequent = sorted((-n, line) for line, n in counts.items() if n > 6)
    assert [(-e["count"], normalize_line(e["line"])) for e in stats.examples] == frequent
    assert stats.counters["repeated_lines"] == len(frequent) == 2
    assert stats.examples[0]["id"] == min(d for d, _ in docs)  # the hot line is in all of them
    with_edge = [d for d, t in docs if EDGE_REMOVED in t]
    assert stats.examples[1]["id"] == min(with_edge)
    assert stats.counters["lines_removed"] == occurrences + 7
    emptied = {d for d, _ in docs} - set(expected(docs))  # every line of theirs repeated
    assert stats.dropped == {"empty_after_line_dedup": len(emptied)} and emptied
    stats.check_balance()
    log = {r["id"]: r for r in pq.read_table(logs).to_pylist()}
    assert len(log) == len(docs)
    for doc_id, text in docs:
        removed = sum(
            counts[normalize_line(x)] > 6 for x in text.split("\n") if len(x.strip()) >= 20
        )
        assert log[doc_id]["lines_removed"] == removed
        assert log[doc_id]["kept"] == (doc_id not in emptied)


def test_each_part_shuffles_one_row_per_distinct_line(tmp_path):
    """Phase 1 combines before the shuffle: a part's shuffled rows are its distinct lines, each
    with its number of occurrences in the part (ground truth: a Counter over the part)."""
    docs = hot_corpus()[:90]
    part = tmp_path / "part-00000.parquet"
    pq.write_table(
        pa.table({"id": [d for d, _ in docs], "text": pa.array([t for _, t in docs])}), part
    )
    stage = DedupLines(DedupLines.Params())
    stage._write_keys(str(part), str(tmp_path / "keys"), str(tmp_path / "lines"))
    keys = pq.read_table(tmp_path / "keys" / "part-00000.parquet").to_pylist()
    by_line = Counter(
        normalize_line(x) for _, t in docs for x in t.split("\n") if len(x.strip()) >= 20
    )
    assert sorted(r["count"] for r in keys) == sorted(by_line.values())
    assert len({r["key"] for r in keys}) == len(keys) == len(by_line)
    assert {r["part"] for r in keys} == {"part-00000"}
    assert max(r["count"] for r in keys) == by_line[normalize_line(HOT)] == 90 + 30
    occurrences = pq.read_table(tmp_path / "lines" / "part-00000.parquet")
    assert occurrences.num_rows == sum(by_line.values())  # kept beside the part, not shuffled


def expected_by_bucket(docs, buckets, max_occurrences=6, min_chars=20):
    """Llama 3's rule computed here: counts per bucket of documents (bucket from the id)."""
    from refine.dedup.lines import bucket_of

    bucket = {d: bucket_of(d, buckets) for d, _ in docs}
    counts = Counter(
        (bucket[d], normalize_line(line))
        for d, text in docs
        for line in text.split("\n")
        if len(line.strip()) >= min_chars
    )
    out = {}
    for doc_id, text in docs:
        kept = [
            line
            for line in text.split("\n")
            if len(line.strip()) < min_chars
            or counts[(bucket[doc_id], normalize_line(line))] <= max_occurrences
        ]
        new = "\n".join(kept)
        if new.strip() or new == text:
            out[doc_id] = new
    return out


@pytest.mark.parametrize("n_parts, workers, single", [(1, 1, None), (5, 2, 0)])
def test_bucket_docs_counts_lines_per_bucket_as_llama3(tmp_path, n_parts, workers, single):
    """200 documents in buckets of 50 (4 buckets): a line in 20 documents overall but at most
    6 of any bucket stays; one in 40 documents goes from the buckets where it passes 6."""
    spread = "A footer line that is spread thinly over the whole corpus here"
    dense = "A navigation line that appears in many documents of this corpus"
    docs = []
    for i in range(200):
        lines = [f"Unique paragraph number {i} talks about its own subject at length."]
        if i % 10 == 0:
            lines.append(spread)  # 20 documents
        if i % 5 == 0:
            lines.append(dense)  # 40 documents
        docs.append((f"doc-{i:03d}", "\n".join(lines)))
    params = {"bucket_docs": 50} if single is None else {"bucket_docs": 50, "single_task_rows": 0}
    stats, got, _ = run_stage(tmp_path, docs, n_parts, workers, **params)
    assert stats.counters["buckets"] == 4
    want = expected_by_bucket(docs, 4)
    assert got == want
    assert want != expected(docs)  # the rule differs from the corpus-wide count here
    kept_spread = sum(spread in t for t in got.values())
    assert 0 < kept_spread  # under the limit in some bucket: kept there
    (tmp_path / "one").mkdir()
    one_bucket, _, _ = run_stage(tmp_path / "one", docs, n_parts, workers)
    assert one_bucket.counters["buckets"] == 1  # the default 30M: one bucket, the corpus count
