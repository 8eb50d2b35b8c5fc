"""HTML -> text extraction in a child process: engines, options, time limits, crashes."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import extract_fixtures
import pytest
from pydantic import ValidationError
from support import require_shared_data

from refine.errors import ConfigError
from refine.extract.engines import (
    ExtractConfig,
    Extractor,
    check_engine,
    get_extractor,
)

FIXTURES = extract_fixtures.__name__  # importable in the child: it gets the parent's sys.path

ARTICLE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Harbour seals return to the estuary</title></head>
<body>
<header><nav><ul>
  <li><a href="/">Home</a></li><li><a href="/news">Newsroom</a></li>
  <li><a href="/subscribe">Subscribe today</a></li><li><a href="/login">Sign in</a></li>
</ul></nav></header>
<main><article>
<h1>Harbour seals return to the estuary</h1>
<p>After an absence of almost twenty years, a colony of harbour seals has settled again on the
sandbanks at the mouth of the river, volunteers from the wildlife trust reported on Monday.</p>
<p>The volunteers counted forty-three adults and eleven pups during the low tide survey, which
they carried out from boats kept at a distance so that the animals would not be disturbed.</p>
<p>Researchers at the university believe that cleaner water and the recovery of fish stocks in the
estuary explain why the seals have come back, and they plan to tag several animals next spring.</p>
<p>Walkers are asked to keep dogs on a lead along the shore and to stay at least one hundred metres
away from any seal resting on the beach, even if it looks abandoned or unwell.</p>
</article></main>
<footer><p>Copyright 2024 Riverside Gazette Media Group. All rights reserved.</p>
<a href="/privacy">Privacy policy</a> <a href="/cookies">Cookie settings</a></footer>
</body></html>
"""
SENTENCE = "a colony of harbour seals has settled again on the\nsandbanks"


def _normalize(text: str) -> str:
    return " ".join(text.split())


@pytest.fixture
def extractor_factory():
    made: list[Extractor] = []

    def make(**kwargs) -> Extractor:
        ex = Extractor(ExtractConfig(**kwargs))
        made.append(ex)
        return ex

    yield make
    for ex in made:
        ex.close()


def _real_pages(n: int) -> list[tuple[str, str | None]]:
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    path = require_shared_data() / "warc" / "web-pages-a.warc.gz"
    pages = []
    with open(path, "rb") as f:
        for rec in ArchiveIterator(f, parse_http=True, record_types=WarcRecordType.response):
            body = rec.reader.read()
            if "html" in (rec.http_content_type or ""):
                pages.append(
                    (bytes_to_str(body, detect_encoding(body)), rec.headers["WARC-Target-URI"])
                )
            if len(pages) == n:
                break
    return pages


# --------------------------------------------------------------------------- engines


def test_trafilatura_keeps_article_and_drops_boilerplate(extractor_factory):
    res = extractor_factory(engine="trafilatura").extract(ARTICLE, "https://example.org/seals")
    assert res.reason is None and res.detail is None
    text = _normalize(res.text)
    assert _normalize(SENTENCE) in text
    assert "forty-three adults and eleven pups" in text
    for boilerplate in ("Subscribe today", "Sign in", "Cookie settings", "All rights reserved"):
        assert boilerplate not in text
    assert res.seconds > 0


def test_resiliparse_keeps_article(extractor_factory):
    res = extractor_factory(engine="resiliparse").extract(ARTICLE, None)
    assert res.reason is None
    text = _normalize(res.text)
    assert _normalize(SENTENCE) in text
    assert "tag several animals next spring" in text


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse"])
def test_page_without_text_is_no_text(extractor_factory, engine):
    res = extractor_factory(engine=engine).extract("<html><body>  </body></html>")
    assert (res.text, res.reason) == (None, "no_text")


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse"])
def test_same_text_as_calling_the_engine_in_process(extractor_factory, engine):
    """No silent option mismatch between the child and a direct call with the same options.

    trafilatura's ``deduplicate`` cache is per process, so the in-process run starts from an empty
    cache like the fresh child does and sees the pages in the same order.
    """
    pages = _real_pages(25)
    if engine == "trafilatura":
        import trafilatura
        from trafilatura.deduplication import LRU_TEST

        LRU_TEST.clear()
        direct = [
            trafilatura.extract(
                html,
                url=url,
                favor_precision=True,
                include_comments=False,
                include_tables=True,
                deduplicate=True,
            )
            for html, url in pages
        ]
    else:
        from resiliparse.extract.html2text import extract_plain_text

        options = dict(  # datatrove's Resiliparse extractor defaults
            preserve_formatting=True,
            main_content=True,
            list_bullets=True,
            alt_texts=False,
            links=False,
            form_fields=False,
            noscript=False,
            comments=True,
        )
        direct = [extract_plain_text(html, **options) for html, _ in pages]
    results = extractor_factory(engine=engine).extract_many(pages)
    assert len(results) == len(pages)
    assert sum(r.reason is None for r in results) >= 20
    for res, want in zip(results, direct, strict=True):
        assert res.text == (want if want and want.strip() else None)


def test_options_reach_the_engine(extractor_factory):
    html = ARTICLE.replace(
        "</article>",
        "<table><tr><td>Seal count table forty three</td><td>pups</td></tr></table></article>",
    )
    with_tables = extractor_factory(include_tables=True).extract(html).text
    without = extractor_factory(include_tables=False).extract(html).text
    assert "Seal count table" in with_tables
    assert "Seal count table" not in without


def test_custom_engine_and_document_order(extractor_factory):
    ex = extractor_factory(engine=f"{FIXTURES}:echo")
    docs = [(f"page {i} " + "x" * (i * 50_000), f"https://e.org/{i}") for i in range(12)]
    results = ex.extract_many(iter(docs))  # any iterable, consumed lazily
    assert [r.text for r in results] == [html for html, _ in docs]
    assert ex.extract("héllo \U0001f600 wörld").text == "héllo \U0001f600 wörld"
    assert ex.extract_many([]) == []


def test_error_in_the_document_source_leaves_the_extractor_usable(extractor_factory):
    ex = extractor_factory(engine=f"{FIXTURES}:echo")

    def docs():
        yield from [("a", None), ("b", None)]
        raise OSError("truncated WARC")

    with pytest.raises(OSError, match="truncated WARC"):
        ex.extract_many(docs())
    assert [r.text for r in ex.extract_many([("c", None), ("d", None)])] == ["c", "d"]


def test_engine_returning_non_text_is_an_error(extractor_factory):
    res = extractor_factory(engine=f"{FIXTURES}:not_str").extract("x")
    assert res.reason == "extract_error" and "TypeError" in res.detail


# --------------------------------------------------------------------------- limits


def test_slow_python_code_times_out_and_next_document_works(extractor_factory):
    ex = extractor_factory(engine=f"{FIXTURES}:by_content", timeout=1)
    t0 = time.monotonic()
    res = ex.extract("slow")
    assert res.reason == "extract_timeout" and res.text is None
    assert time.monotonic() - t0 < 5
    assert ex.extract("fine").text == "fine"


def test_code_deaf_to_alarms_is_killed_and_child_restarted(extractor_factory):
    """Like a long lxml call in C: only the parent's SIGKILL stops it."""
    ex = extractor_factory(engine=f"{FIXTURES}:stuck", timeout=1)
    t0 = time.monotonic()
    res = ex.extract("a")
    assert res.reason == "extract_timeout" and "killed" in res.detail
    assert 0.9 < res.seconds < 3 and time.monotonic() - t0 < 5
    ex2 = extractor_factory(engine=f"{FIXTURES}:by_content", timeout=1)
    assert ex2.extract("x").text == "x"


def test_crash_is_reported_and_next_document_works(extractor_factory):
    ex = extractor_factory(engine=f"{FIXTURES}:by_content", timeout=5)
    res = ex.extract("crash")
    assert res.reason == "extract_crashed" and "SIGKILL" in res.detail
    assert ex.extract("after").text == "after"
    assert ex.restarts == 1


def test_exception_is_extract_error_and_child_survives(extractor_factory):
    ex = extractor_factory(engine=f"{FIXTURES}:by_content", timeout=5)
    res = ex.extract("boom")
    assert res.reason == "extract_error"
    assert "ValueError" in res.detail and "bad page" in res.detail
    assert ex.extract("after").text == "after"
    assert ex.restarts == 0


def test_memory_limit_turns_a_huge_allocation_into_a_crash(extractor_factory):
    ex = extractor_factory(engine=f"{FIXTURES}:hog", timeout=10, memory_limit_mb=512)
    res = ex.extract("x")
    assert res.reason == "extract_crashed" and "MemoryError" in res.detail


def test_failures_inside_a_batch_hit_only_their_own_document(extractor_factory):
    """Documents queued behind a slow or crashing one are re-sent to a fresh child."""
    ex = extractor_factory(engine=f"{FIXTURES}:by_content", timeout=1)
    pages = ["a", "slow", "b", "crash", "c", "boom", "none", "d", "e", "f"]
    results = ex.extract_many((p, None) for p in pages)
    assert [r.reason for r in results] == [
        None,
        "extract_timeout",
        None,
        "extract_crashed",
        None,
        "extract_error",
        "no_text",
        None,
        None,
        None,
    ]
    assert [r.text for r in results if r.reason is None] == ["a", "b", "c", "d", "e", "f"]


# --------------------------------------------------------------------------- lifecycle


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_child_starts_lazily_and_exits_on_close():
    ex = Extractor(ExtractConfig(engine=f"{FIXTURES}:echo"))
    assert ex._child is None
    assert ex.extract("x").text == "x"
    pid = ex._child.proc.pid
    assert _alive(pid)
    ex.close()
    assert not _alive(pid)
    assert ex.extract("y").text == "y"  # usable again: a new child
    ex.close()


def test_child_exits_when_its_stdin_closes():
    with Extractor(ExtractConfig(engine=f"{FIXTURES}:echo")) as ex:
        ex.extract("x")
        proc = ex._child.proc
        proc.stdin.close()  # what the child sees if the parent dies
        assert proc.wait(timeout=5) == 0


def test_get_extractor_is_cached_per_config_and_thread():
    import threading

    config = ExtractConfig(engine=f"{FIXTURES}:echo")
    first = get_extractor(config)
    assert get_extractor(ExtractConfig(engine=f"{FIXTURES}:echo")) is first
    assert get_extractor(ExtractConfig(engine=f"{FIXTURES}:echo", timeout=3)) is not first
    other: list[Extractor] = []
    t = threading.Thread(target=lambda: other.append(get_extractor(config)))
    t.start()
    t.join()
    assert other[0] is not first
    for ex in (first, other[0], get_extractor(ExtractConfig(engine=f"{FIXTURES}:echo", timeout=3))):
        ex.close()


# --------------------------------------------------------------------------- check_engine


@pytest.mark.parametrize("engine", ["trafilatura", "resiliparse", f"{FIXTURES}:echo"])
def test_check_engine_accepts_installed_engines(engine):
    check_engine(ExtractConfig(engine=engine))


def test_checking_the_config_leaves_the_drivers_trafilatura_as_shipped():
    """Building a pipeline (in the driver, or in a user's own process) checks that trafilatura
    imports; only the extraction child patches it with the speedups."""
    code = (
        "from lxml import etree\n"
        "from refine.extract.engines import ExtractConfig, check_engine\n"
        "check_engine(ExtractConfig())\n"
        "from trafilatura import xpaths\n"
        "assert all(type(x) is etree.XPath for x in xpaths.OVERALL_DISCARD_XPATH)\n"
        "from refine.extract import trafilatura_speedups\n"
        "assert trafilatura_speedups._INSTALLED is None\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "engine, message",
    [
        ("no_such_module:func", "cannot import module 'no_such_module'"),
        (f"{FIXTURES}:missing", "has no attribute 'missing'"),
        (f"{FIXTURES}:NOT_CALLABLE", "not callable"),
        ("beautifulsoup", "not a known engine"),
    ],
)
def test_check_engine_rejects_unusable_engines(engine, message):
    with pytest.raises(ConfigError, match=message):
        check_engine(ExtractConfig(engine=engine))


def test_bad_limits_are_rejected_when_the_config_is_built():
    with pytest.raises(ValidationError, match="timeout"):
        ExtractConfig(timeout=0)
    with pytest.raises(ValidationError, match="memory_limit_mb"):
        ExtractConfig(memory_limit_mb=10)
    with pytest.raises(ValidationError, match="output_format"):
        ExtractConfig(output_format="html")


def test_no_children_left_behind():
    """Every test above closed its extractors: no child of ours is still running."""
    import gc

    gc.collect()
    children = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"refine.extract.engines" in cmd:
            children.append(pid)
    assert children == []


def test_trafilatura_dedup_does_not_leak_between_partitions(extractor_factory):
    """With deduplicate=True, a partition's text must not depend on what the child saw before
    (otherwise a resumed or re-scheduled partition gives different documents)."""
    ex = extractor_factory(engine="trafilatura", deduplicate=True)
    batch = [(ARTICLE, f"https://example.org/seals/{i}") for i in range(4)]
    first = [r.text for r in ex.extract_many(batch)]
    second = [r.text for r in ex.extract_many(batch)]
    assert first == second
    assert first[0] and _normalize(SENTENCE) in _normalize(first[0])


# --------------------------------------------------------------------------- language pre-filter

GERMAN = (
    ARTICLE.replace('lang="en"', 'lang="de"').split("<main>")[0]
    + """<main><article>
<h1>Seehunde kehren in die Flussmündung zurück</h1>
<p>Nach fast zwanzig Jahren hat sich wieder eine Kolonie von Seehunden auf den Sandbänken an der
Mündung des Flusses niedergelassen, wie Freiwillige der Naturschutzstiftung am Montag
berichteten.</p>
<p>Die Freiwilligen zählten bei der Zählung während der Ebbe dreiundvierzig ausgewachsene Tiere
und elf Jungtiere, und zwar von Booten aus, die in sicherem Abstand gehalten wurden.</p>
<p>Forscher der Universität glauben, dass sauberes Wasser und die Erholung der Fischbestände in
der Flussmündung erklären, warum die Seehunde zurückgekommen sind.</p>
</article></main></body></html>"""
)


def test_language_prefilter_skips_other_languages_and_leaves_the_rest_untouched(
    extractor_factory,
):
    plain = extractor_factory(engine="trafilatura")
    pre = extractor_factory(engine="trafilatura", prefilter_languages=["en"])
    german = pre.extract(GERMAN, "https://example.de/seehunde")
    assert german.reason == "language_prefilter" and german.text is None
    assert german.detail.startswith("quick text: de ")
    assert plain.extract(GERMAN, None).text  # the engine alone would have extracted it
    # English: exactly the engine's text; German wanted too: extracted
    assert pre.extract(ARTICLE, None).text == plain.extract(ARTICLE, None).text
    both = extractor_factory(engine="trafilatura", prefilter_languages=["en", "de"])
    assert both.extract(GERMAN, None).text == plain.extract(GERMAN, None).text
    # too little quick text to judge: the engine decides
    short = "<html><body><p>Kurzer Text auf Deutsch.</p></body></html>"
    assert pre.extract(short, None).reason != "language_prefilter"
    # 10^5 nested divs: the quick pass is linear in depth, the page gets the engine's decision
    # at once instead of a timeout (resiliparse's main-content mode would take minutes)
    nested = "<div>" * 100_000 + "deep text" + "</div>" * 100_000
    got, alone = pre.extract(nested, None), plain.extract(nested, None)
    assert (got.reason, got.text) == (alone.reason, alone.text) and got.seconds < 5


def test_language_prefilter_config_is_checked_before_work():
    with pytest.raises(ConfigError, match="resiliparse"):
        check_engine(ExtractConfig(engine="resiliparse", prefilter_languages=["en"]))
    with pytest.raises(ConfigError):
        check_engine(ExtractConfig(prefilter_languages=["en"], prefilter_model="/nonexistent.bin"))
    with pytest.raises(ValidationError):
        ExtractConfig(prefilter_languages=["en"], prefilter_max_score=0)


def test_language_prefilter_on_real_pages_loses_no_page_the_language_stage_keeps(
    extractor_factory,
):
    """On 200 real pages (mostly German and English): the pre-filter skips the engine on many
    pages, and of the pages whose full extraction passes the language stage's rule (en, > 0.65),
    it drops at most one (measured here: a Chinese link list whose trafilatura text is an English
    copyright line)."""
    from refine.models import DEFAULT_LID_MODEL, fasttext_model

    pages = _real_pages(200)
    plain = extractor_factory(engine="trafilatura").extract_many(pages)
    pre = extractor_factory(engine="trafilatura", prefilter_languages=["en"]).extract_many(pages)
    model = fasttext_model(DEFAULT_LID_MODEL)

    def passes_language(text: str | None) -> bool:
        if not text:
            return False
        labels, scores = model.predict(text.replace("\n", " "), k=1)
        return labels[0] == "__label__en" and scores[0] > 0.65

    skipped = [i for i, r in enumerate(pre) if r.reason == "language_prefilter"]
    lost = [pages[i][1] for i in skipped if passes_language(plain[i].text)]
    assert len(skipped) >= 0.3 * len(pages)
    assert len(lost) <= 1, lost
    # every page the pre-filter lets through gets exactly the engine's text
    for a, b in zip(plain, pre, strict=True):
        if b.reason != "language_prefilter":
            assert (a.text, a.reason) == (b.text, b.reason)
