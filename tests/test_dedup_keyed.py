"""dedup_url and dedup_exact: which documents survive, independent of partitioning."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow.parquet as pq
import pytest
from distributed import Client
from warcgen import record, write_warc

from refine.dedup.keyed import normalize_url
from refine.pipeline.config import PipelineConfig
from refine.pipeline.runner import Runner

PAGE = "<html><body><article><p>{}</p></article></body></html>"


@pytest.mark.parametrize(
    "url, expected",
    [
        ("HTTP://WWW.Example.COM", "http://example.com/"),
        ("https://example.com:443/a?b=1#frag", "http://example.com/a?b=1"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("https://example.com/a/", "http://example.com/a/"),
        ("https://example.com:8443/", "http://example.com:8443/"),
        ("", None),
        ("not a url", "not a url"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_normalize_url(url, expected):
    assert normalize_url(url) == expected


def _corpus(path):
    """(id, url, date, text): planted URL duplicates and text duplicates, plus unique pages."""
    docs = [
        (
            "<urn:uuid:a1>",
            "http://news.example/story",
            datetime(2020, 1, 1, tzinfo=UTC),
            "old story text version one",
        ),
        (
            "<urn:uuid:a2>",
            "https://www.news.example/story#top",
            datetime(2023, 5, 1, tzinfo=UTC),
            "new story text version two",
        ),
        (
            "<urn:uuid:a3>",
            "http://NEWS.example/story",
            datetime(2021, 3, 1, tzinfo=UTC),
            "middle story text version three",
        ),
        (
            "<urn:uuid:b2>",
            "http://copy.example/1",
            datetime(2022, 1, 1, tzinfo=UTC),
            "The same   article text copied",
        ),
        (
            "<urn:uuid:b1>",
            "http://copy.example/2",
            datetime(2022, 1, 1, tzinfo=UTC),
            "the same article text copied",
        ),
        (
            "<urn:uuid:b3>",
            "http://copy.example/3",
            datetime(2022, 1, 1, tzinfo=UTC),
            "The same article text copied!",
        ),
    ]
    docs += [
        (
            f"<urn:uuid:u{i:02d}>",
            f"http://unique.example/{i}",
            datetime(2022, 1, 1, tzinfo=UTC),
            f"unique page number {i} with its own words",
        )
        for i in range(20)
    ]
    write_warc(
        path,
        [
            record("response", u, PAGE.format(t).encode(), record_id=i, date=d)
            for i, u, d, t in docs
        ],
    )
    return docs


def _run(warc, out, slice_mb, workers):
    cfg = PipelineConfig(
        input=[str(warc)],
        output=str(out),
        stages=[
            {"read": {"slice_mb": slice_mb}},
            {"extract": {"engine": "resiliparse"}},
            {"dedup_url": {}},
            {"dedup_exact": {}},
        ],
    )
    with Client(
        processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
    ) as c:
        return Runner.prepare(cfg).run(c)


def test_survivors_and_reasons(tmp_path):
    warc = tmp_path / "a.warc.gz"
    _corpus(warc)
    summary = _run(warc, tmp_path / "out", 1, 1)
    final = pq.read_table(tmp_path / "out" / "documents" / "03_dedup_exact")
    ids = set(final["id"].to_pylist())
    # the most recent capture of the URL survives; of the identical texts, the smallest id
    assert "<urn:uuid:a2>" in ids and not {"<urn:uuid:a1>", "<urn:uuid:a3>"} & ids
    assert "<urn:uuid:b1>" in ids and "<urn:uuid:b2>" not in ids
    assert "<urn:uuid:b3>" in ids  # punctuation differs: not an exact duplicate
    assert len(ids) == 1 + 2 + 20
    url, exact = summary.report["stages"][2], summary.report["stages"][3]
    assert url["dropped"] == {"duplicate_url": 2} and url["counters"]["clusters"] == 1
    assert exact["dropped"] == {"duplicate_text": 1} and exact["counters"]["clusters"] == 1
    log = pq.read_table(tmp_path / "out" / "stages" / "02_dedup_url").to_pylist()
    dup_of = {r["id"]: r["duplicate_of"] for r in log if not r["kept"]}
    assert dup_of == {"<urn:uuid:a1>": "<urn:uuid:a2>", "<urn:uuid:a3>": "<urn:uuid:a2>"}
    # report.json keeps the removed documents (smallest ids first) beside their representative
    assert [(e["id"], e["duplicate_of"]) for e in url["examples"]] == sorted(dup_of.items())
    assert url["examples"][0]["url"] == "http://news.example/story"
    assert [(e["id"], e["duplicate_of"]) for e in exact["examples"]] == [
        ("<urn:uuid:b2>", "<urn:uuid:b1>")
    ]
    assert url["counters"]["bytes_removed"] == url["bytes_in"] - url["bytes_out"] > 0


def test_survivors_do_not_depend_on_partitions_or_workers(tmp_path):
    warc = tmp_path / "a.warc.gz"
    _corpus(warc)
    results = []
    for slice_mb, workers in [(64, 1), (0.0005, 2), (0.001, 4)]:
        out = tmp_path / f"out-{slice_mb}-{workers}"
        summary = _run(warc, out, slice_mb, workers)
        parts = summary.report["stages"][0]["parts"]
        final = pq.read_table(out / "documents" / "03_dedup_exact")
        examples = [s["examples"] for s in summary.report["stages"][2:]]
        results.append((parts, sorted(final["id"].to_pylist()), examples))
    assert results[0][0] == 1 and results[1][0] > 3  # really different partitionings
    assert results[0][1] == results[1][1] == results[2][1]
    assert results[0][2] == results[1][2] == results[2][2]  # the same examples too
