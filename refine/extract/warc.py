"""Read WARC files in byte-range slices, turning every record and every problem into a RawRecord.

Why not just loop over fastwarc's ArchiveIterator: it stops at the first corrupt gzip member,
yields nothing for a truncated or non-WARC file, and trusts Content-Length, so one record whose
Content-Length lies silently swallows the records after it (or comes out empty). Here we own the
framing and use fastwarc to parse each record we have framed:

- gzip members are walked with zlib, so each record knows the compressed offset of its member
  (`source = file#offset`) and a slice can start at any byte offset (resync on the next member);
- a record is used only if its Content-Length ends exactly at a record boundary (blank lines, then
  the next `WARC/` line or the end of the stream); otherwise it is reported and we resync;
- members up to `max_member_bytes` are decompressed (and CRC-checked) before any of their records
  is used, so a corrupt member never leaks a half-garbage page; bigger members (a whole-file gzip
  WARC) stream in bounded memory.

Every problem becomes exactly one RawRecord with a `reason`, and reading carries on.
"""

from __future__ import annotations

import io
import math
import re
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import brotli
from fastwarc.warc import WarcRecord, WarcRecordType

from refine.errors import InputError

__all__ = [
    "REASONS",
    "RawRecord",
    "SliceReader",
    "WarcSlice",
    "iter_slice",
    "plan_slices",
]

#: Every drop reason a RawRecord can carry (None = a usable HTML page).
REASONS = (
    "not_html",
    "http_status",
    "page_too_large",
    "corrupt_record",
    "truncated",
    "not_warc",
    "content_encoding",
)

_GZIP_MAGIC = b"\x1f\x8b\x08"
_CHUNK = 1 << 20  # bytes per read from the file and per decompression step
_READ = 64 << 10  # compressed bytes fed to zlib per step (bounds copies of the leftover input)
_MAX_WARC_HEADER = 64 << 10  # bytes; fastwarc's own limit is 32 KiB
_MAX_HTTP_HEADER = 64 << 10  # bytes of block we keep to parse HTTP headers of an oversized record
_TRAILER_PEEK = 64  # bytes looked at after a record to check it ends where Content-Length says
_HTML_TYPES = ("text/html", "application/xhtml+xml")

_WARC_LINE = re.compile(rb"WARC/\d")
_WARC_BOUNDARY = re.compile(rb"\n\r?\nWARC/\d")
_CONTENT_LENGTH = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?$")
_WARC_TYPE = re.compile(rb"(?im)^warc-type[ \t]*:[ \t]*([A-Za-z-]+)")
_CHARSET = re.compile(r"""charset\s*=\s*["']?([^"';,\s]+)""", re.I)


@dataclass(frozen=True)
class WarcSlice:
    """One partition of one WARC file: the records whose gzip member starts in [start, end)."""

    url: str
    start: int
    end: int | None
    max_records: int | None = None


def plan_slices(
    url: str, size: int | None, slice_bytes: int, max_records: int | None = None
) -> list[WarcSlice]:
    """Split one WARC file into byte-range slices of about `slice_bytes` compressed bytes.

    Only a per-record-gzip file (`.gz`, the Common Crawl layout) can be split: a reader of
    slice k resyncs on the first gzip member at or after its start. An uncompressed file, a file
    of unknown size or a sampled read (`max_records`) is one slice.
    """
    if slice_bytes <= 0:
        raise ValueError(f"slice_bytes must be positive, got {slice_bytes} for {url}")
    path = url.split("?", 1)[0].lower()
    if max_records is not None or size is None or not path.endswith(".gz") or size <= slice_bytes:
        return [WarcSlice(url, 0, None, max_records)]
    n = math.ceil(size / slice_bytes)
    return [
        WarcSlice(url, i * slice_bytes, (i + 1) * slice_bytes if i < n - 1 else None)
        for i in range(n)
    ]


@dataclass
class RawRecord:
    """One WARC response (or HTML resource) record, or one problem found while reading.

    `reason` None means a usable HTML page with `payload` set. Problems have `payload` None, a
    reason from REASONS and a `detail`; `id` and `url` are "" when the headers were unreadable.
    """

    id: str
    url: str
    date: datetime | None
    source: str
    payload: bytes | None
    content_type: str | None
    charset: str | None
    reason: str | None
    detail: str | None


def iter_slice(
    sl: WarcSlice,
    *,
    max_payload_bytes: int = 8 * 2**20,
    max_member_bytes: int = 16 * 2**20,
    timeout: float = 60.0,
) -> SliceReader:
    """Read one slice: iterate the result for RawRecords, then look at its `counts`.

    `max_payload_bytes`: HTTP bodies above this (bytes, as stored, and again after
    Content-Encoding decoding) are dropped without being held in memory.
    `max_member_bytes`: gzip members up to this many decompressed bytes are checked whole
    before use; larger ones are streamed.
    `timeout`: seconds an http(s) server may stay silent before the read fails (InputError).
    """
    return SliceReader(
        sl, max_payload_bytes=max_payload_bytes, max_member_bytes=max_member_bytes, timeout=timeout
    )


class SliceReader:
    """Iterable over the RawRecords of one slice; `counts` is complete once iteration ends.

    counts (all integers):
      warc_records  every WARC record whose headers were framed (any type)
      other_records records of other types (request, metadata, warcinfo, revisit, non-HTML
                    resource): skipped, no RawRecord
      responses     RawRecords made from response/resource records (with or without a reason)
      problems      RawRecords for corrupt, truncated or non-WARC data
      gzip_members  gzip members opened
    Raises InputError (with the URL) only when the file cannot be opened or read.
    """

    def __init__(
        self,
        sl: WarcSlice,
        *,
        max_payload_bytes: int,
        max_member_bytes: int,
        timeout: float = 60.0,
    ) -> None:
        self.timeout = timeout  # seconds without an answer from an http(s) server
        self.slice = sl
        self.max_payload_bytes = max_payload_bytes
        self.max_member_bytes = max_member_bytes
        # records up to this block size are framed in memory; bigger ones are streamed past
        self._in_memory_block = max_payload_bytes + _MAX_HTTP_HEADER
        self.counts: dict[str, int] = dict.fromkeys(
            ("warc_records", "other_records", "responses", "problems", "gzip_members"), 0
        )

    # -- public iteration ----------------------------------------------------------------------

    def __iter__(self) -> Iterator[RawRecord]:
        """Yield records; problems that come before any WARC record wait, so that a file with no
        WARC record at all gives one `not_warc` instead of a `corrupt_record` per region."""
        limit = self.slice.max_records
        pending: list[RawRecord] = []
        with _open(self.slice.url, self.timeout) as raw:
            for rec, is_junk in self._iter_raw(raw):
                if is_junk and self.counts["warc_records"] == 0:
                    pending.append(rec)
                    continue
                if pending:
                    yield from pending
                    pending.clear()
                yield rec
                if limit is not None and self.counts["responses"] >= limit:
                    return
        if pending and self.counts["warc_records"] == 0:
            first = pending[0]
            self.counts["problems"] -= len(pending) - 1
            extra = f" (and {len(pending) - 1} more such regions)" if len(pending) > 1 else ""
            first.reason = "not_warc"
            first.detail = f"no WARC record found: {first.detail}{extra}"
            yield first
        else:
            yield from pending

    # -- file level ----------------------------------------------------------------------------

    def _iter_raw(self, raw: _RawFile) -> Iterator[tuple[RawRecord, bool]]:
        head = raw.read_at(0, 2)
        if not head:
            return
        if head == _GZIP_MAGIC[:2]:
            yield from self._iter_gzip(raw)
        elif self.slice.start == 0:
            # an uncompressed WARC cannot be split: the slice at offset 0 reads all of it
            raw.seek(0)
            yield from self._walk(_ByteStream(raw.read), None, _PlainEnd())

    def _iter_gzip(self, raw: _RawFile) -> Iterator[tuple[RawRecord, bool]]:
        """Walk gzip members from the slice start; stop at the first WARC member at or after end.

        Ownership rule that keeps slices disjoint: a member belongs to the slice its start falls
        in; garbage right after a member is reported by the slice that read that member, and a
        slice that starts mid-file skips silently to the first member that holds a WARC record.
        """
        end = self.slice.end
        pos: int | None = 0 if self.slice.start == 0 else self._next_member(raw, self.slice.start)
        while pos is not None:
            if end is not None and pos >= end:
                if raw.read_at(pos, 1) and not _member_holds_warc(raw, pos):
                    yield self._problem("corrupt_record", pos, _garbage_detail(raw, pos)), True
                return
            if raw.read_at(pos, 3) != _GZIP_MAGIC:
                if not raw.read_at(pos, 1):
                    return
                yield self._problem("corrupt_record", pos, _garbage_detail(raw, pos)), True
                pos = self._next_member(raw, pos + 1)
                continue
            member = _GzipMember(raw, pos, self.max_member_bytes)
            self.counts["gzip_members"] += 1
            if member.failed():
                reason, detail = member.failure()
                yield self._problem(reason, pos, detail), False
                pos = self._next_member(raw, pos + 1)
                continue
            stream = _ByteStream(member.read)
            stream.skip_blank_lines()
            if not _WARC_LINE.match(stream.peek(6)):
                if member.failed():
                    reason, detail = member.failure()
                    yield self._problem(reason, pos, detail), False
                else:
                    detail = f"gzip member does not hold a WARC record: {stream.peek(40)!r}"
                    yield self._problem("corrupt_record", pos, detail), True
                pos = self._next_member(raw, pos + 1)
                continue
            yield from self._walk(stream, pos, member)
            if member.end is None:
                if not member.reported:
                    reason, detail = member.failure()
                    yield self._problem(reason, pos, detail), False
                pos = self._next_member(raw, pos + 1)
            else:
                pos = member.end

    def _next_member(self, raw: _RawFile, pos: int) -> int | None:
        """First offset in [pos, slice end) where a gzip member holding a WARC record starts."""
        end = self.slice.end
        while True:
            block = raw.read_at(pos, _CHUNK + 2)
            if not block:
                return None
            i = block.find(_GZIP_MAGIC)
            if i < 0:
                pos += max(1, len(block) - 2)
                if len(block) < 3 or (end is not None and pos >= end):
                    return None
                continue
            cand = pos + i
            if end is not None and cand >= end:
                return None
            if _member_holds_warc(raw, cand):
                return cand
            pos = cand + 1

    # -- record level --------------------------------------------------------------------------

    def _walk(
        self, s: _ByteStream, member_pos: int | None, ending: _StreamEnd
    ) -> Iterator[tuple[RawRecord, bool]]:
        """Frame the records of one decompressed stream (a plain file or one gzip member).

        `member_pos` is the member's compressed offset (the source of all its records); None
        for a plain file, where each record's own offset is its source.
        """
        while True:
            s.skip_blank_lines()
            if not s.fill(1):
                return
            src = s.pos if member_pos is None else member_pos
            if not _WARC_LINE.match(s.peek(6)):
                yield (
                    self._problem("corrupt_record", src, f"not a WARC record: {s.peek(40)!r}"),
                    True,
                )
                if not s.skip_to_warc_line():
                    return
                continue
            hlen = s.find_blank_line(_MAX_WARC_HEADER)
            if hlen < 0:
                if s.fill(_MAX_WARC_HEADER) < _MAX_WARC_HEADER:
                    yield self._cut_off(src, ending, "WARC header"), False
                    s.skip(_MAX_WARC_HEADER)
                    return
                detail = f"WARC header longer than {_MAX_WARC_HEADER} bytes"
                yield self._problem("corrupt_record", src, detail), False
                s.skip(1)
                if not s.skip_to_warc_line():
                    return
                continue
            header = s.peek(hlen)
            m = _CONTENT_LENGTH.search(header)
            if m is None:
                yield (
                    self._problem("corrupt_record", src, "WARC header without Content-Length"),
                    False,
                )
                s.skip(hlen)
                if not s.skip_to_warc_line():
                    return
                continue
            self.counts["warc_records"] += 1
            length = int(m.group(1))
            total = hlen + length
            t = _WARC_TYPE.search(header)
            wtype = t.group(1).lower() if t else b""
            wanted = wtype in (b"response", b"resource")

            if length <= self._in_memory_block:
                have = s.fill(total + _TRAILER_PEEK)
                if have < total:
                    if _WARC_BOUNDARY.search(s.peek(have), hlen):
                        # another record starts inside this one: the length lies, not the file
                        detail = f"Content-Length {length} runs into the next record"
                        yield self._problem("corrupt_record", src, detail, header), False
                        s.skip(hlen)
                        if not s.skip_to_warc_line():
                            return
                        continue
                    yield (
                        self._cut_off(src, ending, f"record (Content-Length {length})", header),
                        False,
                    )
                    s.skip(have)
                    return
                if not _ends_at_boundary(s.peek(total + _TRAILER_PEEK)[total:]):
                    detail = f"Content-Length {length} does not end at a record boundary"
                    yield self._problem("corrupt_record", src, detail, header), False
                    s.skip(hlen)
                    if not s.skip_to_warc_line():
                        return
                    continue
                data = s.take(total)
                if not wanted:
                    self.counts["other_records"] += 1
                    continue
                rec = self._make_record(data, src, complete=True)
            else:
                prefix = s.peek(min(total, hlen + _MAX_HTTP_HEADER)) if wanted else b""
                skipped = s.skip(total)
                if skipped < total:
                    what = f"record (Content-Length {length})"
                    yield self._cut_off(src, ending, what, header), False
                    return
                s.fill(_TRAILER_PEEK)
                if not _ends_at_boundary(s.peek(_TRAILER_PEEK)):
                    detail = f"Content-Length {length} does not end at a record boundary"
                    yield self._problem("corrupt_record", src, detail, header), False
                    if not s.skip_to_warc_line():
                        return
                    continue
                if not wanted:
                    self.counts["other_records"] += 1
                    continue
                rec = self._make_record(prefix, src, complete=False)
            if rec is None:
                self.counts["other_records"] += 1
                continue
            if rec.reason in ("corrupt_record", "truncated"):
                self.counts["problems"] += 1
            else:
                self.counts["responses"] += 1
            yield rec, False

    def _make_record(self, data: bytes, src: int, complete: bool) -> RawRecord | None:
        """Parse one framed response/resource record with fastwarc and decide its reason.

        `complete` False: `data` is only the headers and the start of an oversized block.
        Returns None for a resource record that is not HTML (not a page: counted as other).
        """
        source = f"{self.slice.url}#{src}"
        try:
            rec = WarcRecord.from_reader(io.BytesIO(data), quirks_mode=True)
            headers = rec.headers
            rid = headers.get("WARC-Record-ID") or ""
            url = (headers.get("WARC-Target-URI") or "").strip().strip("<>").strip()
            date = _utc(rec.record_date)
            is_http = rec.record_type == WarcRecordType.response and rec.is_http
            if is_http:
                rec.parse_http(auto_decode="none", quirks_mode=True)
        except (OSError, ValueError) as e:
            detail = f"unparseable record: {e}"
            return _problem_record(self.slice.url, "corrupt_record", src, detail, data[:4096])
        out = RawRecord(rid, url, date, source, None, None, None, None, None)

        if is_http:
            http = rec.http_headers
            status = http.status_code if http is not None else None
            if status is None:
                out.reason, out.detail = "corrupt_record", "HTTP response without a status line"
                return out
            out.content_type = http.get("Content-Type")
            if status != 200:
                out.reason, out.detail = "http_status", f"HTTP {status}"
                return out
        else:
            out.content_type = headers.get("Content-Type")
        if out.content_type:
            m = _CHARSET.search(out.content_type)
            out.charset = m.group(1) if m else None

        size = rec.content_length
        head = rec.reader.read(1024)
        if not _is_html(out.content_type, head):
            if rec.record_type == WarcRecordType.resource:
                return None
            out.reason = "not_html"
            return out
        if not complete or size > self.max_payload_bytes:
            out.reason, out.detail = "page_too_large", f"{size} bytes"
            return out
        body = head + rec.reader.read()
        if is_http:
            body, problem = _decode_http_body(body, rec.http_headers, self.max_payload_bytes)
            if problem is not None:
                out.reason, out.detail = "content_encoding", problem
                return out
        out.payload = body
        return out

    def _problem(
        self, reason: str, src: int, detail: str, header: bytes | None = None
    ) -> RawRecord:
        self.counts["problems"] += 1
        return _problem_record(self.slice.url, reason, src, detail, header)

    def _cut_off(
        self, src: int, ending: _StreamEnd, what: str, header: bytes | None = None
    ) -> RawRecord:
        """The stream ended inside a record: say why (file truncated, bad gzip, lying length)."""
        reason, detail = ending.failure()
        if reason == "corrupt_record" and detail is None:
            detail = f"{what} runs past the end of its gzip member"
        ending.reported = True
        return self._problem(reason, src, detail or f"file ends inside a {what}", header)


# -- helpers: bytes in, bytes out --------------------------------------------------------------


def _problem_record(
    url: str, reason: str, src: int, detail: str, header: bytes | None = None
) -> RawRecord:
    """A RawRecord for a problem at offset `src`; id and URL from `header` when readable."""
    rid = target = ""
    if header:
        text = header.decode("utf-8", "replace")
        m = re.search(r"(?im)^warc-record-id[ \t]*:[ \t]*(\S+)", text)
        rid = m.group(1) if m else ""
        m = re.search(r"(?im)^warc-target-uri[ \t]*:[ \t]*(\S+)", text)
        target = m.group(1).strip("<>") if m else ""
    return RawRecord(rid, target, None, f"{url}#{src}", None, None, None, reason, detail)


def _open(url: str, timeout: float) -> _RawFile:
    from refine.pipeline.inputs import open_url

    try:
        f = open_url(url, timeout).open()
    except (OSError, ValueError, ImportError, TimeoutError) as e:
        raise InputError(f"cannot open WARC file {url}: {e!r}") from e
    return _RawFile(f, url)


class _RawFile:
    """Random access to the compressed file through a 1 MiB window (cheap short seeks back)."""

    def __init__(self, f: Any, url: str) -> None:
        self._f = f
        self._url = url
        self._buf = b""
        self._buf_pos = 0
        self._f_pos = 0
        self.pos = 0

    def __enter__(self) -> _RawFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def seek(self, pos: int) -> None:
        self.pos = pos

    def read(self, n: int = _CHUNK) -> memoryview:
        """Up to n bytes at `pos`, without copying (fewer at the window edge; empty only at EOF)."""
        off = self.pos - self._buf_pos
        if not 0 <= off < len(self._buf):
            self._load(self.pos)
            off = 0
        out = memoryview(self._buf)[off : off + n]
        self.pos += len(out)
        return out

    def read_at(self, pos: int, n: int) -> bytes:
        """Exactly n bytes at pos, or fewer at end of file; leaves `pos` after them."""
        self.pos = pos
        parts = []
        while n > 0:
            b = self.read(n)
            if not b:
                break
            parts.append(b)
            n -= len(b)
        return b"".join(parts)

    def _load(self, pos: int) -> None:
        try:
            if pos != self._f_pos:
                self._f.seek(pos)
            self._buf = self._f.read(_CHUNK)
        except Exception as e:  # any failure of the underlying file/HTTP/S3 read
            raise InputError(f"cannot read WARC file {self._url} at byte {pos}: {e!r}") from e
        self._buf_pos = pos
        self._f_pos = pos + len(self._buf)


class _StreamEnd:
    """How a decompressed stream ended: cleanly, truncated, or with a decompression error."""

    reported = False

    def failure(self) -> tuple[str, str | None]:
        raise NotImplementedError


class _PlainEnd(_StreamEnd):
    def failure(self) -> tuple[str, str | None]:
        return "truncated", None


class _GzipMember(_StreamEnd):
    """Decompressed bytes of the one gzip member at `start`; `end` is set when it completes.

    Up to `prebuffer` bytes are decompressed at once so a small member's CRC is checked before
    any of its records is used; a bigger member streams, and records read before a decompression
    error in it have been yielded already.
    """

    def __init__(self, raw: _RawFile, start: int, prebuffer: int) -> None:
        self._raw = raw
        self._d = zlib.decompressobj(wbits=31)
        self._tail = b""
        self._ready: deque[bytes] = deque()
        self.start = start
        self.end: int | None = None
        self.error: str | None = None
        self.truncated = False
        raw.seek(start)
        size = 0
        while size <= prebuffer and not self._finished():
            out = self._decompress(_CHUNK)
            if out:
                self._ready.append(out)
                size += len(out)

    def _finished(self) -> bool:
        return self.end is not None or self.error is not None or self.truncated

    def failed(self) -> bool:
        """True once the data is known to be bad (known up front for small members).

        A truncated member is not "failed": the records that decompressed before the cut
        are sound, only the one cut off is reported."""
        return self.error is not None

    def failure(self) -> tuple[str, str | None]:
        if self.truncated:
            return "truncated", "file ends inside a gzip member"
        if self.error is not None:
            return "corrupt_record", self.error
        return "corrupt_record", None

    def read(self, n: int) -> bytes:
        if self._ready:
            return self._ready.popleft()
        return self._decompress(max(n, 1))

    def _decompress(self, n: int) -> bytes:
        while not self._finished():
            data = self._tail or self._raw.read(_READ)
            if not data:
                self.truncated = True
                break
            try:
                out = self._d.decompress(data, n)
            except zlib.error as e:
                self.error = f"Gzip decompression error: {e}"
                break
            self._tail = self._d.unconsumed_tail
            if self._d.eof:
                # at the end zlib reports the leftover input as both unused_data and the tail
                self._tail = b""
                self.end = self._raw.pos - len(self._d.unused_data)
            if out:
                return out
        return b""


class _ByteStream:
    """Buffered reader over a `read(n)` function: look ahead without consuming, track offsets."""

    def __init__(self, read: Callable[[int], bytes | memoryview], pos: int = 0) -> None:
        self._read = read
        self._buf = bytearray()
        self._i = 0
        self.pos = pos  # offset of the next unconsumed byte in the decompressed stream
        self._eof = False

    def fill(self, n: int) -> int:
        """Buffer at least n bytes unless the stream ends first; return the bytes buffered."""
        while len(self._buf) - self._i < n and not self._eof:
            if self._i:
                del self._buf[: self._i]
                self._i = 0
            b = self._read(max(_CHUNK, n - len(self._buf)))
            if b:
                self._buf += b
            else:
                self._eof = True
        return len(self._buf) - self._i

    def peek(self, n: int) -> bytes:
        self.fill(n)
        return bytes(self._buf[self._i : self._i + n])

    def take(self, n: int) -> bytes:
        out = self.peek(n)
        self._i += len(out)
        self.pos += len(out)
        return out

    def skip(self, n: int) -> int:
        """Drop n bytes without keeping them (streams past big records); return bytes dropped."""
        done = 0
        while done < n:
            have = self.fill(1)
            if not have:
                break
            k = min(have, n - done)
            self._i += k
            done += k
            if self._i == len(self._buf):
                self._buf.clear()
                self._i = 0
        self.pos += done
        return done

    def skip_blank_lines(self) -> None:
        while self.fill(1):
            c = self._buf[self._i]
            if c not in (10, 13):
                return
            self._i += 1
            self.pos += 1

    def find_blank_line(self, limit: int) -> int:
        """Length of the header block up to and including its blank line, or -1."""
        have = self.fill(limit)
        view = self._buf[self._i : self._i + min(have, limit)]
        ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := view.find(sep)) >= 0]
        return min(ends) if ends else -1

    def skip_to_warc_line(self) -> bool:
        """Consume bytes up to the next line starting `WARC/<digit>`; False if the stream ends."""
        if _WARC_LINE.match(self.peek(6)):
            return True
        while True:
            have = self.fill(_CHUNK)
            buf = self._buf
            i = buf.find(b"\nWARC/", self._i)
            while i >= 0 and i + 6 < len(buf):
                if 48 <= buf[i + 6] <= 57:
                    self.skip(i + 1 - self._i)
                    return True
                i = buf.find(b"\nWARC/", i + 1)
            if self._eof:
                self.skip(have)
                return False
            # keep a possible match cut by the end of the buffer, then read more
            keep_from = i if i >= 0 else max(self._i, len(buf) - 6)
            self.skip(keep_from - self._i)
            self.fill(self.fill(0) + 1)


def _member_holds_warc(raw: _RawFile, pos: int) -> bool:
    """True if a gzip member starts at pos and its first line is `WARC/<digit>`."""
    raw.seek(pos)
    d = zlib.decompressobj(wbits=31)
    out = b""
    for _ in range(64):
        data = d.unconsumed_tail or raw.read(4096)
        if not data:
            break
        try:
            out += d.decompress(data, 64)
        except zlib.error:
            return False
        text = out.lstrip(b"\r\n")
        if len(text) >= 6 or d.eof:
            break
    return _WARC_LINE.match(out.lstrip(b"\r\n")) is not None


def _garbage_detail(raw: _RawFile, pos: int) -> str:
    return f"not a gzip member holding a WARC record: {raw.read_at(pos, 16)!r}"


def _ends_at_boundary(after: bytes) -> bool:
    """A record ends right: only blank lines follow, then the next `WARC/` line or the end."""
    rest = after.lstrip(b"\r\n")[:5]
    return b"WARC/".startswith(rest)


def _utc(d: datetime | None) -> datetime | None:
    if d is None:
        return None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)


def _is_html(content_type: str | None, head: bytes) -> bool:
    """HTML by Content-Type; without one, sniff the payload start like a browser would."""
    if content_type and content_type.strip():
        mime = content_type.split(";", 1)[0].strip().lower()
        return mime in _HTML_TYPES
    start = head[:1024].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith(b"<!doctype html") or b"<html" in start


def _decode_http_body(body: bytes, http: Any, limit: int) -> tuple[bytes, str | None]:
    """Undo chunked transfer coding and gzip/deflate/br content coding, bounded by `limit` bytes.

    Returns (body, None) or (original body, problem). A body labelled gzip that is not gzip
    (Common Crawl stores bodies decoded) passes through unchanged.
    """
    te = (http.get("Transfer-Encoding") or "").lower()
    if "chunked" in te:
        body = _dechunk(body)
    ce = [c.strip().lower() for c in (http.get("Content-Encoding") or "").split(",") if c.strip()]
    for coding in reversed(ce):
        if coding in ("identity", "none", "utf-8", "utf8", "text", "binary"):
            continue
        decoded, problem = _decode_one(body, coding, limit)
        if problem is not None:
            return body, problem
        body = decoded
    return body, None


def _decode_one(body: bytes, coding: str, limit: int) -> tuple[bytes, str | None]:
    if coding in ("gzip", "x-gzip", "deflate"):
        if coding != "deflate" and not body.startswith(b"\x1f\x8b"):
            return body, None  # already decoded by the crawler
        attempts = (31,) if coding != "deflate" else (15, -15)
        error = ""
        for wbits in attempts:
            d = zlib.decompressobj(wbits=wbits)
            try:
                out = d.decompress(body, limit + 1)
            except zlib.error as e:
                error = str(e)
                continue
            if len(out) > limit or d.unconsumed_tail:
                return body, f"{coding} body decodes to more than {limit} bytes"
            return out, None  # a truncated stream keeps what decoded, as browsers do
        if _is_html(None, body):
            return body, None
        return body, f"cannot decode {coding} body: {error}"
    if coding == "br":
        try:
            d = brotli.Decompressor()
            out = d.process(body, output_buffer_limit=limit + 1)
        except brotli.error as e:
            if _is_html(None, body):
                return body, None
            return body, f"cannot decode br body: {e}"
        if len(out) > limit or not d.can_accept_more_data():
            return body, f"br body decodes to more than {limit} bytes"
        return out, None
    return body, f"unsupported Content-Encoding {coding!r}"


def _dechunk(body: bytes) -> bytes:
    """Decode chunked transfer coding leniently: a body that is not chunked passes unchanged,
    a cut-off one keeps the chunks that were complete."""
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\n", pos)
        if eol < 0:
            break
        size_field = body[pos:eol].split(b";", 1)[0].strip()
        try:
            size = int(size_field, 16)
        except ValueError:
            if pos == 0:
                return body
            break
        if size == 0:
            break
        start = eol + 1
        out += body[start : start + size]
        pos = start + size
        if body[pos : pos + 2] == b"\r\n":
            pos += 2
        elif body[pos : pos + 1] == b"\n":
            pos += 1
    return bytes(out)
