"""Faster trafilatura, same output (~2x less CPU per page, same text on every sample page).

Five changes, each exact by construction and checked again in the tests:

0. **Element-selecting expressions as Python loops** (``refine.extract.xpath_python``): those
   written in the XPath subset it compiles run as ``iterdescendants`` loops with cached regex
   results; the rest get the rewrites below.

1. **Regex XPath tests as plain XPath.** trafilatura 2.x matches class/id attributes with EXSLT
   ``re:test(@class, 'a|b|^c')`` inside its XPath expressions. lxml runs ``re:test`` as a
   *Python* callback, and passes each attribute as a "smart" string that carries its parent
   element (one new element proxy per call): several callbacks per element the expression visits.
   Most of those regexes are alternations of literal tokens with optional ``^``/``$`` anchors, an
   optional character or a small character class (``bread-?crumb``, ``dfp[Aa]d``,
   ``^(?:nav|post-nav)``). Such a regex matches exactly when one of a finite set of literals
   occurs anywhere, at the start, at the end or as the whole value, which XPath 1.0 says in C
   (``contains``, ``starts-with``, a ``substring`` suffix test, ``=``). ``translate_path`` does
   that rewrite, and only that:

   - the first argument must be attribute steps (``@id``, ``@id|@class``); lxml gives
     ``re:test`` the string value of the first node in document order, as ``string()`` does;
   - flags must not contain ``i`` (lxml's only flag; Python's Unicode case folding has no exact
     XPath 1.0 equivalent); the pattern must parse into literals, small classes, groups,
     alternations, bounded repeats, leading ``^`` and trailing ``$``/``\\Z`` only, and expand to
     at most ``_MAX_ALTERNATIVES`` literals (above that one regex call is cheaper than the
     ``contains`` chain). ``$`` also matches before a final newline, as in Python;
   - anything else stays ``re:test``, behind an existence guard (``(@id) and re:test(...)``)
     when the pattern cannot match the empty string, so elements without the attribute skip
     the callback, and with plain strings where the expression returns elements.

   Each rewritten expression is compared with the original on a generated document that holds
   every literal of its regexes at the start, end and middle of each attribute it tests, in both
   attribute orders (``check_equivalent``); one that differs keeps its original.

2. **A C element-class lookup** for trafilatura's HTML parser (``_install_parser_lookup``).

3. **Outermost matches in one pass** in ``prune_unwanted_nodes(..., with_backup=True)``
   (``_outermost``), installed only when trafilatura's function is the one this was written
   against (its source is compared).

4. **Exact passage rewrites** (``_SOURCE_PATCHES``, ``patch_source``): a function whose source
   holds a known passage exactly once is recompiled with a faster passage that does the same
   (``tree_cleaning`` skips the per-tag walks of tags the tree does not have; readability's
   candidate scaling measures each link's text once), and ``INVALID_XML_CHARS.sub`` first asks
   whether any of its characters is there at all (``_CharClass``). Another trafilatura version
   without the passage keeps its own code, and so does one where a function the faster passage
   relies on differs in any line (``_REQUIRES``: readability's ``get_link_density`` and
   ``text_length``, compared whole).

``install()`` patches the trafilatura modules of this process in place; it is called by the
extraction child when ``extract.speedups`` is on (the default). trafilatura's own code is not
otherwise touched, and ``speedups: false`` runs it as shipped.

**Tested versions only.** The checks above prove each change against the code it replaces, but
the speedups also lean on lxml/libxml2's XPath semantics and on trafilatura's internals at large,
so they are held to the versions CI tests, page by page (``TESTED_VERSIONS``). Under any other
trafilatura or lxml version ``install()`` installs nothing, logs one warning and returns a report
whose ``status`` is ``"skipped_untested_version"``; ``install(force=True)`` (``speedups: force``)
installs them anyway, for whoever checks the text themselves
(``scripts/bench_trafilatura_speedups.py``). The extract stage records what was applied in
``report.json`` (``SpeedupReport.summary``).
"""

from __future__ import annotations

import logging
import re
import sys
import types
from dataclasses import dataclass, field

try:  # Python >= 3.11
    import re._constants as _sre_c
    import re._parser as _sre_p
except ImportError:  # pragma: no cover - Python 3.10
    import sre_constants as _sre_c  # type: ignore[no-redef]
    import sre_parse as _sre_p  # type: ignore[no-redef]

from lxml import etree

from refine.extract.xpath_python import PythonPath, Unsupported, compile_path, random_documents

__all__ = [
    "TESTED_VERSIONS",
    "SpeedupReport",
    "check_equivalent",
    "install",
    "planned_status",
    "translate_path",
]

LOGGER = logging.getLogger(__name__)

#: library -> the versions the speedups were verified against: those CI installs, where
#: tests/test_trafilatura_speedups*.py compare every sample page's text with and without them
#: (under refine's default options, and 88 pages under each option refine exposes). Add a
#: version here only after those tests pass under it.
TESTED_VERSIONS: dict[str, tuple[str, ...]] = {
    "trafilatura": ("2.3.1",),
    "lxml": ("6.2.0",),
}

REGEXP_NS = "http://exslt.org/regular-expressions"
_MAX_ALTERNATIVES = 16
_MAX_CLASS = 8
_MAX_REPEAT = 3
_ATTR_ARG = re.compile(r"^@[A-Za-z_][\w.-]*(?:\s*\|\s*@[A-Za-z_][\w.-]*)*$")
# Namespace prefixes other than re: make a path unsafe to recompile with our namespaces.
_STRING_LITERAL = re.compile(r"'([^']*)'|\"([^\"]*)\"")
_PREFIX = re.compile(r"(?<![\w:])([A-Za-z_][\w.-]*):(?!:)")


class _Untranslatable(Exception):
    pass


@dataclass(frozen=True)
class _Alt:
    """One literal the regex can match: at the start (``head``), and/or at the end (``tail``:
    None, "$" (end, or before a final newline) or "Z" (end only))."""

    text: str
    head: bool = False
    tail: str | None = None


_EMPTY = _Alt("")


def _cat(left: list[_Alt], right: list[_Alt]) -> list[_Alt]:
    out = []
    for a in left:
        for b in right:
            if a.tail is not None and b != _EMPTY:
                raise _Untranslatable("something after an end anchor")
            if b.head and (a.text or a.tail is not None):
                raise _Untranslatable("^ after text")
            tail = b.tail if b.tail is not None else (a.tail if not b.text else None)
            out.append(_Alt(a.text + b.text, a.head or b.head, tail))
            if len(out) > _MAX_ALTERNATIVES:
                raise _Untranslatable("too many alternatives")
    return out


def _expand(seq) -> list[_Alt]:
    """The literal alternatives of a parsed regex sequence, or _Untranslatable."""
    alts = [_Alt("")]
    for op, av in seq:
        if op is _sre_c.LITERAL:
            part = [_Alt(chr(av))]
        elif op is _sre_c.IN:
            chars: list[str] = []
            for iop, iav in av:
                if iop is _sre_c.LITERAL:
                    chars.append(chr(iav))
                elif iop is _sre_c.RANGE and iav[1] - iav[0] < _MAX_CLASS:
                    chars.extend(chr(c) for c in range(iav[0], iav[1] + 1))
                else:  # NEGATE, CATEGORY (\s, \w...), big ranges
                    raise _Untranslatable(f"class item {iop}")
            if len(chars) > _MAX_CLASS:
                raise _Untranslatable("class too big")
            part = [_Alt(c) for c in dict.fromkeys(chars)]
        elif op is _sre_c.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            if add_flags or del_flags:
                raise _Untranslatable("inline flags")
            part = _expand(sub)
        elif op is _sre_c.BRANCH:
            part = []
            for sub in av[1]:
                part.extend(_expand(sub))
        elif op in (_sre_c.MAX_REPEAT, _sre_c.MIN_REPEAT):
            lo, hi, sub = av
            if hi is _sre_c.MAXREPEAT or hi > _MAX_REPEAT:
                raise _Untranslatable("unbounded repeat")
            inner = _expand(sub)
            part = []
            for n in range(lo, hi + 1):
                rep = [_Alt("")]
                for _ in range(n):
                    rep = _cat(rep, inner)
                part.extend(rep)
        elif op is _sre_c.AT:
            if av is _sre_c.AT_BEGINNING or av is _sre_c.AT_BEGINNING_STRING:
                part = [_Alt("", head=True)]
            elif av is _sre_c.AT_END:
                part = [_Alt("", tail="$")]
            elif av is _sre_c.AT_END_STRING:
                part = [_Alt("", tail="Z")]
            else:  # \b, \B
                raise _Untranslatable(f"anchor {av}")
        else:  # ANY, GROUPREF, ASSERT, CATEGORY...
            raise _Untranslatable(f"op {op}")
        alts = _cat(alts, part)
    if len(alts) > _MAX_ALTERNATIVES:
        raise _Untranslatable("too many alternatives")
    return alts


def _literals(pattern: str) -> list[_Alt] | None:
    """The literal alternatives of ``pattern``, or None when it has no such finite form."""
    try:
        return _expand(_sre_p.parse(pattern))
    except (_Untranslatable, re.error, RecursionError):
        return None


def _literal(text: str) -> str:
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    pieces = [f"'{p}'" if p else "" for p in text.split("'")]
    return "concat(" + ', "\'", '.join(p or "''" for p in pieces) + ")"


def _ends(s: str, text: str) -> str:
    if not text:
        return "true()"
    return f"substring({s}, string-length({s}) - {len(text) - 1}) = {_literal(text)}"


def _alt_xpath(s: str, alt: _Alt) -> str:
    lit = _literal(alt.text)
    if alt.tail is None:
        if alt.head:
            return f"starts-with({s}, {lit})"
        return f"contains({s}, {lit})"
    texts = [alt.text] if alt.tail == "Z" else [alt.text, alt.text + "\n"]
    if alt.head:
        return " or ".join(f"{s} = {_literal(t)}" for t in texts)
    return " or ".join(_ends(s, t) for t in texts)


def translate_regex(arg: str, pattern: str, flags: str = "") -> str | None:
    """XPath 1.0 boolean equal to ``re:test(arg, pattern, flags)``, or None if there is none here.

    One attribute: ``boolean(@class[contains(., 'a') or starts-with(., 'b')])``, which libxml2
    evaluates faster than repeating ``string(@class)`` per literal, and skips at once on elements
    without the attribute. Several (``@id|@class``): the string of the first in document order,
    behind ``(@id or @class)``. Both forms are false when the attribute is missing, which is right
    because the pattern cannot match the empty string (else the ``string()`` form, unguarded).
    """
    if "i" in flags or not _ATTR_ARG.match(arg):
        return None
    alts = _literals(pattern)
    if alts is None:
        return None
    if any(not a.text for a in alts):  # matches the empty string: no guard possible
        s = f"string({arg})"
        return "(" + " or ".join(dict.fromkeys(_alt_xpath(s, a) for a in alts)) + ")"
    attrs = [a.strip() for a in arg.split("|")]
    if len(attrs) == 1:
        terms = " or ".join(dict.fromkeys(_alt_xpath(".", a) for a in alts))
        return f"boolean({attrs[0]}[{terms}])"
    s = f"string({arg})"
    terms = " or ".join(dict.fromkeys(_alt_xpath(s, a) for a in alts))
    return f"(({' or '.join(attrs)}) and ({terms}))"


def _find_calls(path: str, name: str = "re:test("):
    """Each ``re:test(...)`` call in ``path``: (start, end, [arguments as written])."""
    i = 0
    while True:
        start = path.find(name, i)
        if start < 0:
            return
        if start > 0 and (path[start - 1].isalnum() or path[start - 1] in "_-.:"):
            i = start + len(name)
            continue
        j = start + len(name)
        depth, quote, args, cur = 0, None, [], []
        while True:
            if j >= len(path):
                return
            ch = path[j]
            if quote:
                cur.append(ch)
                if ch == quote:
                    quote = None
            elif ch in "'\"":
                quote = ch
                cur.append(ch)
            elif ch in "([":
                depth += 1
                cur.append(ch)
            elif ch in ")]":
                if depth == 0:
                    args.append("".join(cur).strip())
                    break
                depth -= 1
                cur.append(ch)
            elif ch == "," and depth == 0:
                args.append("".join(cur).strip())
                cur = []
            else:
                cur.append(ch)
            j += 1
        yield start, j + 1, args
        i = j + 1


def _unquote(arg: str) -> str | None:
    if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "'\"" and arg[0] not in arg[1:-1]:
        return arg[1:-1]
    return None


def _never_matches_empty(pattern: str, flags: str) -> bool:
    try:
        return re.search(pattern, "", re.IGNORECASE if "i" in flags else 0) is None
    except re.error:
        return False


def translate_path(path: str) -> tuple[str, int, int]:
    """Rewrite every translatable ``re:test`` call of an XPath expression.

    Returns (new path, calls translated, calls kept as re:test).
    """
    out, last, done, kept = [], 0, 0, 0
    for start, end, args in _find_calls(path):
        call = path[start:end]
        new = None
        if len(args) in (2, 3):
            pattern = _unquote(args[1])
            flags = _unquote(args[2]) if len(args) == 3 else ""
            if pattern is not None and flags is not None:
                new = translate_regex(args[0], pattern, flags)
                guardable = _ATTR_ARG.match(args[0]) and _never_matches_empty(pattern, flags)
                if new is None and guardable:
                    # still a callback, but only for elements that have the attribute
                    new = f"(({args[0]}) and {call})"
                    kept += 1
                elif new is not None:
                    done += 1
        if new is None:
            new = call
            kept += 1
        out.append(path[last:start])
        out.append(new)
        last = end
    out.append(path[last:])
    return "".join(out), done, kept


# --------------------------------------------------------------------------- equivalence check


def _probe_values(path: str) -> list[str]:
    """Attribute values built from every literal in the path's regexes and string literals."""
    pieces: set[str] = {"", " ", "\n", "x"}
    for _s, _e, args in _find_calls(path):
        if len(args) >= 2 and (pattern := _unquote(args[1])) is not None:
            pieces.update(a.text for a in _literals(pattern) or ())
    for lit in _STRING_LITERAL.findall(path):
        pieces.update(p for p in lit if p)
    values: set[str] = set()
    for p in pieces:
        values.update(
            {
                p,
                " " + p,
                p + " ",
                "a" + p,
                p + "b",
                "a" + p + "b",
                p + "\n",
                "\n" + p,
                p[:-1],
                p[1:],
                p.upper(),
                p + p,
            }
        )
    return sorted(values)


def _probe_document(path: str) -> etree._Element:
    """A document where each probe value sits in each attribute the path tests (on the tags it
    names, in turn), and each pair of attributes that a union compares appears in both orders."""
    attrs = sorted(set(re.findall(r"@([A-Za-z_][\w.-]*)", path))) or ["class"]
    tags = sorted(set(re.findall(r"self::([A-Za-z_][\w-]*)", path))) or ["div"]
    unions = {
        tuple(a.lstrip("@").strip() for a in args[0].split("|"))
        for _s, _e, args in _find_calls(path)
        if args and "|" in args[0]
    }
    values = _probe_values(path)
    root = etree.Element("html")
    body = etree.SubElement(root, "body")
    n = 0
    for value in values:
        for attr in attrs:
            etree.SubElement(body, tags[n % len(tags)], {attr: value})
            n += 1
        for union in unions:
            for first, second in ((union[0], union[-1]), (union[-1], union[0])):
                for other in ("", "x", values[n % len(values)]):
                    el = etree.SubElement(body, tags[n % len(tags)])
                    el.set(first, value)
                    el.set(second, other)
                    n += 1
    for tag in tags:
        etree.SubElement(etree.SubElement(body, tag), "h1").text = "h"
    return root


def check_equivalent(
    old: etree.XPath, new: etree.XPath, path: str, doc: etree._Element | None = None
) -> bool:
    """Whether both expressions select the same elements, in the same order, on ``path``'s probe
    document."""
    if doc is None:
        doc = _probe_document(path)
    position = {el: i for i, el in enumerate(doc.iter())}  # holds every proxy: stable identity
    try:
        return [position[e] for e in old(doc)] == [position[e] for e in new(doc)]
    except (etree.XPathError, KeyError, TypeError):
        return False


# --------------------------------------------------------------------------- install


#: The five changes of the module docstring (0-4), as ``SpeedupReport.applied`` names them.
CHANGES = ("python_loops", "regex_xpath", "parser_lookup", "prune", "source_patches")


@dataclass
class SpeedupReport:
    status: str = "on"
    """"on" (installed on a tested version), "forced" (installed on an untested one, as asked),
    "skipped_untested_version" (nothing installed) or "off" (not asked for: ``speedups: false``)."""
    versions: dict[str, str | None] = field(default_factory=dict)
    """trafilatura's and lxml's versions in this process (their ``__version__``)."""
    expressions: int = 0
    """XPath expressions rewritten."""
    translated: int = 0
    """re:test calls replaced by plain XPath."""
    guarded: int = 0
    """re:test calls kept, behind an attribute-existence guard or as they were."""
    rejected: list[str] = field(default_factory=list)
    """Expressions that failed the equivalence check and kept their original."""
    parser_lookup: bool = False
    """trafilatura's HTML parser builds element proxies with a C class lookup."""
    prune: bool = False
    """prune_unwanted_nodes replaced by the version below (trafilatura's code was recognised)."""
    python_paths: int = 0
    """Element-selecting expressions run as Python loops (``refine.extract.xpath_python``)."""
    patched: list[str] = field(default_factory=list)
    """trafilatura functions recompiled with an exact faster passage (``_SOURCE_PATCHES``)."""

    def applied(self) -> list[str]:
        """The names (``CHANGES``) of the changes that are installed, in their order."""
        done = (
            self.python_paths > 0,
            self.expressions > 0,
            self.parser_lookup,
            self.prune,
            bool(self.patched),
        )
        return [name for name, on in zip(CHANGES, done, strict=True) if on]

    def summary(self) -> dict:
        """What the extract stage's ``report.json`` entry says about the speedups (its
        ``summary``): plain strings and a list of ``CHANGES``."""
        return {
            "trafilatura_speedups": self.status,
            "trafilatura_speedups_applied": self.applied(),
            "trafilatura_version": self.versions.get("trafilatura"),
            "lxml_version": self.versions.get("lxml"),
        }


_INSTALLED: SpeedupReport | None = None


def _python_path(old: etree.XPath, report: SpeedupReport) -> PythonPath | None:
    """``old`` as a Python loop, if it compiles and selects the same elements as ``old`` on the
    probe document and on generated random trees."""
    try:
        new = compile_path(old)
    except Unsupported:
        return None
    # a quick check in every extraction child; tests/test_xpath_python.py runs 200 random trees
    # per expression and every call on the sample pages
    docs = [
        _probe_document(old.path),
        *random_documents(old.path, _probe_values(old.path), count=8),
    ]
    for doc in docs:
        if not check_equivalent(old, new, old.path, doc):
            report.rejected.append(old.path)
            return None
    report.python_paths += 1
    return new


def _rewrite(old: etree.XPath, report: SpeedupReport) -> etree.XPath | PythonPath | None:
    python = _python_path(old, report)
    if python is not None:
        return python
    path = old.path
    if "re:test(" not in path:
        return None
    bare = _STRING_LITERAL.sub("''", path).replace("::", "  ")
    if any(p != "re" for p in _PREFIX.findall(bare)):
        return None
    new_path, done, kept = translate_path(path)
    if new_path == path:
        return None
    namespaces = {"re": REGEXP_NS} if "re:" in new_path else None
    # Plain (not "smart") strings for the re:test callbacks that remain: a smart string carries
    # its parent element, which costs lxml a proxy per call. Only where the expression returns
    # elements, so no string the caller sees changes type.
    probe = _probe_document(path)
    returned = old(probe)
    smart = not (
        isinstance(returned, list)
        and returned
        and all(isinstance(e, etree._Element) for e in returned)
    )
    try:
        new = etree.XPath(new_path, namespaces=namespaces, smart_strings=smart)
    except etree.XPathError:
        report.rejected.append(path)
        return None
    if not check_equivalent(old, new, path, probe):
        report.rejected.append(path)
        return None
    report.expressions += 1
    report.translated += done
    report.guarded += kept
    return new


# --------------------------------------------------------------------------- element proxies


def _install_parser_lookup(report: SpeedupReport) -> None:
    """lxml.html's parser chooses each element proxy's class in Python
    (``HtmlElementClassLookup.lookup``: millions of calls per thousand pages). The C lookup below
    gives every element ``HtmlElement``, comments ``HtmlComment`` and so on; only ``<form>``,
    ``<input>``, ``<select>``, ``<textarea>`` and ``<label>`` lose their subclasses, whose extra
    members (``.value``, ``.fields``...) trafilatura never uses."""
    from lxml import html
    from trafilatura import utils

    parser = getattr(utils, "HTML_PARSER", None)
    if not isinstance(parser, html.HTMLParser):
        return
    parser.set_element_class_lookup(
        etree.ElementDefaultClassLookup(
            element=html.HtmlElement,
            comment=html.HtmlComment,
            pi=html.HtmlProcessingInstruction,
            entity=html.HtmlEntity,
        )
    )
    report.parser_lookup = True


# --------------------------------------------------------------------------- pruning

# trafilatura 2.3's prune_unwanted_nodes, whose ``with_backup`` branch finds the outermost matches
# by walking every match's ancestors to the root: one new proxy per step, quadratic in depth.
_PRUNE_SOURCE = (
    "    if not with_backup:\n"
    "        for expression in nodelist:\n"
    "            for subtree in expression(tree):\n"
    "                delete_element(subtree)  # the tail text is preserved\n"
    "        return tree\n"
    "    # guard: prune nothing if it would remove too much text, the tree keeps its elements\n"
    "    matches = dict.fromkeys(elem for expression in nodelist for elem in expression(tree))\n"
    "    outer = [elem for elem in matches if not any(a in matches for a in elem.iterancestors()"
    ")]\n"
    "    old_len = len(tree.text_content())\n"
    "    # todo: adjust for recall and precision settings\n"
    "    if old_len - sum(len(elem.text_content()) for elem in outer) > old_len / 7:\n"
    "        for elem in outer:\n"
    "            delete_element(elem)\n"
    "    return tree\n"
)


def _outermost(matches: dict) -> list:
    """The elements of ``matches`` (in its order) that have no ancestor in ``matches``. Each
    ancestor is visited once: walks stop at an ancestor already known to be inside or outside a
    match."""
    inside: dict = {}  # element -> True if it or an ancestor is a match, else False
    outer = []
    for elem in matches:
        path = []
        node = elem.getparent()
        covered = False
        while node is not None:
            if node in matches:
                covered = True
                break
            known = inside.get(node)
            if known is not None:
                covered = known
                break
            path.append(node)
            node = node.getparent()
        for node in path:
            inside[node] = covered
        if not covered:
            outer.append(elem)
    return outer


def _make_prune(delete_element):
    def prune_unwanted_nodes(tree, nodelist, with_backup=False):
        "Prune the HTML tree by removing unwanted sections (refine: outermost matches in one pass)."
        if not with_backup:
            for expression in nodelist:
                for subtree in expression(tree):
                    delete_element(subtree)
            return tree
        matches = dict.fromkeys(elem for expression in nodelist for elem in expression(tree))
        outer = _outermost(matches)
        old_len = len(tree.text_content())
        if old_len - sum(len(elem.text_content()) for elem in outer) > old_len / 7:
            for elem in outer:
                delete_element(elem)
        return tree

    return prune_unwanted_nodes


def _install_prune(report: SpeedupReport, modules: list) -> None:
    import inspect

    from trafilatura import htmlprocessing

    original = getattr(htmlprocessing, "prune_unwanted_nodes", None)
    delete_element = getattr(htmlprocessing, "delete_element", None)
    if original is None or delete_element is None:
        return
    try:
        source = inspect.getsource(original)
    except (OSError, TypeError):
        return
    if _PRUNE_SOURCE not in source:  # another trafilatura version: leave it alone
        return
    _replace_function(original, _make_prune(delete_element), modules)
    report.prune = True


def _replace_function(original, fast, modules: list) -> None:
    """Every module of ``modules`` that holds ``original`` under its name (its own module and
    those that imported it by name) gets ``fast`` instead."""
    for module in modules:
        if getattr(module, original.__name__, None) is original:
            setattr(module, original.__name__, fast)


# --------------------------------------------------------------------------- source patches

# (module, function or Class.method, passage of trafilatura 2.3's source, faster passage). Each
# faster passage does exactly what the passage it replaces does; a function whose source does not
# hold its passage exactly once (another trafilatura version) is left as it is.
_SOURCE_PATCHES = [
    # tree_cleaning: each of ~50 tag names walked the whole tree (``tree.iter(tag)``). One walk
    # first lists the tags that occur; deleting elements never adds a tag, so the loop over a tag
    # absent at the start deletes nothing and is skipped. The loops that run are the original.
    (
        "trafilatura.htmlprocessing",
        "tree_cleaning",
        "    for expression in cleaning_list:\n"
        "        for element in tree.iter(expression):\n"
        "            delete_element(element)\n",
        "    present = {element.tag for element in tree.iter(*cleaning_list)}\n"
        "    for expression in cleaning_list:\n"
        "        if expression not in present:\n"
        "            continue\n"
        "        for element in tree.iter(expression):\n"
        "            delete_element(element)\n",
    ),
    # readability's candidate scaling: ``get_link_density`` per candidate measured the text of
    # every link below it, again for each enclosing candidate (parents and grandparents nest).
    # Nothing changes the tree in this loop, so each link's length is measured once and reused;
    # the sums, and so the scores, are the same integers and floats.
    (
        "trafilatura.readability_lxml",
        "Document.score_paragraphs",
        "        for elem, candidate in candidates.items():\n"
        "            candidate.score *= 1 - self.get_link_density(elem)\n",
        "        link_lengths = {}\n"
        "        for elem, candidate in candidates.items():\n"
        "            total_length = text_length(elem) or 1\n"
        "            link_length = 0\n"
        '            for link in elem.findall(".//a"):\n'
        "                length = link_lengths.get(link)\n"
        "                if length is None:\n"
        "                    length = link_lengths[link] = text_length(link)\n"
        "                link_length += length\n"
        "            candidate.score *= 1 - link_length / total_length\n",
    ),
]

#: Code a faster passage relies on besides the passage itself, by patched function: the whole
#: source of each function it re-implements or assumes (readability's inlined link density is
#: ``get_link_density``'s arithmetic, and reusing a link's length assumes ``text_length`` is a
#: pure function of the element). A patch applies only when every one is exactly this (trafilatura
#: 2.3.1's), also under ``speedups: force``.
_REQUIRES = {
    "trafilatura.readability_lxml.Document.score_paragraphs": (
        (
            "trafilatura.readability_lxml",
            "Document.get_link_density",
            "    def get_link_density(self, elem: HtmlElement) -> float:\n"
            "        total_length = text_length(elem) or 1\n"
            '        link_length = sum(text_length(link) for link in elem.findall(".//a"))\n'
            "        return link_length / total_length\n",
        ),
        (
            "trafilatura.readability_lxml",
            "text_length",
            "def text_length(elem: HtmlElement) -> int:\n"
            '    "Return the length of the element with all its contents."\n'
            "    return len(trim(elem.text_content()))\n",
        ),
    ),
}


def _requirements_hold(patched: str) -> bool:
    """Whether the code the patch of ``patched`` relies on is exactly as in ``_REQUIRES``."""
    import inspect

    for module_name, qualname, expected in _REQUIRES.get(patched, ()):
        obj = sys.modules.get(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        try:
            if obj is None or inspect.getsource(obj) != expected:
                return False
        except (OSError, TypeError):
            return False
    return True


def patch_source(func, old: str, new: str):
    """``func`` recompiled from its source with the passage ``old`` replaced by ``new``, in its
    module's namespace; None when its source does not hold ``old`` exactly once."""
    import inspect
    import textwrap

    try:
        source = inspect.getsource(func)
    except (OSError, TypeError):
        return None
    if source.count(old) != 1:
        return None
    source = textwrap.dedent(source.replace(old, new))
    if not source.startswith("def "):  # decorated, or not a plain function
        return None
    namespace: dict = {}
    exec(
        compile(source, f"<refine speedups: {func.__module__}.{func.__qualname__}>", "exec"),
        func.__globals__,
        namespace,
    )
    fast = namespace[func.__name__]
    fast.__wrapped_original__ = func
    return fast


def _install_source_patches(report: SpeedupReport, modules: list) -> None:
    for module_name, qualname, old, new in _SOURCE_PATCHES:
        module = sys.modules.get(module_name)
        if module is None:
            continue
        owner_name, _, name = qualname.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        original = getattr(owner, name, None)
        if original is None or getattr(original, "__wrapped_original__", None) is not None:
            continue
        if not _requirements_hold(f"{module_name}.{qualname}"):
            continue
        fast = patch_source(original, old, new)
        if fast is None:
            continue
        if owner_name:  # a method: its class is the one place to change
            setattr(owner, name, fast)
        else:
            _replace_function(original, fast, modules)
        report.patched.append(f"{module_name}.{qualname}")


class _CharClass:
    """``re.sub``/``search`` of a pattern that is one character class of ``chars``: answers
    "not there" with one ``str.__contains__`` per character (a C scan each, ~3x cheaper than the
    regex engine over a whole page) and hands the rare string that holds one to the regex."""

    def __init__(self, regex: re.Pattern, chars: str):
        self.regex = regex
        self._chars = tuple(chars)

    def _absent(self, string) -> bool:
        if not isinstance(string, str):
            return False
        for char in self._chars:
            if char in string:
                return False
        return True

    def sub(self, repl, string, count=0):
        if self._absent(string):
            return string
        return self.regex.sub(repl, string, count)

    def search(self, string, *args):
        if not args and self._absent(string):
            return None
        return self.regex.search(string, *args)

    def __getattr__(self, name):  # pattern, flags, findall...: the regex's own
        return getattr(self.regex, name)


def _char_class_members(pattern: str) -> str | None:
    """The characters of a pattern that is exactly one character class (``[...]`` of single
    characters and ranges of at most 256, however escaped; no negation, no ``\\s``-style
    categories), else None."""
    try:
        parsed = _sre_p.parse(pattern)
    except re.error:
        return None
    if len(parsed) != 1 or parsed[0][0] is not _sre_c.IN:
        return None
    chars = []
    for op, arg in parsed[0][1]:
        if op is _sre_c.LITERAL:
            chars.append(chr(arg))
        elif op is _sre_c.RANGE and arg[1] - arg[0] < 256:
            chars.extend(map(chr, range(arg[0], arg[1] + 1)))
        else:
            return None
    return "".join(chars)


def _install_invalid_chars(report: SpeedupReport) -> None:
    """repair_faulty_html strips characters XML forbids with ``INVALID_XML_CHARS.sub`` over the
    whole page (~1 ms per 100 KB page); pages almost never hold one."""
    utils = sys.modules.get("trafilatura.utils")
    regex = getattr(utils, "INVALID_XML_CHARS", None)
    if not isinstance(regex, re.Pattern) or regex.flags & re.IGNORECASE:
        return
    chars = _char_class_members(regex.pattern)
    if chars is None:
        return
    utils.INVALID_XML_CHARS = _CharClass(regex, chars)
    report.patched.append("trafilatura.utils.INVALID_XML_CHARS")


# --------------------------------------------------------------------------- install


def imported_versions() -> dict[str, str | None]:
    """library -> the ``__version__`` of the module this process imports (what gets patched)."""
    import lxml
    import trafilatura

    return {
        "trafilatura": getattr(trafilatura, "__version__", None),
        "lxml": getattr(lxml, "__version__", None),
    }


def untested(versions: dict[str, str | None]) -> dict[str, str | None]:
    """The libraries of ``versions`` whose version is not in ``TESTED_VERSIONS``."""
    return {
        name: version
        for name, version in versions.items()
        if version not in TESTED_VERSIONS.get(name, ())
    }


def _describe(versions: dict[str, str | None]) -> str:
    return ", ".join(f"{name} {version}" for name, version in versions.items())


def planned_status(speedups: bool | str) -> str:
    """The ``SpeedupReport.status`` an extraction child will report for ``extract.speedups``
    under the installed versions (package metadata: nothing is imported or patched), for the
    driver: the extract stage's fingerprint and its warning at build time."""
    from refine.pipeline.versions import library_version

    if not speedups:
        return "off"
    if not untested({name: library_version(name) for name in TESTED_VERSIONS}):
        return "on"
    return "forced" if speedups == "force" else "skipped_untested_version"


def install(force: bool = False) -> SpeedupReport:
    """Patch trafilatura in place (idempotent). Call before extracting.

    Only under ``TESTED_VERSIONS``: under another trafilatura or lxml version nothing is
    installed, one warning is logged and the report's ``status`` says so, unless ``force``.
    """
    global _INSTALLED
    if _INSTALLED is not None and not (force and _INSTALLED.status == "skipped_untested_version"):
        return _INSTALLED
    import trafilatura  # noqa: F401  (imports its submodules)

    versions = imported_versions()
    other = untested(versions)
    if other and not force:
        LOGGER.warning(
            "trafilatura speedups not installed: %s %s not among the tested versions (%s); "
            "trafilatura runs as shipped (extract.speedups: force installs them anyway)",
            _describe(other),
            "is" if len(other) == 1 else "are",
            ", ".join(f"{n} {'/'.join(v)}" for n, v in TESTED_VERSIONS.items()),
        )
        _INSTALLED = SpeedupReport(status="skipped_untested_version", versions=versions)
        return _INSTALLED
    if other:
        LOGGER.info(
            "trafilatura speedups installed on untested versions (%s), as forced", _describe(other)
        )
    report = SpeedupReport(status="forced" if other else "on", versions=versions)
    # id -> (original, rewrite or None). Holding the original keeps its id from being reused by
    # a new object; rewrites are never rewritten again (lists are shared between modules).
    replaced: dict[int, tuple[etree.XPath, etree.XPath | None]] = {}
    rewrites: set[int] = set()

    def swap(x):
        if id(x) in rewrites:
            return None
        if id(x) not in replaced:
            new = _rewrite(x, report)
            replaced[id(x)] = (x, new)
            if new is not None:
                rewrites.add(id(new))
        return replaced[id(x)][1]

    modules = [
        m
        for name, m in sys.modules.items()
        if isinstance(m, types.ModuleType)
        and (name == "trafilatura" or name.startswith("trafilatura."))
    ]
    for module in modules:
        for name, value in list(vars(module).items()):
            if isinstance(value, etree.XPath):
                if (new := swap(value)) is not None:
                    setattr(module, name, new)
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, etree.XPath) and (new := swap(item)) is not None:
                        value[i] = new
            elif isinstance(value, tuple) and any(isinstance(v, etree.XPath) for v in value):
                setattr(
                    module,
                    name,
                    tuple((swap(v) or v) if isinstance(v, etree.XPath) else v for v in value),
                )
    _install_parser_lookup(report)
    _install_prune(report, modules)
    _install_source_patches(report, modules)
    _install_invalid_chars(report)
    if report.rejected:
        LOGGER.warning(
            "trafilatura speedups: %d expressions kept as they were (check failed)",
            len(report.rejected),
        )
    _INSTALLED = report
    return report
