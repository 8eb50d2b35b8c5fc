"""Turn an HTML payload into text: pick the right encoding, never fail on bad bytes.

Precedence follows browsers (BOM, HTTP charset, <meta> charset, then detection), with one
pragmatic change: a page labelled latin-1/cp1252/ascii (all cp1252 for WHATWG) whose bytes
are valid UTF-8 with non-ASCII characters is decoded as UTF-8. That mislabel is common on the
web, and real cp1252 text is practically never valid multi-byte UTF-8.
"""

from __future__ import annotations

import codecs
import re

from resiliparse.parse.encoding import detect_encoding, map_encoding_to_html5

__all__ = ["decode_html", "looks_binary"]

_META_SCAN = 4096  # bytes of the page searched for a <meta> charset
_MAX_BAD_RATIO = 0.001  # a declared charset may leave this share of characters undecodable
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# WHATWG decodes these labels with a superset codec; Python's strict codecs would fail on pages
_SUPERSETS = {"gbk": "gb18030", "gb2312": "gb18030", "shift_jis": "cp932", "euc_kr": "cp949"}
_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)""", re.IGNORECASE | re.DOTALL
)
_CONTROL = bytes(set(range(32)) - {9, 10, 12, 13, 27})


def decode_html(payload: bytes, http_charset: str | None) -> tuple[str, str]:
    """Decode an HTML payload; returns (text, Python codec name used). Never raises."""
    for bom, enc in _BOMS:
        if payload.startswith(bom):
            return payload[len(bom) :].decode(enc, "replace"), enc
    for label in (http_charset, _meta_charset(payload)):
        enc = _codec(label)
        if enc is None:
            continue
        if enc == "cp1252" and not payload.isascii() and _is_utf8(payload):
            return payload.decode("utf-8"), "utf-8"
        text = _decode_leniently(payload, enc)
        if text is not None:
            return text, enc
    enc = _codec(detect_encoding(payload)) or "utf-8"
    if enc != "utf-8" and _is_utf8(payload):
        enc = "utf-8"
    return payload.decode(enc, "replace"), enc


def looks_binary(payload: bytes) -> bool:
    """True for binary junk served as text/html: NUL bytes or many control bytes at the start."""
    head = payload[:2048]
    if not head or head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False  # UTF-16 text is full of NUL bytes
    if b"\x00" in head:
        return True
    controls = len(head) - len(head.translate(None, _CONTROL))
    return controls > max(8, len(head) // 20)


def _codec(label: str | bytes | None) -> str | None:
    """Python codec for an HTTP/HTML charset label (WHATWG aliases), or None if unknown."""
    if not label:
        return None
    if isinstance(label, bytes):
        label = label.decode("ascii", "ignore")
    name = map_encoding_to_html5(label.strip().strip("\"'"), fallback_utf8=False)
    if name is None:
        return None
    name = _SUPERSETS.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _meta_charset(payload: bytes) -> bytes | None:
    m = _META_CHARSET.search(payload, 0, _META_SCAN)
    return m.group(1) if m else None


def _is_utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _decode_leniently(payload: bytes, enc: str) -> str | None:
    """Decode with `enc`, or None if it leaves more than a few characters undecodable."""
    try:
        return payload.decode(enc)
    except UnicodeDecodeError:
        pass
    except LookupError:
        return None
    text = payload.decode(enc, "replace")
    bad = text.count("\ufffd")
    return text if bad <= max(2, len(text) * _MAX_BAD_RATIO) else None
