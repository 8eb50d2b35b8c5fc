"""LDNOOBW bad-word lists per language, shared by the ``c4`` and ``llama3_heuristics`` stages.

The lists ship in ``assets/ldnoobw`` (CC-BY-4.0, see ``assets/README.md``); a config may replace
or add one per language. Matching is done by Arrow (RE2) on a whole batch, with one pattern per
language built once per process.

``c4_pattern`` reproduces datatrove 0.10.1's ``C4BadWordsFilter``: the lower-cased text is
searched for any entry flanked by non-word characters (Python's ``\\W``; RE2's ``[^\\pL\\pN_]``
is the same class, up to code points newer than Python's Unicode tables), or as a plain substring
for languages written without spaces (ja, th, zh). Unlike datatrove the entries are lower-cased
too: datatrove compares them as written with lower-cased text, so its Spanish list (61 of 69
entries capitalised) and a few Turkish, Chinese, German and French entries never match.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pyarrow.compute as pc
import regex

ASSETS = Path(__file__).parent / "assets" / "ldnoobw"
#: Languages written without spaces: their entries match as plain substrings.
UNSPACED = frozenset({"ja", "th", "zh"})
#: Entries that occur in ordinary text (datatrove's ``_BADWORDS_ALLOWLIST``): never counted.
ALLOWLIST = frozenset({"sm", "グロ", "女の子", "性"})
#: A character that is not a word character for Python's ``re`` (RE2 syntax).
C4_SEP = r"[^\pL\pN_]"
_C4_SEP_PY = regex.compile(r"([^\p{L}\p{N}_])")


def list_path(lang: str, overrides: dict[str, str]) -> Path | None:
    """The word list for ``lang``: the config's file, else the shipped one, else None."""
    path = overrides.get(lang)
    if path is not None:
        return Path(path).expanduser()
    shipped = ASSETS / f"{lang}.txt"
    return shipped if shipped.is_file() else None


def read_entries(path: Path | str) -> set[str]:
    """Lower-cased entries of a list file, one per line, without the allow-listed ones."""
    with open(path, encoding="utf-8") as f:
        return {line.strip().lower() for line in f} - ALLOWLIST - {""}


@functools.lru_cache(maxsize=64)
def c4_pattern(path: str, unspaced: bool) -> str | None:
    """RE2 pattern finding C4's bad words in lower-cased text (None: empty list).

    For spaced languages the text's separators must be doubled first (``double_separators``):
    then each match consumes one copy of the separator on either side and the next match still
    finds its own, so ``count_substring_regex`` counts adjacent occurrences too.
    """
    entries = read_entries(path)
    if not entries:
        return None
    ordered = sorted(entries, key=lambda e: (-len(e), e))
    if unspaced:
        return "(?:" + "|".join(re2_escape(e) for e in ordered) + ")"
    alternation = "|".join(re2_escape(_C4_SEP_PY.sub(r"\1\1", e)) for e in ordered)
    return f"(?:^|{C4_SEP})(?:{alternation})(?:{C4_SEP}|$)"


def double_separators(arr):
    """Every non-word character of every string written twice (see ``c4_pattern``)."""
    return pc.replace_substring_regex(arr, f"({C4_SEP})", r"\1\1")


def re2_escape(text: str) -> str:
    """``text`` as a literal in an RE2 pattern."""
    return "".join(c if c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)
