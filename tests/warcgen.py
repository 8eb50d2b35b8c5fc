"""Build small WARC files as bytes for tests: exact Content-Length, one gzip member per record."""

from __future__ import annotations

import gzip as _gzip
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

DEFAULT_DATE = datetime(2024, 5, 20, 12, 0, 0, tzinfo=UTC)


def http_response(
    body: bytes,
    content_type: str | None = "text/html; charset=utf-8",
    status: int = 200,
    http_headers: dict[str, str] | list[tuple[str, str]] | None = None,
    status_line: bytes | None = None,
) -> bytes:
    """An HTTP/1.1 response message: status line, headers, blank line, body.

    A Content-Length header is added unless `http_headers` brings one (or Transfer-Encoding).
    `status_line=b""` leaves the status line out (a broken server or crawler).
    """
    reasons = {200: "OK", 301: "Moved Permanently", 404: "Not Found", 500: "Internal Server Error"}
    if status_line is None:
        status_line = f"HTTP/1.1 {status} {reasons.get(status, 'Status')}".encode()
    items = list(http_headers.items() if isinstance(http_headers, dict) else http_headers or [])
    names = {k.lower() for k, _ in items}
    if content_type is not None and "content-type" not in names:
        items.insert(0, ("Content-Type", content_type))
    if not names & {"content-length", "transfer-encoding"}:
        items.append(("Content-Length", str(len(body))))
    lines = [status_line] if status_line else []
    lines += [f"{k}: {v}".encode("latin-1") for k, v in items]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def record(
    type: str = "response",
    url: str = "http://example.com/",
    http_body: bytes = b"<html><body>hello</body></html>",
    content_type: str | None = "text/html; charset=utf-8",
    status: int = 200,
    version: str = "WARC/1.0",
    record_id: str | None = None,
    date: datetime | str = DEFAULT_DATE,
    http_headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    block: bytes | None = None,
    content_length: int | None = None,
    warc_content_type: str | None = None,
    status_line: bytes | None = None,
) -> bytes:
    """One complete WARC record (headers, block, the two CRLFs that end it).

    For `response` the block is an HTTP response built from `http_body` and friends; for
    `request` a small GET; for other types `http_body` itself. `block` overrides all that,
    `content_length` writes a wrong (lying) Content-Length on purpose.
    """
    if block is None:
        if type == "response":
            block = http_response(http_body, content_type, status, http_headers, status_line)
        elif type == "request":
            block = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
        else:
            block = http_body
    if warc_content_type is None:
        warc_content_type = {
            "response": "application/http; msgtype=response",
            "request": "application/http; msgtype=request",
            "warcinfo": "application/warc-fields",
            "metadata": "application/warc-fields",
        }.get(type, content_type or "application/octet-stream")
    if record_id is None:
        record_id = f"<urn:uuid:{uuid.uuid4()}>"
    if isinstance(date, datetime):
        date = date.strftime("%Y-%m-%dT%H:%M:%SZ")
    headers = [
        ("WARC-Type", type),
        ("WARC-Date", date),
        ("WARC-Record-ID", record_id),
    ]
    if type != "warcinfo":
        headers.append(("WARC-Target-URI", url))
    headers += [
        ("Content-Type", warc_content_type),
        ("Content-Length", str(len(block) if content_length is None else content_length)),
    ]
    head = version.encode() + b"\r\n"
    head += b"".join(f"{k}: {v}\r\n".encode() for k, v in headers)
    return head + b"\r\n" + block + b"\r\n\r\n"


def gz(record_bytes: bytes) -> bytes:
    """One gzip member holding `record_bytes` (the Common Crawl per-record layout)."""
    return _gzip.compress(record_bytes, mtime=0)


def write_warc(path: str | Path, records: Iterable[bytes], gzip: bool = True) -> Path:
    """Write records to `path`: one gzip member per record if `gzip`, else plain bytes.

    For a whole-file gzip WARC, write `gz(b"".join(records))` yourself.
    """
    path = Path(path)
    with open(path, "wb") as f:
        for rec in records:
            f.write(gz(rec) if gzip else rec)
    return path


def member_offsets(records: Iterable[bytes]) -> list[int]:
    """Compressed start offset of each record's member, as `write_warc(gzip=True)` lays them out."""
    offsets, pos = [], 0
    for rec in records:
        offsets.append(pos)
        pos += len(gz(rec))
    return offsets
