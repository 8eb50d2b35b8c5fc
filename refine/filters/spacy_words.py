"""Words of space-delimited languages other than English, by spaCy's rules for that language.

FineWeb-2 splits a document's words with the tokenizer datatrove assigns to its language
(``datatrove/assets/tokenizer_assignment.csv``): for most languages spaCy's blank tokenizer of
that language or of a proxy (``fr`` for French, ``de`` for German, ``ms`` for many Austronesian
languages, ``xx`` where none fits), whose prefix / suffix / infix rules and special cases differ
from English: French splits elisions (``l'homme`` -> ``l'`` ``homme``), German keeps ``z.B.``,
Spanish ``EE. UU.``. Gopher's stop-word count and average word length, and the repetition
n-grams, depend on those words, so refine splits these languages by the same rules.

**Which rules.** :func:`rules_for_language` maps a ``language`` label (GlotLID's ``fra_Latn``,
lid.176's ``fr``) through datatrove's own assignment table, read from the installed datatrove
(a core dependency): ``SpaCyTokenizer(code)`` -> spaCy ``code``, ``WhitespaceTokenizer`` ->
spaCy ``xx``. English (``en``), the no-space scripts (``refine.pipeline.segment``), labels
datatrove assigns another library (Stanza, Indic NLP, Kiwi, botok: not installed with refine),
spaCy languages that need another package (``vi``: pyvi) and labels outside the table keep
refine's English rules (:mod:`refine.filters.words`), as before this module.

**How.** spaCy splits a text at white space first and tokenizes each whitespace-free chunk on its
own, so, as for English, each distinct chunk of a batch is tokenized once (one spaCy call for
all of a batch's new chunks, joined by newlines) and memoised per language. The exception is a
special case that contains a space (Spanish ``EE. UU.``, Russian ``в т.ч.``): a document holding
one of those strings is tokenized whole, as datatrove does. Chunks longer than ``LONG_CHUNK``
characters take the same plain-regex split as in English (spaCy's rules are quadratic in the
worst case). Each language's pipeline loads once per process on first use (``fr`` ~2 s: its
hyphenated-word regex), and tokenizes inside ``memory_zone`` so its string store does not grow
with the corpus.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import threading

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

#: spaCy languages whose tokenizer needs a package besides spaCy (datatrove requires it too).
_NEEDS = {"vi": "pyvi", "ko": "natto", "zh": "jieba", "ja": "sudachipy", "th": "pythainlp"}
#: Handled elsewhere: refine's English rules, and the segmenters of refine.pipeline.segment.
_NOT_SPACY = {"en", "zh", "ja", "th"}
#: datatrove's tokenizers for scripts refine segments itself (refine.pipeline.segment)
_SEGMENTED = {"ThaiTokenizer", "LaoTokenizer", "KhmerTokenizer", "BurmeseTokenizer"}
_JOIN = 4_000_000  # characters per spaCy call when tokenizing a batch's new chunks

_RE2_META = frozenset("\\.+*?()|[]{}^$")
_lock = threading.Lock()
_caches: dict[str, dict[str, tuple[str, ...]]] = {}


@functools.cache
def assignments() -> dict[str, tuple[str, str]]:
    """datatrove's word-tokenizer table: label -> (tokenizer class, its language code)."""
    from datatrove.utils.word_tokenizers import load_tokenizer_assignments

    out = {}
    for label, factory in load_tokenizer_assignments().items():
        cls, code = factory.args
        out[label] = (cls, code or "")
    return out


@functools.lru_cache(maxsize=4096)
def rules_for_language(label: str | None) -> str | None:
    """The spaCy language whose rules split ``label``'s words, or None for refine's English
    rules (English, unknown labels, and tokenizers refine does not run; see the module doc)."""
    if not label:
        return None
    table = assignments()
    entry = table.get(label) or table.get(label.split("_")[0].split("-")[0])
    if entry is None:
        return None
    cls, code = entry
    if cls == "WhitespaceTokenizer":
        code = "xx"
    elif cls in _SEGMENTED or code in _NOT_SPACY:
        return None  # English, or a segmenter of refine.pipeline.segment
    elif cls != "SpaCyTokenizer":
        _warn_english(label, f"datatrove's {cls}, which refine does not run")
        return None
    need = _NEEDS.get(code)
    if need and importlib.util.find_spec(need) is None:
        _warn_english(label, f"spaCy {code!r}, which needs {need} (not installed)")
        return None
    return code


def _warn_english(label: str, tokenizer: str) -> None:
    """Once per label (``rules_for_language`` is cached): its words are not FineWeb-2's."""
    logging.getLogger("refine").warning(
        "words of %r documents are split by the English rules: FineWeb-2 split them with %s, "
        "so per-language thresholds apply to other words there",
        label,
        tokenizer,
    )


@functools.cache
def _nlp(code: str):
    import spacy

    nlp = spacy.blank(code)
    # lexical attributes (shape, like_num...) are computed for every new word and never read
    # here; the tokenizer's rules do not use them
    nlp.vocab.lex_attr_getters = {}
    return nlp


@functools.cache
def _multiword(code: str):
    """A regex finding the special cases of ``code`` that hold white space, or None."""
    keys = [k for k in _nlp(code).tokenizer.rules if k.strip() and regex.search(r"\s", k)]
    if not keys:
        return None
    return "|".join(_re2_escape(k) for k in sorted(keys, key=len, reverse=True))


def _re2_escape(text: str) -> str:
    return "".join("\\" + c if c in _RE2_META else c for c in text)


def split_document(text: str, code: str) -> list[str]:
    """All words of one document by spaCy ``code``, as datatrove's ``SpaCyTokenizer``: its
    tokens without the white-space ones (datatrove's ``strip_strings``)."""
    nlp = _nlp(code)
    with _lock, nlp.memory_zone():
        nlp.max_length = len(text) + 10
        return [s for s in (t.text.strip() for t in nlp.tokenizer(text)) if s]


def split_chunks(chunks: list[str], code: str, long_chunk: int, long_split) -> list[tuple]:
    """Tokens of each whitespace-free chunk by spaCy language ``code`` (memoised)."""
    cache = _caches.setdefault(code, {})
    out: list[tuple | None] = [cache.get(c) for c in chunks]
    todo = [i for i, t in enumerate(out) if t is None]
    short = []
    for i in todo:
        if len(chunks[i]) > long_chunk:
            out[i] = tuple(long_split(chunks[i]))
        else:
            short.append(i)
    start = 0
    while start < len(short):
        end, size = start, 0
        while end < len(short) and (end == start or size < _JOIN):
            size += len(chunks[short[end]]) + 1
            end += 1
        group = short[start:end]
        for i, words in zip(group, _split_joined([chunks[i] for i in group], code), strict=True):
            out[i] = words
        start = end
    if len(cache) > 500_000:
        cache.clear()
    for i in todo:
        if len(chunks[i]) <= 64:
            cache[chunks[i]] = out[i]
    return out  # type: ignore[return-value]


def _split_joined(chunks: list[str], code: str) -> list[tuple[str, ...]]:
    """One spaCy call for many chunks joined by newlines (a newline is a token of its own, so
    no rule sees two chunks at once); the tokens are mapped back by their offsets."""
    from spacy.attrs import IDX, LENGTH

    joined = "\n".join(chunks)
    nlp = _nlp(code)
    with _lock, nlp.memory_zone():
        nlp.max_length = len(joined) + 10
        offsets = nlp.tokenizer(joined).to_array([IDX, LENGTH])
    sizes = np.fromiter(map(len, chunks), np.int64, len(chunks))
    starts = np.concatenate([[0], np.cumsum(sizes + 1)[:-1]])
    idx, length = offsets[:, 0], offsets[:, 1]
    owner = np.searchsorted(starts, idx, side="right") - 1
    keep = idx < starts[owner] + sizes[owner]  # the separators start where their chunk ends
    idx, length, owner = idx[keep], length[keep], owner[keep]
    words = [joined[a : a + n] for a, n in zip(idx.tolist(), length.tolist(), strict=True)]
    bounds = np.concatenate([[0], np.cumsum(np.bincount(owner, minlength=len(chunks)))])
    b = bounds.tolist()
    return [tuple(words[b[k] : b[k + 1]]) for k in range(len(chunks))]


def whole_documents(texts: pa.Array, code: str) -> list[int]:
    """Rows of ``texts`` that hold a special case with white space of ``code`` (to be split
    whole by :func:`split_document`)."""
    pattern = _multiword(code)
    if pattern is None or not len(texts):
        return []
    hits = pc.fill_null(pc.match_substring_regex(texts, pattern), False)
    return [i for i, hit in enumerate(hits.to_pylist()) if hit]
