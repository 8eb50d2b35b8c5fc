"""Pages built to hurt parsers: each gets a decision within its time limit, memory stays
bounded, and the pages around it are still extracted (issue 8's bad-input corpus, HTML part)."""

from __future__ import annotations

import pyarrow as pa
import pytest

from refine.extract.engines import ExtractConfig
from refine.extract.stages import PAGE_SCHEMA, Extract


def good_page(topic: str) -> bytes:
    sentences = [
        f"The {topic} committee met on Tuesday evening to discuss the plans for next year.",
        f"Several members argued that the {topic} budget should grow to cover new equipment.",
        "Others asked for a public meeting so that residents could give their opinion first.",
        "The chair promised a written report within a month and closed the session at nine.",
    ]
    body = "".join(f"<p>{s} {s.lower()}</p>" for s in sentences)
    head = f"<html><head><title>{topic}</title></head>"
    return f"{head}<body><article><h1>{topic}</h1>{body}</article></body></html>".encode()


GOOD = good_page("library")

NESTED = ("<div>" * 100_000 + "deep text" + "</div>" * 100_000).encode()
LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + "".join(
        f'<!ENTITY lol{i} "{("&lol" + str(i - 1) + ";") * 10 if i > 1 else "&lol;" * 10}">'
        for i in range(1, 10)
    )
    + "]><html><body><p>&lol9;</p></body></html>"
).encode()


def _invalid_utf8_everywhere() -> bytes:
    body = bytearray(GOOD)
    for i in range(0, len(body), 7):
        body[i] = 0xFF if i % 2 else 0xC3  # lone lead bytes and invalid bytes all through
    return bytes(body)


HOSTILE = {"nested": NESTED, "billion_laughs": LAUGHS, "bad_utf8": _invalid_utf8_everywhere()}


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse"])
def test_hostile_pages_get_a_decision_and_neighbours_survive(engine):
    pages = {"before": good_page("library"), **HOSTILE, "after": good_page("harbour")}
    n = len(pages)
    table = pa.table(
        {
            "id": list(pages),
            "url": [f"http://x.example/{k}" for k in pages],
            "date": pa.array([None] * n, pa.timestamp("us", tz="UTC")),
            "source": [f"f#{i}" for i in range(n)],
            "html": pa.array(list(pages.values()), pa.large_binary()),
            "charset": pa.array([None] * n, pa.string()),
        },
        schema=PAGE_SCHEMA,
    )
    stage = Extract(ExtractConfig(engine=engine, timeout=20, memory_limit_mb=2048))
    res = stage.process(table)
    log = {r["id"]: r for r in res.log.to_pylist()}
    assert log["before"]["kept"] and log["after"]["kept"]
    for name in HOSTILE:
        row = log[name]
        assert row["kept"] or row["reason"] in {
            "no_text",
            "extract_timeout",
            "extract_crashed",
            "extract_error",
            "binary_content",
        }, row
        assert (row["extract_seconds"] or 0) < 25
    if log["billion_laughs"]["kept"]:
        text = res.table.filter(pa.compute.equal(res.table["id"], "billion_laughs"))["text"][0]
        assert len(text.as_py()) < 100_000, "entities were expanded"
    res.stats.check_balance()
