"""refine.extract.xpath_python: a compiled expression selects exactly what libxml2 selects."""

from __future__ import annotations

import sys

import pytest
from lxml import etree
from support import extract_sample_pages

from refine.extract import trafilatura_speedups as ts
from refine.extract.xpath_python import PythonPath, Unsupported, compile_path, random_documents

NS = {"re": ts.REGEXP_NS}
HTML = etree.HTMLParser()


def _both(path: str, html: str) -> tuple[list, list]:
    old = etree.XPath(path, namespaces=NS)
    doc = etree.fromstring(html, HTML)
    return old(doc), compile_path(old)(doc)


def _ids(elems) -> list[str]:
    return [e.get("n") for e in elems]


def test_first_match_and_first_matching_child_of_each_parent():
    html = (
        '<html><body><div n="1" class="a"><div n="2" class="a"/><p n="3" class="a"/>'
        '<div n="4" class="a"/></div><section n="5"><div n="6" class="b"/>'
        '<div n="7" class="a"/></section></body></html>'
    )
    old, new = _both("(.//*[self::div or self::p][@class='a'])[1]", html)
    assert _ids(old) == _ids(new) == ["1"]
    # [1] inside the step: per parent, the first child that matches
    old, new = _both(".//*[self::div or self::p][@class='a'][1]", html)
    assert _ids(old) == _ids(new) == ["1", "2", "7"]


def test_attribute_union_string_is_the_first_attribute_in_the_element():
    html = (
        '<html><body><div n="1" id="x" class="y"/><div n="2" class="x" id="y"/>'
        '<div n="3" class="x"/><div n="4" id="y"/><div n="5"/></body></html>'
    )
    old, new = _both(".//div[re:test(@id|@class, '^x$')]", html)
    assert _ids(old) == _ids(new) == ["1", "2", "3"]
    old, new = _both(".//div[starts-with(@class|@id, 'y')]", html)
    assert _ids(old) == _ids(new) == ["4"]
    # "=" on a node set is true when any of its nodes is equal
    old, new = _both(".//div[@id|@class='y']", html)
    assert _ids(old) == _ids(new) == ["1", "2", "4"]


def test_functions_and_negation():
    html = (
        '<html><body><div n="1" role="Navigation"/><div n="2" class="Teaser big"/>'
        '<div n="3" class="x"><h1>t</h1></div><div n="4" class="x"/>'
        '<div n="5" class="FULLTEXT"/><span n="6" style="display: none"/></body></html>'
    )
    cases = {
        ".//*[contains(translate(@role, 'N', 'n'), 'nav')]": ["1"],
        ".//div[contains(translate(@class, 'TB', 'tb'), 'teaser big')]": ["2"],
        ".//div[@class='x'][not(.//h1)]": ["4"],
        ".//div[re:test(@class, 'fulltext', 'i')]": ["5"],
        ".//*[self::span][contains(@style, 'display: none') or @aria-hidden='true']": ["6"],
        ".//*[self::div or self::span][not(@class) and not(@role)]": ["6"],
        ".//div[re:test(@class, '^(?:x|Teaser)(?! big)')]": ["3", "4"],
    }
    for path, want in cases.items():
        old, new = _both(path, html)
        assert _ids(old) == _ids(new) == want, path


def test_unsupported_expressions_raise():
    for path in [
        "//div",
        ".//div/p",
        ".//div[2]",
        ".//div[@a != 'x']",
        "(.//a)[1]|(.//b)[1]",
        ".//div[position() < 3]",
        ".//div[$v]",
        ".//div[count(p) > 1]",
        ".//div[re:test(@class, $p)]",
        ".//div[descendant::p]",
    ]:
        try:
            xp = etree.XPath(path, namespaces=NS)
        except etree.XPathSyntaxError:
            continue
        with pytest.raises(Unsupported):
            compile_path(xp)


def test_a_document_context_or_variables_go_to_libxml2():
    old = etree.XPath(".//*[self::div]")
    new = compile_path(old)
    doc = etree.fromstring("<html><body><div/></body></html>", HTML)
    tree = doc.getroottree()
    assert new(tree) == old(tree)
    assert new(doc) == old(doc)


def _trafilatura_paths() -> list[PythonPath]:
    import trafilatura  # noqa: F401

    compiled = []
    for name, module in list(sys.modules.items()):
        if not name.startswith("trafilatura"):
            continue
        for value in vars(module).values():
            items = value if isinstance(value, list) else [value]
            for x in items:
                if isinstance(x, PythonPath):  # install() ran in this process already
                    x = x.original
                if isinstance(x, etree.XPath):
                    try:
                        compiled.append(compile_path(x))
                    except Unsupported:
                        pass
    return compiled


def test_trafilatura_expressions_on_random_trees():
    """Every trafilatura expression that compiles, on 200 random trees built from its own tags,
    attributes and literals: same elements, same order; and the trees do select something."""
    paths = list({p.path: p for p in _trafilatura_paths()}.values())
    assert len(paths) >= 15
    selected = 0
    for p in paths:
        for doc in random_documents(p.path, ts._probe_values(p.path), count=200, seed=7):  # noqa: SLF001
            want = p.original(doc)
            assert p(doc) == want, p.path
            selected += len(want)
    assert selected > 1000


def test_every_call_on_the_sample_pages_selects_what_libxml2_selects(monkeypatch):
    """trafilatura with the speedups on the 698 sample pages: at every call of a compiled
    expression (on the trees as trafilatura has them at that point), libxml2's selection is
    computed too and must be the same list."""
    report = ts.install()
    assert report.python_paths >= 15 and not report.rejected
    calls, differ = [0], []
    select = PythonPath.__call__

    def checked(self, node, **variables):
        got = select(self, node, **variables)
        calls[0] += 1
        if got != self.original(node, **variables):
            differ.append(self.path)
        return got

    monkeypatch.setattr(PythonPath, "__call__", checked)
    extract_sample_pages()
    assert calls[0] >= 5000
    assert differ == []


def test_regex_cache_is_bounded_and_stays_right(monkeypatch):
    """Results are cached per attribute value, up to a bound; past it the cache starts over and
    answers stay those of ``re.search``."""
    import re

    from refine.extract import xpath_python

    monkeypatch.setattr(xpath_python, "_CACHE_LIMIT", 3)
    test = xpath_python._cached_search(re.compile("^nav|menu"))  # noqa: SLF001
    values = [
        f"x{i} menu" if i % 3 == 0 else f"nav{i}" if i % 3 == 1 else f"x{i}" for i in range(20)
    ] * 2
    assert [test(v) for v in values] == [bool(re.search("^nav|menu", v)) for v in values]
    cells = test.__closure__
    cache = next(c.cell_contents for c in cells if isinstance(c.cell_contents, dict))
    assert len(cache) <= 3
