"""WARC reading: every good page comes out once, every problem once with its file#offset."""

from __future__ import annotations

import gzip
import os
import tracemalloc
import zlib
from datetime import UTC, datetime
from pathlib import Path

import brotli
import pytest
from warcgen import gz, member_offsets, record, write_warc

from refine.errors import InputError
from refine.extract.charset import looks_binary
from refine.extract.warc import RawRecord, WarcSlice, iter_slice, plan_slices

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("REFINE_TEST_DATA", REPO.parent / "shared" / "data"))
WARC_DIR = DATA / "warc"
REAL_WARCS = sorted(WARC_DIR.glob("*.warc*")) if WARC_DIR.is_dir() else []
needs_data = pytest.mark.skipif(not REAL_WARCS, reason=f"no sample WARCs in {WARC_DIR}")


def read(path: Path | str, **kw) -> tuple[list[RawRecord], dict[str, int]]:
    reader = iter_slice(WarcSlice(str(path), 0, None), **kw)
    return list(reader), reader.counts


def read_sliced(path: Path, slice_bytes: int, **kw) -> list[RawRecord]:
    out: list[RawRecord] = []
    for sl in plan_slices(str(path), path.stat().st_size, slice_bytes):
        out += iter_slice(sl, **kw)
    return out


def page(n: int, **kw) -> bytes:
    return record(
        url=f"http://example.com/{n}",
        http_body=f"<html><body>page {n}</body></html>".encode(),
        record_id=f"<urn:uuid:00000000-0000-0000-0000-{n:012d}>",
        **kw,
    )


def pid(n: int) -> str:
    return f"<urn:uuid:00000000-0000-0000-0000-{n:012d}>"


def good(records: list[RawRecord]) -> list[str]:
    return [r.id for r in records if r.reason is None]


def problems(records: list[RawRecord]) -> list[tuple[str, str]]:
    return [(r.reason, r.source) for r in records if r.payload is None and r.reason in _PROBLEMS]


_PROBLEMS = {"corrupt_record", "truncated", "not_warc"}


# -- layouts and dialects ------------------------------------------------------------------------


def test_per_record_gzip_plain_and_whole_file_gzip_give_the_same_pages(tmp_path):
    recs = [
        record("warcinfo", http_body=b"software: test\r\n"),
        record("request", url="http://example.com/1"),
        page(1),
        record("metadata", http_body=b"fetchTimeMs: 5\r\n"),
        page(2),
    ]
    per_record = write_warc(tmp_path / "a.warc.gz", recs)
    plain = write_warc(tmp_path / "a.warc", recs, gzip=False)
    whole = tmp_path / "whole.warc.gz"
    whole.write_bytes(gz(b"".join(recs)))

    offsets = member_offsets(recs)
    got, counts = read(per_record)
    assert good(got) == [pid(1), pid(2)]
    assert [r.source for r in got] == [f"{per_record}#{offsets[2]}", f"{per_record}#{offsets[4]}"]
    assert counts["warc_records"] == 5 and counts["other_records"] == 3

    got, _ = read(plain)
    assert good(got) == [pid(1), pid(2)]
    plain_offset = sum(len(r) for r in recs[:2])
    assert got[0].source == f"{plain}#{plain_offset}"

    got, _ = read(whole)
    assert good(got) == [pid(1), pid(2)]
    assert {r.source for r in got} == {f"{whole}#0"}


def test_record_fields(tmp_path):
    rec = record(
        url="<https://example.com/a?b=1>",  # wget wraps the URI in <>
        http_body=b"<html>x</html>",
        content_type="text/html; charset=ISO-8859-1",
        record_id="<urn:uuid:ABC>",
        date="2008-04-30T22:48:25+02:00",
    )
    (r,), _ = read(write_warc(tmp_path / "f.warc.gz", [rec]))
    assert r.id == "<urn:uuid:ABC>"
    assert r.url == "https://example.com/a?b=1"
    assert r.date == datetime(2008, 4, 30, 20, 48, 25, tzinfo=UTC)
    assert r.payload == b"<html>x</html>"
    assert r.content_type == "text/html; charset=ISO-8859-1"
    assert r.charset == "ISO-8859-1"
    assert r.reason is None and r.detail is None


@pytest.mark.parametrize("version", ["WARC/0.17", "WARC/0.18", "WARC/1.1"])
def test_old_and_new_warc_versions_are_read(tmp_path, version):
    recs = [page(1, version=version), page(2, version=version)]
    got, _ = read(write_warc(tmp_path / "v.warc.gz", recs))
    assert good(got) == [pid(1), pid(2)]


def test_drop_reasons_for_pages_that_are_not_usable_html(tmp_path):
    recs = [
        page(1),
        record(url="http://x/img", http_body=b"\x89PNG....", content_type="image/png"),
        record(url="http://x/404", http_body=b"<html>gone</html>", status=404),
        record(url="http://x/sniff", http_body=b"  <!DOCTYPE html><p>hi", content_type=None),
        record(url="http://x/nosniff", http_body=b"plain words", content_type=None),
        record(url="http://x/xhtml", http_body=b"<html/>", content_type="application/xhtml+xml"),
        record(
            "resource", url="file:///x.html", http_body=b"<html>r</html>", content_type="text/html"
        ),
        record("resource", url="metadata://log", http_body=b"log", content_type="text/plain"),
    ]
    got, counts = read(write_warc(tmp_path / "r.warc.gz", recs))
    assert {r.url: r.reason for r in got} == {
        "http://example.com/1": None,
        "http://x/img": "not_html",
        "http://x/404": "http_status",
        "http://x/sniff": None,
        "http://x/nosniff": "not_html",
        "http://x/xhtml": None,
        "file:///x.html": None,
    }
    assert next(r for r in got if r.url == "http://x/404").detail == "HTTP 404"
    assert all(r.payload is None for r in got if r.reason)
    assert counts["other_records"] == 1  # the text/plain resource record


def test_max_records_stops_early(tmp_path):
    path = write_warc(tmp_path / "m.warc.gz", [page(i) for i in range(10)])
    sl = plan_slices(str(path), path.stat().st_size, 100, max_records=3)
    assert len(sl) == 1
    assert good(list(iter_slice(sl[0]))) == [pid(0), pid(1), pid(2)]


# -- HTTP bodies ---------------------------------------------------------------------------------


def test_content_encoding_and_chunked_bodies_are_decoded(tmp_path):
    html = b"<html><body>" + b"decoded " * 100 + b"</body></html>"
    chunked = b"".join(
        b"%x\r\n%s\r\n" % (len(html[i : i + 50]), html[i : i + 50]) for i in range(0, len(html), 50)
    )
    deflated = zlib.compress(html)
    gzipped = gzip.compress(html)
    cases = {
        "gzip": (gzipped, {"Content-Encoding": "gzip"}),
        "deflate": (deflated, {"Content-Encoding": "deflate"}),
        "rawdeflate": (deflated[2:-4], {"Content-Encoding": "deflate"}),
        "br": (brotli.compress(html), {"Content-Encoding": "br"}),
        # Common Crawl stores bodies decoded but some writers keep the header
        "already": (html, {"Content-Encoding": "gzip"}),
        "chunked": (chunked + b"0\r\n\r\n", {"Transfer-Encoding": "chunked"}),
        "gzchunk": (
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(gzipped), gzipped),
            {"Transfer-Encoding": "chunked", "Content-Encoding": "gzip"},
        ),
    }
    recs = [record(url=f"http://x/{k}", http_body=b, http_headers=h) for k, (b, h) in cases.items()]
    got, _ = read(write_warc(tmp_path / "ce.warc.gz", recs))
    assert [(r.url, r.reason) for r in got if r.payload != html] == []
    assert len(got) == len(recs)


def test_gzip_bomb_in_content_encoding_is_dropped_in_bounded_memory(tmp_path):
    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    recs = [
        page(1),
        record(url="http://x/bomb", http_body=bomb, http_headers={"Content-Encoding": "gzip"}),
        record(
            url="http://x/bad",
            http_body=b"\x1f\x8bnot gzip",
            http_headers={"Content-Encoding": "gzip"},
        ),
        page(2),
    ]
    path = write_warc(tmp_path / "bomb.warc.gz", recs)
    tracemalloc.start()
    got, _ = read(path, max_payload_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert good(got) == [pid(1), pid(2)]
    reasons = {r.url: r.reason for r in got}
    assert reasons["http://x/bomb"] == reasons["http://x/bad"] == "content_encoding"
    assert peak < 16 << 20


# -- damaged files -------------------------------------------------------------------------------


def test_truncated_file_reports_the_last_member_and_keeps_the_rest(tmp_path):
    recs = [page(1), page(2), page(3)]
    data = b"".join(gz(r) for r in recs)
    path = tmp_path / "t.warc.gz"
    path.write_bytes(data[:-30])
    got, _ = read(path)
    assert good(got) == [pid(1), pid(2)]
    assert problems(got) == [("truncated", f"{path}#{member_offsets(recs)[2]}")]


def test_truncated_plain_and_whole_file_gzip(tmp_path):
    recs = [page(1), page(2), page(3)]
    plain = tmp_path / "t.warc"
    plain.write_bytes(b"".join(recs)[:-40])
    got, _ = read(plain)
    assert good(got) == [pid(1), pid(2)]
    assert problems(got) == [("truncated", f"{plain}#{len(recs[0]) + len(recs[1])}")]

    whole = tmp_path / "w.warc.gz"
    whole.write_bytes(gz(b"".join(recs))[:-4])  # cut inside the gzip trailer
    got, _ = read(whole)
    assert good(got) == [pid(1), pid(2), pid(3)]  # every record decompressed before the cut
    assert problems(got) == [("truncated", f"{whole}#0")]


def test_junk_between_members(tmp_path):
    recs = [page(1), page(2), page(3)]
    junk = b"this is not gzip\n" * 5
    path = tmp_path / "j.warc.gz"
    path.write_bytes(gz(recs[0]) + junk + gz(recs[1]) + gz(recs[2]))
    got, _ = read(path)
    assert good(got) == [pid(1), pid(2), pid(3)]
    assert problems(got) == [("corrupt_record", f"{path}#{len(gz(recs[0]))}")]


def test_flipped_bytes_inside_a_member(tmp_path):
    recs = [page(i) for i in range(1, 4)]
    members = [gz(r) for r in recs]
    bad = bytearray(members[1])
    for i in range(20, 30):
        bad[i] ^= 0xFF
    path = tmp_path / "f.warc.gz"
    path.write_bytes(members[0] + bytes(bad) + members[2])
    got, _ = read(path)
    assert good(got) == [pid(1), pid(3)]
    ((reason, source),) = problems(got)
    assert (reason, source) == ("corrupt_record", f"{path}#{len(members[0])}")
    assert next(r for r in got if r.reason).detail.startswith("Gzip decompression error")


def test_crc_error_drops_only_that_member(tmp_path):
    members = [gz(page(i)) for i in range(1, 4)]
    bad = bytearray(members[1])
    bad[-8] ^= 0xFF  # CRC32 in the trailer: the data itself looks fine
    path = tmp_path / "crc.warc.gz"
    path.write_bytes(members[0] + bytes(bad) + members[2])
    got, _ = read(path)
    assert good(got) == [pid(1), pid(3)]
    assert problems(got) == [("corrupt_record", f"{path}#{len(members[0])}")]


@pytest.mark.parametrize("gzipped", [True, False])
def test_non_warc_file_is_one_not_warc(tmp_path, gzipped):
    text = b"just some text, not a WARC file\n" * 1000
    path = tmp_path / ("x.txt.gz" if gzipped else "x.txt")
    path.write_bytes(gzip.compress(text) if gzipped else text)
    got, counts = read(path)
    assert [(r.reason, r.source) for r in got] == [("not_warc", f"{path}#0")]
    assert counts["problems"] == 1


def test_empty_file_gives_nothing(tmp_path):
    path = tmp_path / "e.warc.gz"
    path.write_bytes(b"")
    assert read(path)[0] == []


def test_missing_file_raises_input_error_with_url(tmp_path):
    url = str(tmp_path / "nope.warc.gz")
    with pytest.raises(InputError, match="nope.warc.gz"):
        list(iter_slice(WarcSlice(url, 0, None)))


@pytest.mark.parametrize("gzipped", [True, False])
def test_lying_content_length(tmp_path, gzipped):
    body = b"<html>" + b"x" * 200 + b"</html>"
    too_big = record(url="http://x/big", http_body=body, record_id="<urn:big>", content_length=2000)
    too_small = record(
        url="http://x/small", http_body=body, record_id="<urn:small>", content_length=60
    )
    recs = [page(1), too_big, page(2), too_small, page(3)]
    path = write_warc(tmp_path / ("l.warc.gz" if gzipped else "l.warc"), recs, gzip=gzipped)
    got, _ = read(path)
    assert good(got) == [pid(1), pid(2), pid(3)]  # fastwarc alone loses page 2 inside "big"
    bad = [r for r in got if r.reason]
    assert [(r.reason, r.id) for r in bad] == [
        ("corrupt_record", "<urn:big>"),
        ("corrupt_record", "<urn:small>"),
    ]
    offsets = member_offsets(recs) if gzipped else [sum(map(len, recs[:i])) for i in range(5)]
    assert [r.source for r in bad] == [f"{path}#{offsets[1]}", f"{path}#{offsets[3]}"]


def test_http_headers_without_status_line(tmp_path):
    recs = [page(1), record(url="http://x/ns", status_line=b""), page(2)]
    got, _ = read(write_warc(tmp_path / "s.warc.gz", recs))
    assert good(got) == [pid(1), pid(2)]
    bad = next(r for r in got if r.reason)
    assert (bad.url, bad.reason) == ("http://x/ns", "corrupt_record")
    assert "status line" in bad.detail


def test_bad_warc_header_is_reported(tmp_path):
    no_length = (
        b"WARC/1.0\r\nWARC-Type: response\r\nWARC-Record-ID: <urn:x>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n"
    )
    recs = [page(1), no_length + b"\r\n\r\n", page(2)]
    path = write_warc(tmp_path / "h.warc", recs, gzip=False)
    got, _ = read(path)
    assert good(got) == [pid(1), pid(2)]
    assert problems(got) == [("corrupt_record", f"{path}#{len(recs[0])}")]


def test_binary_junk_labelled_html_passes_the_reader_and_is_flagged(tmp_path):
    junk = bytes(range(256)) * 20
    (r,), _ = read(write_warc(tmp_path / "b.warc.gz", [record(http_body=junk)]))
    assert r.reason is None and r.payload == junk
    assert looks_binary(r.payload)


@pytest.mark.parametrize("gzipped", [True, False])
def test_page_too_large_is_dropped_without_holding_it(tmp_path, gzipped):
    size = 50 << 20
    big = record(url="http://x/big", http_body=b"<html>" + b"a" * size + b"</html>")
    recs = [page(1), big, page(2)]
    path = write_warc(tmp_path / ("big.warc.gz" if gzipped else "big.warc"), recs, gzip=gzipped)
    del big, recs
    tracemalloc.start()
    got, _ = read(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert good(got) == [pid(1), pid(2)]
    (r,) = [r for r in got if r.reason]
    assert (r.url, r.reason, r.payload) == ("http://x/big", "page_too_large", None)
    assert peak < 40 << 20  # the page alone is 50 MiB


# -- slices --------------------------------------------------------------------------------------


def test_plan_slices():
    assert plan_slices("s3://b/x.warc.gz", 10_000, 3000) == [
        WarcSlice("s3://b/x.warc.gz", 0, 3000),
        WarcSlice("s3://b/x.warc.gz", 3000, 6000),
        WarcSlice("s3://b/x.warc.gz", 6000, 9000),
        WarcSlice("s3://b/x.warc.gz", 9000, None),
    ]
    assert plan_slices("x.warc", 10_000, 3000) == [WarcSlice("x.warc", 0, None)]
    assert plan_slices("x.warc.gz", None, 3000) == [WarcSlice("x.warc.gz", 0, None)]
    assert plan_slices("x.warc.gz", 10_000, 3000, max_records=5) == [
        WarcSlice("x.warc.gz", 0, None, 5)
    ]


def test_slices_of_a_damaged_file_give_every_record_and_problem_once(tmp_path):
    recs = [page(i) for i in range(20)]
    members = [gz(r) for r in recs]
    flipped = bytearray(members[7])
    flipped[25] ^= 0xFF
    members[7] = bytes(flipped)
    members.insert(12, b"JUNK" * 10)
    path = tmp_path / "d.warc.gz"
    path.write_bytes(b"".join(members)[:-20])  # and truncated
    whole, _ = read(path)
    assert len(problems(whole)) == 3
    for slice_bytes in (1, 7, 50, 333, 1000):
        parts = read_sliced(path, slice_bytes)
        assert [(r.id, r.reason, r.source) for r in parts] == [
            (r.id, r.reason, r.source) for r in whole
        ], slice_bytes


def test_whole_file_gzip_split_into_slices_still_reads_everything_once(tmp_path):
    path = tmp_path / "w.warc.gz"
    path.write_bytes(gz(b"".join(page(i) for i in range(50))))
    assert good(read_sliced(path, 500)) == [pid(i) for i in range(50)]


@needs_data
@pytest.mark.parametrize("slice_bytes", [1 << 10, 64 << 10, 1 << 20])
@pytest.mark.parametrize("path", REAL_WARCS, ids=lambda p: p.name)
def test_real_warcs_read_the_same_in_slices(path, slice_bytes):
    whole, counts = read(path)
    assert counts["problems"] == 0
    parts = read_sliced(path, slice_bytes)
    assert [(r.id, r.reason) for r in parts] == [(r.id, r.reason) for r in whole]


@needs_data
def test_real_warc_counts():
    expected_html = {  # status 200 HTML pages; checked against fastwarc's own iterator
        "web-pages-a.warc.gz": 505,
        "heritrix-2008-sample.warc.gz": 94,
        "cc-main-2020-34-sample.warc.gz": 16,
        "wget-sample-0000.warc.gz": 22,
        "wget-sample-0001.warc.gz": 15,
    }
    for name, n in expected_html.items():
        path = WARC_DIR / name
        if not path.exists():
            continue
        got, counts = read(path)
        assert len(good(got)) == n, name
        assert counts["problems"] == 0, name
        assert all(r.date and r.date.tzinfo is not None and r.url for r in got), name
    got, counts = read(WARC_DIR / "heritrix-2008-sample.warc.gz")
    assert counts["warc_records"] == 822 and counts["responses"] == 299


def test_https_like_urls_read_the_same_and_404_is_an_input_error(tmp_path):
    """fsspec's HTTP file (what https://data.commoncrawl.org gives) against a local server."""
    import functools
    import http.server
    import threading

    recs = [page(i) for i in range(30)]
    path = write_warc(tmp_path / "h.warc.gz", recs)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        url = f"{base}/h.warc.gz"
        parts: list[RawRecord] = []
        for sl in plan_slices(url, path.stat().st_size, 1000):
            parts += iter_slice(sl)
        assert good(parts) == [pid(i) for i in range(30)]
        assert parts[1].source == f"{url}#{member_offsets(recs)[1]}"
        with pytest.raises(InputError, match="missing.warc.gz"):
            list(iter_slice(WarcSlice(f"{base}/missing.warc.gz", 0, None)))
    finally:
        server.shutdown()


def test_part_ids_sort_in_input_order_then_slice_order_past_five_digits():
    """Later stages read parts in part-id order (string order) and ``dedup_minhash`` with
    ``keep: first`` keeps the first document read: ids must sort as the inputs are listed, also
    past 99,999 inputs or 9,999 slices of one file."""
    from refine.extract.stages import ReadParams, ReadWarc
    from refine.pipeline.inputs import InputFile

    read = ReadWarc(ReadParams(slice_mb=1))
    inputs = [InputFile(f"/data/{i}.warc", None) for i in range(100_001)]
    inputs.append(InputFile("/data/big.warc.gz", 10_001 * 2**20))
    parts = read.plan(inputs)
    assert len(parts) == 100_001 + 10_001
    ids = [p.id for p in parts]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert ids[0] == "000000-0000" and ids[99_999] == "099999-0000"
    assert ids[100_001] == "100001-00000" and ids[-1] == "100001-10000"
    small = [p.id for p in read.plan(inputs[:3])]
    assert small == ["00000-0000", "00001-0000", "00002-0000"]  # the usual ids are unchanged
