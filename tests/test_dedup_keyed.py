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


def _run(warc, out, slice_mb, workers, keep=None, single_task_rows=None):
    dedup = {} if keep is None else {"keep": keep}
    if single_task_rows is not None:
        dedup["single_task_rows"] = single_task_rows
    cfg = PipelineConfig(
        input=[str(w) for w in warc] if isinstance(warc, list) else [str(warc)],
        output=str(out),
        stages=[
            {"read": {"slice_mb": slice_mb}},
            {"extract": {"engine": "resiliparse"}},
            {"dedup_url": dict(dedup)},
            {"dedup_exact": dict(dedup)},
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


def test_survivors_do_not_depend_on_partitions_workers_or_path(tmp_path):
    """The same survivors, decision logs and examples with 1 part or many, 1, 2 or 4 workers,
    on the one-task path (small data, the default) and on the Dask shuffles."""
    warc = tmp_path / "a.warc.gz"
    _corpus(warc)
    results = []
    for slice_mb, workers, single in [(64, 1, None), (0.0005, 2, None), (0.001, 4, 0), (64, 1, 0)]:
        out = tmp_path / f"out-{slice_mb}-{workers}-{single}"
        summary = _run(warc, out, slice_mb, workers, single_task_rows=single)
        parts = summary.report["stages"][0]["parts"]
        final = pq.read_table(out / "documents" / "03_dedup_exact")
        dedup = summary.report["stages"][2:]
        assert [s["counters"]["flags_one_task"] for s in dedup] == [int(single is None)] * 2
        logs = [
            sorted(
                (r["id"], r["kept"], r["reason"], r["duplicate_of"])
                for r in pq.read_table(out / "stages" / folder).to_pylist()
            )
            for folder in ("02_dedup_url", "03_dedup_exact")
        ]
        examples = [s["examples"] for s in dedup]
        results.append((parts, sorted(final["id"].to_pylist()), examples, logs))
    assert results[0][0] == 1 and results[1][0] > 3  # really different partitionings
    assert all(r[1:] == results[0][1:] for r in results)


def test_keep_first_keeps_the_first_read_and_follows_the_input_order(tmp_path):
    """``keep: first``: of equally preferred duplicates the one read first stays (input order,
    then offset), whatever the partitioning; the most recent URL capture still wins first.
    ``smallest_id`` gives the same output whatever the order of the inputs."""
    t = datetime(2022, 1, 1, tzinfo=UTC)
    pages = {
        "x": [
            ("<urn:uuid:x9>", "http://tie.example/", t, "first capture of the tie page"),
            ("<urn:uuid:x8>", "http://copy.example/x", t, "a text that both files hold"),
            ("<urn:uuid:x7>", "http://new.example/", t, "older capture of the new page"),
        ]
        + [(f"<urn:uuid:x{i}>", f"http://x.example/{i}", t, f"x page {i} words") for i in range(6)],
        "y": [
            ("<urn:uuid:a1>", "http://tie.example", t, "second capture of the tie page"),
            ("<urn:uuid:y2>", "http://copy.example/y", t, "A text that both  files hold"),
            ("<urn:uuid:y3>", "http://new.example/", datetime(2023, 1, 1, tzinfo=UTC), "newer"),
        ]
        + [
            (f"<urn:uuid:y{i}0>", f"http://y.example/{i}", t, f"y page {i} words") for i in range(6)
        ],
    }
    warcs = {}
    for name, docs in pages.items():
        warcs[name] = tmp_path / f"{name}.warc.gz"
        write_warc(
            warcs[name],
            [
                record("response", u, PAGE.format(text).encode(), record_id=i, date=d)
                for i, u, d, text in docs
            ],
        )

    def removed(order, keep, slice_mb=64, workers=1, single_task_rows=None):
        out = tmp_path / f"out-{''.join(order)}-{keep}-{slice_mb}-{workers}-{single_task_rows}"
        _run([warcs[n] for n in order], out, slice_mb, workers, keep, single_task_rows)
        got = {}
        for folder in ("02_dedup_url", "03_dedup_exact"):
            log = pq.read_table(out / "stages" / folder).to_pylist()
            got.update({r["id"]: r["duplicate_of"] for r in log if not r["kept"]})
        return got

    newest = {"<urn:uuid:x7>": "<urn:uuid:y3>"}  # the most recent capture, whatever ``keep``
    x_first = {"<urn:uuid:a1>": "<urn:uuid:x9>", "<urn:uuid:y2>": "<urn:uuid:x8>", **newest}
    y_first = {"<urn:uuid:x9>": "<urn:uuid:a1>", "<urn:uuid:x8>": "<urn:uuid:y2>", **newest}
    assert removed("xy", "first") == x_first
    assert removed("yx", "first") == y_first
    assert removed("yx", "first", slice_mb=0.0005, workers=2) == y_first  # many parts
    assert removed("xy", "first", single_task_rows=0) == x_first  # on the Dask shuffles
    # the smallest ids are x8 and a1: one from each file, and the same for both orders
    smallest = {"<urn:uuid:x9>": "<urn:uuid:a1>", "<urn:uuid:y2>": "<urn:uuid:x8>", **newest}
    assert removed("xy", "smallest_id") == removed("yx", "smallest_id") == smallest
