"""refine.extract.trafilatura_speedups: the rewrites must not change one extracted character."""

from __future__ import annotations

import itertools
import json
import random
import re
import subprocess
import sys

import pytest
from lxml import etree
from support import REPO, extract_sample_pages, require_shared_data

from refine.extract import trafilatura_speedups as ts

NS = {"re": ts.REGEXP_NS}

# Shapes trafilatura uses (anchors, optional characters, classes, groups, quotes) and a few more.
PATTERNS = [
    "abc",
    "^abc",
    "abc$",
    "^abc$",
    "abc\\Z",
    "bread-?crumb",
    "dfp[Aa]d",
    "^(?:nav|post-nav|ZendeskForm)",
    "(?:^| )ad-",
    " ad |-ad-|(?:^| )ad-",
    "content[-_]main|content(?:-|__)body",
    "^comment[s-]",
    "it's",
    "x|^y|z$",
    "[a-c]x",
    "ab?c?d",
    "^$",
    "^",
    "(?:a|)b",
    "^(?:jp-|dpsp-content)|bmdh",
]


def _values(pattern: str, rng: random.Random) -> list[str]:
    """Strings around the pattern's literals: at the start, end, middle, alone, with newlines."""
    pieces = {"", " ", "\n", "x", "a", "b", "ab", "it's", "AD-"}
    pieces.update(a.text for a in ts._literals(pattern) or ())  # noqa: SLF001
    pieces = sorted(pieces)
    out = set()
    for p in pieces:
        for pre, post in itertools.product(["", " ", "q", "\n"], ["", " ", "q", "\n", "\n\n"]):
            out.add(pre + p + post)
        out.update({p[1:], p[:-1], p.upper(), p * 2})
    for _ in range(200):
        out.add("".join(rng.choice(pieces) for _ in range(rng.randint(1, 4))))
    return sorted(out)


@pytest.mark.parametrize("pattern", PATTERNS)
def test_translated_regex_selects_what_python_re_finds(pattern):
    """For one attribute, the XPath says yes exactly where ``re.search`` does (missing attribute =
    the empty string, as lxml's re:test sees it); and it agrees with lxml's own re:test."""
    rng = random.Random(pattern)
    translated = ts.translate_regex("@class", pattern)
    assert translated is not None, pattern
    values = _values(pattern, rng)
    body = etree.Element("body")
    for v in values:
        etree.SubElement(body, "div", {"class": v})
    etree.SubElement(body, "div")  # no attribute
    expected = [bool(re.search(pattern, v)) for v in values] + [bool(re.search(pattern, ""))]
    got_new = [bool(e.xpath(translated)) for e in body]
    literal = f"'{pattern}'" if "'" not in pattern else f'"{pattern}"'
    got_lxml = [bool(e.xpath(f"re:test(@class, {literal})", namespaces=NS)) for e in body]
    assert got_lxml == expected  # our reading of lxml's re:test
    rows = zip(values + [None], expected, got_new, strict=True)
    mismatches = [(v, x, y) for v, x, y in rows if x != y]
    assert not mismatches, mismatches[:5]


@pytest.mark.parametrize(
    "pattern,flags",
    [
        ("(^|\\s)link(\\s|$)", ""),
        ("fulltext", "i"),
        ("a.*b", ""),
        ("\\bnav", ""),
        ("[^a]x", ""),
        ("a+", ""),
    ],
)
def test_untranslatable_patterns_are_left_alone(pattern, flags):
    assert ts.translate_regex("@class", pattern, flags) is None
    path = f".//div[re:test(@class, '{pattern}'{', ' + repr(flags) if flags else ''})]"
    new, done, kept = ts.translate_path(path)
    assert done == 0 and kept == 1
    assert "re:test(@class" in new  # kept, at most behind an attribute-existence guard


def test_union_argument_uses_the_first_attribute_in_document_order():
    """``re:test(@id|@class, P)`` tests whichever of the two comes first in the source."""
    html = (
        '<html><body><div id="x" class="y"/><div class="x" id="y"/><div class="x"/>'
        '<div id="x"/><div id="y" class="x"/><div/></body></html>'
    )
    doc = etree.fromstring(html, etree.HTMLParser())
    old = etree.XPath(".//div[re:test(@id|@class, '^x$')]", namespaces=NS)
    new_path, done, _ = ts.translate_path(old.path)
    assert done == 1 and "re:test" not in new_path
    new = etree.XPath(new_path)
    divs = doc.findall(".//div")
    assert [divs.index(e) for e in old(doc)] == [0, 1, 2, 3]
    assert [divs.index(e) for e in new(doc)] == [0, 1, 2, 3]


def test_calls_in_a_path_are_all_found_and_rewritten():
    path = (
        ".//*[self::div or self::p][re:test(@id, 'a|b') or contains(@x, 'y)') or\n"
        " re:test(@class, \"it's\") or re:test(@class, 'q', 'i')][not(.//h1)]"
    )
    new, done, kept = ts.translate_path(path)
    assert (done, kept) == (2, 1)
    assert new.count("re:test(") == 1 and "contains(@x, 'y)')" in new
    etree.XPath(new, namespaces=NS)  # still valid XPath


def test_the_equivalence_check_rejects_a_wrong_rewrite():
    path = ".//div[re:test(@class, '^ab')]"
    old = etree.XPath(path, namespaces=NS)
    assert ts.check_equivalent(old, etree.XPath(ts.translate_path(path)[0]), path)
    assert not ts.check_equivalent(old, etree.XPath(".//div[contains(@class, 'ab')]"), path)


def test_outermost_matches():
    doc = etree.fromstring("<a><b><c><d/></c></b><e><f/></e><g/></a>")
    b, c, d, e, f, g = (doc.find(f".//{t}") for t in "bcdefg")
    assert ts._outermost(dict.fromkeys([d, b, f, c])) == [b, f]  # noqa: SLF001
    assert ts._outermost(dict.fromkeys([d, f, g])) == [d, f, g]  # noqa: SLF001
    assert ts._outermost(dict.fromkeys([doc, d])) == [doc]  # noqa: SLF001


def test_same_text_on_every_sample_page():
    """The whole effect on real pages: 698 HTML pages of the sample crawl, trafilatura untouched
    and then with the speedups installed, in one fresh process; every text must be identical.
    (Speed is reported, not asserted: docs/benchmarks.md.)"""
    data = require_shared_data()
    proc = subprocess.run(
        [sys.executable, "scripts/bench_trafilatura_speedups.py", "--repeat", "1"],
        cwd=REPO,
        env={**__import__("os").environ, "REFINE_TEST_DATA": str(data)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.stdout.strip(), proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["pages"] >= 600 and result["pages_with_text"] >= 500
    assert result["pages_differing"] == 0, result["differing_urls"]
    install = result["install"]
    assert install["rejected"] == 0 and install["python_paths"] >= 15
    assert install["expressions"] + install["python_paths"] >= 25
    assert install["parser_lookup"] and install["prune"] and len(install["patched"]) >= 3
    assert proc.returncode == 0


# --------------------------------------------------------------------------- source patches


def test_patch_source_replaces_one_passage_and_refuses_otherwise():
    def f(x):
        y = x + 1
        return y * 2

    fast = ts.patch_source(f, "        y = x + 1\n", "        y = 1 + x\n")
    assert fast is not None and fast(3) == f(3) == 8 and fast.__wrapped_original__ is f
    assert ts.patch_source(f, "        y = x + 2\n", "        y = 0\n") is None  # not there

    def g(x):
        x = x + 1
        x = x + 1
        return x

    assert ts.patch_source(g, "        x = x + 1\n", "        x = x + 2\n") is None  # twice


def test_source_patches_all_apply_to_the_installed_trafilatura():
    report = ts.install()
    assert sorted(report.patched) == sorted(
        [f"{module}.{name}" for module, name, _, _ in ts._SOURCE_PATCHES]  # noqa: SLF001
        + ["trafilatura.utils.INVALID_XML_CHARS"]
    )
    from trafilatura import core, htmlprocessing

    assert core.tree_cleaning is htmlprocessing.tree_cleaning  # the name core imported, too
    assert htmlprocessing.tree_cleaning.__wrapped_original__ is not None


def test_a_patch_applies_only_over_the_code_it_relies_on(monkeypatch):
    """readability's faster link density re-implements ``get_link_density`` and assumes
    ``text_length`` is pure: each must be exactly trafilatura 2.3.1's, or the patch is not
    applied (under ``speedups: force`` on another version too)."""
    from trafilatura import readability_lxml

    patched = "trafilatura.readability_lxml.Document.score_paragraphs"
    assert ts._requirements_hold(patched)  # noqa: SLF001 (the installed, tested version)

    def text_length(elem):  # same name, another body: the link lengths may not be reusable
        return len(elem.text_content())

    monkeypatch.setattr(readability_lxml, "text_length", text_length)
    assert not ts._requirements_hold(patched)  # noqa: SLF001
    monkeypatch.undo()

    def get_link_density(self, elem):
        return 0.0

    monkeypatch.setattr(readability_lxml.Document, "get_link_density", get_link_density)
    assert not ts._requirements_hold(patched)  # noqa: SLF001
    assert ts._requirements_hold("trafilatura.htmlprocessing.tree_cleaning")  # noqa: SLF001


def test_tree_cleaning_skips_only_tags_that_are_not_there():
    """Nested cleaned tags, a cleaned tag inside another one's subtree, tails kept: the same
    tree as trafilatura's own loop (which walks the whole tree once per tag)."""
    from copy import deepcopy

    from lxml import html as lxml_html
    from trafilatura import htmlprocessing
    from trafilatura.settings import Extractor

    ts.install()
    fast = htmlprocessing.tree_cleaning
    original = fast.__wrapped_original__
    pages = [
        "<html><body><aside>a<aside>b</aside>c</aside>t1<p>keep</p><footer>f<nav>n</nav></footer>"
        "t2<div><script>x</script>tail<figure><table><tr><td>cell</td></tr></table></figure>"
        "<svg><a>s</a></svg>after</div><form><input/>hello</form><p>end</p></body></html>",
        "<html><body><nav><nav><aside>x</aside></nav></nav><p>only</p>y</body></html>",
        "<html><body><p>no cleaned tag at all</p></body></html>",
    ]
    for page in pages:
        for options in (
            Extractor(),
            Extractor(precision=True),
            Extractor(recall=True),
            Extractor(tables=False),
            Extractor(images=True),
        ):
            tree = lxml_html.document_fromstring(page)
            want = etree.tostring(original(deepcopy(tree), options))
            assert etree.tostring(fast(deepcopy(tree), options)) == want


def test_invalid_xml_chars_answers_as_the_regex_does():
    import trafilatura.utils as tu

    ts.install()
    fast = tu.INVALID_XML_CHARS
    regex = fast.regex
    assert ts._char_class_members(regex.pattern) is not None  # noqa: SLF001
    for s in [
        "",
        "plain <p>html</p>",
        "a\x00b",
        "\x1f",
        "é\ufffe",
        "x\uffff\x0b\x0c",
        "\t\n\r kept",
        "\x7f\x80 not in the class",
        "日本語\x08",
    ]:
        assert fast.sub("", s) == regex.sub("", s)
        assert fast.sub("", s, 1) == regex.sub("", s, 1)
        assert bool(fast.search(s)) == bool(regex.search(s))
    for answer in (fast, regex):  # not a str: the regex answers, as it would have
        with pytest.raises(TypeError):
            answer.sub(b"", b"a\x00b")
    for pattern in (r"[^a]", r"[a-z]+", r"\s", r"[\w]", r"ab"):
        assert ts._char_class_members(pattern) is None  # noqa: SLF001


def test_every_call_on_the_sample_pages_matches_the_unpatched_function(monkeypatch):
    """trafilatura with the speedups on the 698 sample pages: at every call of a source-patched
    function, trafilatura's own version runs too (on a copy of the tree, or on the same tree where
    neither changes it) and must give the same tree / the same scores / the same string."""
    from copy import deepcopy

    require_shared_data()
    import trafilatura.utils as tu
    from trafilatura import core, htmlprocessing
    from trafilatura.readability_lxml import Document

    ts.install()
    calls: dict[str, int] = {"tree_cleaning": 0, "score_paragraphs": 0, "sub": 0}
    differ: list[str] = []
    fast_clean = htmlprocessing.tree_cleaning

    def clean(tree, options):
        want = etree.tostring(fast_clean.__wrapped_original__(deepcopy(tree), options))
        got = fast_clean(tree, options)
        calls["tree_cleaning"] += 1
        if etree.tostring(got) != want:
            differ.append("tree_cleaning")
        return got

    fast_score = Document.score_paragraphs

    def score(self):
        want = fast_score.__wrapped_original__(self)  # reads the tree, does not change it
        got = fast_score(self)
        calls["score_paragraphs"] += 1
        if [(e, c.score) for e, c in got.items()] != [(e, c.score) for e, c in want.items()]:
            differ.append("score_paragraphs")
        return got

    fast_chars = tu.INVALID_XML_CHARS

    class Checked:
        def sub(self, repl, string, count=0):
            calls["sub"] += 1
            got = fast_chars.sub(repl, string, count)
            if got != fast_chars.regex.sub(repl, string, count):
                differ.append("INVALID_XML_CHARS")
            return got

    monkeypatch.setattr(core, "tree_cleaning", clean)
    monkeypatch.setattr(Document, "score_paragraphs", score)
    monkeypatch.setattr(tu, "INVALID_XML_CHARS", Checked())
    extract_sample_pages()
    assert min(calls.values()) >= 600, calls
    assert differ == []
