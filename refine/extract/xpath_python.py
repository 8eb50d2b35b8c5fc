"""trafilatura's element-selecting XPath expressions as Python functions: same elements, less CPU.

libxml2 evaluates ``.//*[self::div or ...][contains(@class, 'x') or re:test(@id, '...')]`` by
building a node set per step and, for every ``re:test``, calling back into Python with a fresh
string (lxml's EXSLT regex support is Python code). On the sample crawl these expressions are
~40% of trafilatura's CPU. The same selection written as a loop over
``element.iterdescendants(tags)`` with each tested attribute read once per element (elements with
none of them skipped at once when that makes the predicate false) and each regex result
cached per attribute value (class and id strings repeat across a page and across pages), costs
4-6x less.

``compile_path`` accepts only a small XPath 1.0 subset and gives each construct its exact XPath
meaning; anything else raises ``Unsupported`` and the caller keeps libxml2's expression:

- paths: ``.//*`` or ``.//NAME`` followed by predicates, optionally wrapped as ``(PATH)[1]``
  (the first match in document order); a final ``[1]`` inside the step (``.//*[P][1]``) means
  the first matching *child of each parent*, as in XPath;
- predicates: ``or``, ``and``, ``not()``, parentheses, ``self::NAME``, ``.//NAME`` (a descendant
  exists), ``@a`` (exists), ``@a|@b`` (a node set: its string is the first attribute in document
  order, as ``string()`` says; ``= 'lit'`` is true when any of them equals), ``contains``,
  ``starts-with``, ``translate`` with literal maps, ``string``, ``boolean``, and EXSLT
  ``re:test(x, 'pattern'[, 'flags'])``, which lxml implements as ``re.search`` with
  ``re.IGNORECASE`` for flag ``i``;
- no positions other than that ``[1]``, no variables, no other axes or functions.

``PythonPath`` falls back to the original ``etree.XPath`` for anything but an element context
without keyword arguments, so callers that pass a document or XPath variables see libxml2's
answer. ``trafilatura_speedups.install`` compares every compiled expression with its original on
generated documents before using it, and the tests compare them on every real sample page.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from lxml import etree

__all__ = ["Unsupported", "PythonPath", "compile_path", "random_documents"]

_CACHE_LIMIT = 16_384  # regex results kept per pattern (attribute value -> bool): ~3 MiB each

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<str>'[^']*'|"[^"]*")
      | (?P<num>\d+)
      | (?P<op>\.//|//|::|!=|[()\[\],|=@.*])
      | (?P<name>[A-Za-z_][\w.-]*(?::[A-Za-z_][\w-]*)?)
    )""",
    re.VERBOSE,
)


class Unsupported(ValueError):
    """The expression uses XPath this compiler does not translate."""


def _tokens(path: str) -> list[str]:
    out, i, n = [], 0, len(path)
    while i < n:
        m = _TOKEN.match(path, i)
        if m is None or m.end() == i:
            if path[i:].strip() == "":
                break
            raise Unsupported(f"cannot read {path[i : i + 20]!r}")
        i = m.end()
        out.append(m.group(m.lastgroup))
        # "self::x": the tokenizer reads "self" then "::"; names with a colon are function names
    return out


@dataclass
class _Expr:
    code: str
    kind: str  # "bool" | "str" | "attrs" (node set of attributes) | "desc" (descendant elements)
    attrs: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()  # a "bool" that is only self::a or self::b ...: those tags


class _Compiler:
    def __init__(self, tokens: list[str]):
        self.toks = tokens
        self.i = 0
        self.consts: dict[str, object] = {}
        self.attrs: dict[str, str] = {}  # attribute name -> local variable holding el.get(name)

    # ---------------------------------------------------------------- token helpers
    def peek(self, k: int = 0) -> str | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise Unsupported(f"expected {expected!r}, found {tok!r}")
        self.i += 1
        return tok

    def var(self, attr: str) -> str:
        """The local variable that holds ``el.get(attr)`` (read once per element)."""
        return self.attrs.setdefault(attr, f"a{len(self.attrs)}")

    def const(self, value: object) -> str:
        name = f"_c{len(self.consts)}"
        self.consts[name] = value
        return name

    # ---------------------------------------------------------------- paths
    def path(self) -> dict:
        first_only = False
        if self.peek() == "(":
            self.take("(")
            step = self.step()
            self.take(")")
            self.take("[")
            if self.take() != "1":
                raise Unsupported("only (PATH)[1]")
            self.take("]")
            first_only = True
        else:
            step = self.step()
        if self.peek() is not None:
            raise Unsupported(f"trailing {self.peek()!r}")
        step["first_only"] = first_only
        return step

    def step(self) -> dict:
        self.take(".//")
        tok = self.take()
        if tok == "*":
            tag = None
        elif re.fullmatch(r"[A-Za-z_][\w-]*", tok):
            tag = tok
        else:
            raise Unsupported(f"step {tok!r}")
        preds: list[_Expr] = []
        first_child = False
        while self.peek() == "[":
            if first_child:
                raise Unsupported("a predicate after [1]")
            self.take("[")
            if self.peek() == "1" and self.peek(1) == "]":
                self.take("1")
                first_child = True
            else:
                preds.append(self.to_bool(self.or_expr()))
            self.take("]")
        return {"tag": tag, "preds": preds, "first_child": first_child}

    # ---------------------------------------------------------------- expressions
    def or_expr(self) -> _Expr:
        parts = [self.and_expr()]
        while self.peek() == "or":
            self.take("or")
            parts.append(self.and_expr())
        if len(parts) == 1:
            return parts[0]
        tags = tuple(t for p in parts for t in p.tags) if all(p.tags for p in parts) else ()
        return _Expr(
            "(" + " or ".join(self.to_bool(p).code for p in parts) + ")", "bool", tags=tags
        )

    def and_expr(self) -> _Expr:
        parts = [self.eq_expr()]
        while self.peek() == "and":
            self.take("and")
            parts.append(self.eq_expr())
        if len(parts) == 1:
            return parts[0]
        return _Expr("(" + " and ".join(self.to_bool(p).code for p in parts) + ")", "bool")

    def eq_expr(self) -> _Expr:
        left = self.primary()
        if self.peek() not in ("=", "!="):
            return left
        op = self.take()
        right = self.primary()
        if op != "=":
            raise Unsupported("!=")
        if left.kind == "attrs" and right.kind == "str" and right.code.startswith("_c"):
            lit = right.code
            terms = " or ".join(f"{self.var(a)} == {lit}" for a in left.attrs)
            return _Expr(f"({terms})", "bool")
        if left.kind == "str" and right.kind == "str":
            return _Expr(f"({left.code} == {right.code})", "bool")
        raise Unsupported(f"comparison of {left.kind} and {right.kind}")

    def primary(self) -> _Expr:
        tok = self.peek()
        if tok is None:
            raise Unsupported("unexpected end")
        if tok == "(":
            self.take("(")
            inner = self.or_expr()
            self.take(")")
            return inner  # keeps .tags: parentheses do not change a disjunction
        if tok[0] in "'\"":
            self.take()
            return _Expr(self.const(tok[1:-1]), "str")
        if tok == "@":
            names = [self.attr_name()]
            while self.peek() == "|" and self.peek(1) == "@":
                self.take("|")
                names.append(self.attr_name())
            return _Expr("", "attrs", tuple(dict.fromkeys(names)))
        if tok == "self" and self.peek(1) == "::":
            self.take()
            self.take("::")
            name = self.take()
            if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
                raise Unsupported(f"self::{name}")
            return _Expr(f"(tag == {name!r})", "bool", tags=(name,))
        if tok == ".//":
            self.take()
            name = self.take()
            if not re.fullmatch(r"[A-Za-z_][\w-]*", name) or self.peek() in ("[", "/", "//"):
                raise Unsupported(f".//{name}")
            return _Expr(f"_has(el, {name!r})", "desc")
        if self.peek(1) == "(":
            return self.call(tok)
        raise Unsupported(f"token {tok!r}")

    def attr_name(self) -> str:
        self.take("@")
        name = self.take()
        if not re.fullmatch(r"[A-Za-z_][\w.-]*", name):
            raise Unsupported(f"@{name}")
        return name

    def args(self) -> list[_Expr]:
        self.take("(")
        out: list[_Expr] = []
        if self.peek() == ")":
            self.take(")")
            return out
        while True:
            out.append(self.or_expr())
            if self.peek() == ",":
                self.take(",")
                continue
            self.take(")")
            return out

    def literal(self, e: _Expr) -> str:
        if e.kind != "str" or not e.code.startswith("_c"):
            raise Unsupported("a literal string is required here")
        value = self.consts[e.code]
        assert isinstance(value, str)
        return value

    def call(self, name: str) -> _Expr:
        self.take()
        args = self.args()
        if name == "not" and len(args) == 1:
            return _Expr(f"(not {self.to_bool(args[0]).code})", "bool")
        if name == "boolean" and len(args) == 1:
            return self.to_bool(args[0])
        if name == "string" and len(args) == 1:
            return self.to_str(args[0])
        if name == "contains" and len(args) == 2:
            return _Expr(f"({self.to_str(args[1]).code} in {self.to_str(args[0]).code})", "bool")
        if name == "starts-with" and len(args) == 2:
            s, prefix = self.to_str(args[0]).code, self.to_str(args[1]).code
            return _Expr(f"{s}.startswith({prefix})", "bool")
        if name == "translate" and len(args) == 3:
            src, dst = self.literal(args[1]), self.literal(args[2])
            table: dict[int, str | None] = {}
            for k, ch in enumerate(src):  # XPath: the first occurrence of a character wins
                table.setdefault(ord(ch), dst[k] if k < len(dst) else None)
            return _Expr(f"{self.to_str(args[0]).code}.translate({self.const(table)})", "str")
        if name == "re:test" and len(args) in (2, 3):
            pattern = self.literal(args[1])
            flags = self.literal(args[2]) if len(args) == 3 else ""
            try:
                rx = re.compile(pattern, re.IGNORECASE if "i" in flags else 0)
            except re.error as exc:
                raise Unsupported(f"regex {pattern!r}: {exc}") from exc
            test = self.const(_cached_search(rx))
            arg = args[0]
            if arg.kind == "attrs" and len(arg.attrs) == 1 and rx.search("") is None:
                # no attribute: the empty string, which this pattern does not match
                v = self.var(arg.attrs[0])
                return _Expr(f"({v} is not None and {test}({v}))", "bool")
            return _Expr(f"{test}({self.to_str(arg).code})", "bool")
        raise Unsupported(f"function {name}/{len(args)}")

    # ---------------------------------------------------------------- conversions
    def to_bool(self, e: _Expr) -> _Expr:
        if e.kind == "bool":
            return e
        if e.kind == "desc":
            return _Expr(e.code, "bool")
        if e.kind == "str":
            return _Expr(f"(len({e.code}) > 0)", "bool")
        if e.kind == "attrs":
            terms = " or ".join(f"{self.var(a)} is not None" for a in e.attrs)
            return _Expr(f"({terms})", "bool")
        raise Unsupported(e.kind)

    def to_str(self, e: _Expr) -> _Expr:
        if e.kind == "str":
            return e
        if e.kind == "attrs":
            if len(e.attrs) == 1:
                return _Expr(f"({self.var(e.attrs[0])} or '')", "str")
            if len(e.attrs) == 2:
                a, b = (self.var(n) for n in e.attrs)
                return _Expr(
                    f"(({b} or '') if {a} is None else ({a} if {b} is None else "
                    f"_first(el, {e.attrs!r})))",
                    "str",
                )
            return _Expr(f"_first(el, {e.attrs!r})", "str")
        raise Unsupported(f"string of {e.kind}")


def _false_without_attributes(cond: str, c: _Compiler) -> bool:
    """Whether ``cond`` is false on every element that has none of the attributes it reads (it
    does not look at the tag or the descendants, so nothing else can make it true)."""
    if "tag ==" in cond or "_has(" in cond:
        return False

    def no_element(*_args):
        raise LookupError  # the condition wants the element: no shortcut

    scope = {**c.consts, **dict.fromkeys(c.attrs.values()), "_first": no_element}
    try:
        return eval(compile(cond, "<cond>", "eval"), scope) is False  # noqa: S307
    except Exception:  # noqa: BLE001 - any doubt: no shortcut
        return False


def _cached_search(rx: re.Pattern) -> Callable[[str], bool]:
    """``rx.search(value) is not None``, remembered per value."""
    cache: dict[str, bool] = {}
    search = rx.search

    def test(value: str) -> bool:
        hit = cache.get(value)
        if hit is None:
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            hit = cache[value] = search(value) is not None
        return hit

    return test


def _first(el, names: tuple[str, ...]) -> str:
    """XPath ``string(@a|@b)``: the value of whichever attribute comes first in the element."""
    found = None
    for name in names:
        if el.get(name) is not None:
            if found is not None:  # two or more present: the element's attribute order decides
                for key in el.keys():
                    if key in names:
                        return el.get(key)
            found = name
    return "" if found is None else el.get(found)


def _has(el, tag: str) -> bool:
    for _ in el.iterdescendants(tag):
        return True
    return False


class PythonPath:
    """A compiled expression: call it like the ``etree.XPath`` it replaces."""

    def __init__(self, original: etree.XPath, select: Callable, source: str):
        self.original = original
        self.path = original.path
        self.source = source
        self._select = select

    def __call__(self, node, **variables):
        if variables or not isinstance(node, etree._Element):
            return self.original(node, **variables)
        return self._select(node)

    def __repr__(self) -> str:
        return f"PythonPath({self.path.strip()[:60]!r}...)"


def compile_path(original: etree.XPath) -> PythonPath:
    """The Python version of ``original``, or ``Unsupported``."""
    c = _Compiler(_tokens(original.path))
    spec = c.path()
    preds: list[_Expr] = spec["preds"]
    tags: tuple[str, ...] | None = (spec["tag"],) if spec["tag"] else None
    if tags is None and preds and preds[0].tags:
        # [self::a or self::b ...] as the first predicate: iterate those tags only
        tags = tuple(dict.fromkeys(preds[0].tags))
        preds = preds[1:]
    cond = " and ".join(p.code for p in preds) or "True"
    iterate = f"root.iterdescendants(*{c.const(tags or (etree.Element,))})"
    lines = ["def _select(root):", "    out = []"]
    if spec["first_child"]:
        lines.append("    seen = set()")
    lines.append(f"    for el in {iterate}:")
    if c.attrs:
        lines.append("        g = el.get")
        lines += [f"        {v} = g({a!r})" for a, v in c.attrs.items()]
        if _false_without_attributes(cond, c):
            # the common case: none of the tested attributes, so the predicate is false
            lines.append(
                "        if " + " and ".join(f"{v} is None" for v in c.attrs.values()) + ":"
            )
            lines.append("            continue")
    if "tag ==" in cond:
        lines.append("        tag = el.tag")
    lines.append(f"        if {cond}:")
    body = "            "
    if spec["first_child"]:
        lines += [
            f"{body}parent = el.getparent()",
            f"{body}if parent in seen:",
            f"{body}    continue",
            f"{body}seen.add(parent)",
        ]
    lines.append(f"{body}out.append(el)")
    if spec["first_only"]:
        lines.append(f"{body}break")
    lines.append("    return out")
    source = "\n".join(lines)
    scope: dict[str, object] = {"_first": _first, "_has": _has, **c.consts}
    exec(compile(source, f"<xpath_python {original.path.strip()[:40]!r}>", "exec"), scope)
    return PythonPath(original, scope["_select"], source)


# --------------------------------------------------------------------------- checking


def random_documents(
    path: str, values: list[str], count: int = 40, seed: int = 0
) -> list[etree._Element]:
    """Random trees for comparing an expression with its compiled form: the tags the path names
    (and a few others), nested up to 6 deep, with attributes it tests set to ``values`` in random
    order, so ``(PATH)[1]``, ``[1]`` per parent, ``.//NAME`` and attribute order all vary."""
    rng = random.Random(seed)
    tags = sorted(
        set(re.findall(r"(?:self::|\.//)([A-Za-z_][\w-]*)", path)) | {"div", "span", "p", "b"}
    )
    attrs = sorted(set(re.findall(r"@([A-Za-z_][\w.-]*)", path)) | {"title"})
    docs = []
    for _ in range(count):
        root = etree.Element("html")
        body = etree.SubElement(root, "body")
        nodes = [body]
        for _ in range(rng.randint(5, 60)):
            parent = rng.choice(nodes[-8:] if rng.random() < 0.6 else nodes)
            el = etree.SubElement(parent, rng.choice(tags))
            for attr in rng.sample(attrs, rng.randint(0, min(3, len(attrs)))):
                el.set(attr, rng.choice(values) if values else "x")
            if rng.random() < 0.1:
                parent.append(etree.Comment("c"))
            if len(nodes) < 200:
                nodes.append(el)
        docs.append(root)
    return docs
