"""Charset decoding: pages come out as the text a browser shows, whatever their labels say."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refine.extract.charset import decode_html, looks_binary
from refine.extract.warc import WarcSlice, iter_slice

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("REFINE_TEST_DATA", REPO.parent / "shared" / "data"))
PAGES = DATA / "warc" / "web-pages-a.warc.gz"

GERMAN = "Grüße aus Köln: Die Straße ist schön, das Wetter übermäßig heiß. " * 5
CHINESE = "这是一个中文网页，我们在这里测试编码检测是否正确。北京的天气很好。" * 5
JAPANESE = "これは日本語のページです。文字コードの自動検出をテストしています。" * 5


def html(body: str, head: str = "") -> str:
    return (
        f"<!DOCTYPE html><html><head>{head}<title>t</title></head><body><p>{body}</p></body></html>"
    )


@pytest.mark.parametrize(
    ("text", "encoding"),
    [(CHINESE, "gbk"), (JAPANESE, "shift_jis"), (GERMAN, "windows-1252"), (CHINESE, "utf-8")],
)
def test_unlabelled_pages_are_detected(text, encoding):
    got, used = decode_html(html(text).encode(encoding), None)
    assert text in got, used


def test_http_charset_wins_over_meta():
    payload = html(GERMAN, '<meta charset="utf-8">').encode("cp1252")
    got, used = decode_html(payload, "ISO-8859-1")
    assert GERMAN in got and used == "cp1252"


def test_meta_charset_is_used_without_http_charset():
    payload = html(
        GERMAN, '<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-15">'
    )
    got, used = decode_html(payload.encode("iso-8859-15"), None)
    assert GERMAN in got and used == "iso8859-15"


def test_wrong_http_charset_falls_back():
    payload = html(CHINESE, '<meta charset="gb2312">').encode("gb18030")
    got, used = decode_html(payload, "utf-8")  # server says utf-8, page is GBK
    assert CHINESE in got and used == "gb18030"
    got, _ = decode_html(html(CHINESE).encode("gb18030"), "no-such-charset")
    assert CHINESE in got


def test_utf8_labelled_latin1_is_read_as_utf8():
    got, used = decode_html(html(GERMAN).encode("utf-8"), "iso-8859-1")
    assert GERMAN in got and used == "utf-8"


def test_bom_and_bad_bytes_never_raise():
    got, used = decode_html("\ufeff".encode() + html(GERMAN).encode(), "windows-1252")
    assert GERMAN in got and not got.startswith("\ufeff") and used == "utf-8"
    got, _ = decode_html(b"<html>\xff\xfe\xfa broken \x80 bytes</html>", "utf-8")
    assert "broken" in got


def test_looks_binary():
    assert looks_binary(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(500))
    assert looks_binary(bytes(range(256)) * 4)
    assert not looks_binary(html(GERMAN).encode("utf-8"))
    assert not looks_binary(html(CHINESE).encode("gbk"))
    assert not looks_binary("<html>hi</html>".encode("utf-16"))
    assert not looks_binary(b"")


@pytest.mark.skipif(not PAGES.exists(), reason=f"sample WARC missing: {PAGES}")
def test_real_pages_without_charset_decode_cleanly():
    """web-pages-a: text/html with no charset, de/en plus zh, ja, pl pages."""
    clean = total = 0
    for rec in iter_slice(WarcSlice(str(PAGES), 0, None)):
        assert rec.reason is None and rec.charset is None
        text, _ = decode_html(rec.payload, rec.charset)
        total += 1
        clean += text.count("\ufffd") <= 2
        assert not looks_binary(rec.payload), rec.url
    assert total == 505
    assert clean >= 0.97 * total
