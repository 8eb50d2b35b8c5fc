"""Llama 3's document heuristics (Dubey et al. 2024, "The Llama 3 Herd of Models", 3.1.1).

Three signals, each a column, each with a threshold in ``Params`` (re-tunable on saved signals):

- ``llama3_dup_ngram_coverage``: the share of a document's word characters covered by word
  ``ngram_size``-grams that occur more than once in it (Rae et al. 2021's duplicated n-gram
  coverage, every occurrence counted, the first included). Pages of log lines or repeated error
  messages score near 1 even when every line differs by a timestamp, which line dedup misses.
  Reason ``llama3_dup_ngrams``.
- ``llama3_dirty_words``: how many entries of the document's language's LDNOOBW list occur in it
  (lower-cased, whole words; plain substrings for ja, th, zh, as datatrove's C4 bad-words filter
  does). The language is the ``language`` column's, else ``default_language``; a language without
  a list gives null (kept). Reason ``llama3_dirty_words``.
- ``llama3_token_kl``: KL(P || Q_ref) in nats, between the distribution of the document's
  lower-cased tokens and a reference distribution built from a corpus the user names
  (``refine.filters.reference``), averaged over windows of ``kl_window`` tokens so that it does not
  fall with the document's length. Null (kept) without a reference, for a document with fewer than
  ``kl_min_tokens`` tokens, or whose language has no reference. Reason ``llama3_token_kl``.

The n-grams and the KL tokens come from the shared ``_words`` column. The paper publishes no
thresholds; the defaults here are measured on the shared real crawl samples (see each Param).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex
from pydantic import Field

from refine.errors import ConfigError
from refine.filters import words as W
from refine.filters.badwords import ALLOWLIST, ASSETS, UNSPACED
from refine.filters.badwords import re2_escape as _re2_escape
from refine.filters.gopher import _NGramIndex, first_failure, language_flags, limit
from refine.filters.languages import LanguageGroups, LanguageParams, PerLanguageStage
from refine.filters.reference import load_reference
from refine.pipeline.stage import FilterStage

#: A character that is not part of a word (RE2 syntax): letters, digits and marks are.
_SEP = r"[^\pL\pN\pM]"
_SEP_PY = regex.compile(r"([^\p{L}\p{N}\p{M}])")

SIGNALS = ("llama3_dup_ngram_coverage", "llama3_dirty_words", "llama3_token_kl")


class Llama3Params(LanguageParams):
    #: with ``languages``: the three thresholds (FineWeb-2 sets none of them)
    per_language: ClassVar[frozenset[str]] = frozenset(
        {"max_dup_ngram_coverage", "max_dirty_words", "max_token_kl"}
    )

    ngram_size: int = Field(default=5, ge=1, le=50)
    """Word n-gram size of the duplicated n-gram coverage."""
    max_dup_ngram_coverage: float | None = 0.4
    """Max share of word characters in repeated n-grams (null: off). On the shared real samples
    the documents the FineWeb chain keeps are all below 0.27 (99th percentile 0.25); a page of
    log lines that differ only by timestamp scores above 0.8."""
    default_language: str = "en"
    """Dirty-word list for documents without a ``language`` column (or a null one)."""
    dirty_word_lists: dict[str, str] = Field(default_factory=dict)
    """language -> file (one entry per line) replacing or adding to the shipped LDNOOBW lists."""
    max_dirty_words: int | None = 10
    """Max dirty-word occurrences kept (null: off). C4 drops at the first, which removes news on
    sexual crimes and health pages; on the shared samples clean pages have at most 10, profane
    forum dumps 11-38, adult pages dozens."""
    reference: str | dict[str, str] | None = None
    """Token reference file (``refine build-reference``), or language -> file; null: no KL."""
    kl_min_tokens: int = Field(default=50, ge=1)
    """Documents with fewer tokens get no KL (their empirical distribution is too noisy)."""
    kl_window: int = Field(default=100, ge=10)
    """Tokens per window: the KL is the mean over windows, so it does not fall with length."""
    max_token_kl: float | None = 4.5
    """Max mean KL(P_window || Q_ref), nats (null: off). Measured with an English reference of
    151 real pages: clean English pages <= 4.3, German / French / Spanish / Chinese pages >= 4.4
    (median 5.2), random tokens ~7. Its scale depends on the reference: re-tune on the saved
    signal for yours."""


class Llama3Heuristics(PerLanguageStage, FilterStage):
    """Drops repeated-content pages, adult pages and outlier-token pages (Llama 3's heuristics)."""

    name = "llama3_heuristics"
    path_params = ("reference", "dirty_word_lists")
    Params = Llama3Params
    #: ``languages`` / ``unknown_language`` are not listed (tests pin this set): changing them
    #: recomputes the signals, which is correct, only slower than a re-tune.
    thresholds = frozenset({"max_dup_ngram_coverage", "max_dirty_words", "max_token_kl"})

    def check(self) -> None:
        p = self.params
        for lang, path in p.dirty_word_lists.items():
            if not Path(path).expanduser().is_file():
                raise ConfigError(
                    f"llama3_heuristics.dirty_word_lists.{lang}: file not found: {path}"
                )
        refs = p.reference if isinstance(p.reference, dict) else {"*": p.reference}
        for lang, path in refs.items():
            if path is None:
                continue
            where = "reference" if lang == "*" else f"reference.{lang}"
            try:
                load_reference(path)
            except ConfigError as e:
                raise ConfigError(f"llama3_heuristics.{where}: {e}") from None

    def signal_names(self, table: pa.Table | None = None) -> list[str]:
        return list(SIGNALS)

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        words = W.combine(W.words_of(table))
        languages = self._languages(table)
        return {
            "llama3_dup_ngram_coverage": pa.array(
                dup_ngram_coverage(words, self.params.ngram_size), pa.float64(), from_pandas=True
            ),
            "llama3_dirty_words": self._dirty_words(table, languages),
            "llama3_token_kl": self._token_kl(words, languages),
            W.WORDS_COLUMN: words,
        }

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        groups = LanguageGroups(table, p)

        def t(name: str):
            return limit(groups, p, lambda s: getattr(s, name))

        return first_failure(
            table,
            language_flags(groups),
            [
                (
                    "llama3_dup_ngram_coverage",
                    t("max_dup_ngram_coverage"),
                    "llama3_dup_ngrams",
                    ">",
                ),
                ("llama3_dirty_words", t("max_dirty_words"), "llama3_dirty_words", ">"),
                ("llama3_token_kl", t("max_token_kl"), "llama3_token_kl", ">"),
            ],
        )

    # -- signals --------------------------------------------------------------------------------

    def _languages(self, table: pa.Table) -> pa.Array:
        default = self.params.default_language
        if "language" not in table.column_names:
            return pa.array([default] * table.num_rows, pa.string())
        return W.combine(pc.fill_null(table["language"].cast(pa.string()), default))

    def _dirty_words(self, table: pa.Table, languages: pa.Array) -> pa.Array:
        n = table.num_rows
        counts = np.full(n, np.nan)
        text = W.texts(table)
        for lang in pc.unique(languages).to_pylist():
            pattern = self._dirty_pattern(lang)
            if pattern is None:
                continue
            rows = np.flatnonzero(W.as_numpy(pc.equal(languages, lang)).astype(bool))
            sub = pc.utf8_lower(W.combine(text).take(pa.array(rows)))
            if lang not in UNSPACED:
                # every separator doubled, so adjacent matches each find their own boundaries
                sub = pc.replace_substring_regex(sub, f"({_SEP})", r"\1\1")
            counts[rows] = W.as_numpy(pc.count_substring_regex(sub, pattern))
        return pa.array(counts, pa.int64(), from_pandas=True)

    def _dirty_pattern(self, lang: str) -> str | None:
        path = self.params.dirty_word_lists.get(lang)
        if path is None:
            path = ASSETS / f"{lang}.txt"
            if not path.is_file():
                return None
        return _dirty_regex(str(Path(path).expanduser()), lang in UNSPACED)

    def _token_kl(self, words: pa.ListArray, languages: pa.Array) -> pa.Array:
        p = self.params
        ref = p.reference
        n = len(words)
        if ref is None:
            return pa.nulls(n, pa.float64())
        if isinstance(ref, str):
            return pa.array(token_kl(words, ref, p.kl_min_tokens, p.kl_window), from_pandas=True)
        out = np.full(n, np.nan)
        for lang, path in ref.items():
            rows = np.flatnonzero(W.as_numpy(pc.equal(languages, lang)).astype(bool))
            if len(rows):
                sub = words.take(pa.array(rows))
                out[rows] = token_kl(sub, path, p.kl_min_tokens, p.kl_window)
        return pa.array(out, pa.float64(), from_pandas=True)


def dup_ngram_coverage(words: pa.ListArray, n: int) -> np.ndarray:
    """Per document: characters of the words covered by an n-gram occurring twice or more in the
    document, over the characters of all its words (NaN without words)."""
    index = _NGramIndex(words)  # batch-wide n-gram hashes, shared with gopher_repetition
    total = np.bincount(index.doc, weights=index.lens, minlength=index.n_docs)
    grams = index._codes(n)
    covered_chars = np.zeros(index.n_docs)
    if len(grams.codes):
        dup_starts = grams.pos[grams.counts[grams.codes] > 1]
        if len(dup_starts):
            m = len(index.ids)
            depth = np.cumsum(
                np.bincount(dup_starts, minlength=m + 1)
                - np.bincount(dup_starts + n, minlength=m + 1)
            )[:m]
            covered = depth > 0
            covered_chars = np.bincount(
                index.doc[covered], weights=index.lens[covered], minlength=index.n_docs
            )
    return W.ratio(covered_chars, total)


def token_kl(
    words: pa.ListArray, reference: str, min_tokens: int = 1, window: int = 100
) -> np.ndarray:
    """Per document: KL(P || Q_ref) in nats, P the distribution of its lower-cased tokens, as the
    token-weighted mean over consecutive windows of ``window`` tokens (the last partial window
    joins the one before). NaN below ``min_tokens`` tokens.

    Windows make the score comparable across lengths: the KL of one whole document falls as it
    grows (its own entropy, at most log(tokens), is subtracted), so one threshold would treat a
    short page and a long one differently.
    """
    ref = load_reference(reference)
    words = W.combine(words)
    n = len(words)
    out = np.full(n, np.nan)
    flat, parents = W.flat_with_parents(words)
    if len(flat) == 0:
        return out
    parents = parents.astype(np.int64)
    n_tokens = np.bincount(parents, minlength=n)
    position = np.arange(len(flat)) - W.as_numpy(words.offsets)[parents]
    n_windows = np.maximum(n_tokens // window, 1)
    first_window = np.concatenate([[0], np.cumsum(n_windows)])
    group = first_window[parents] + np.minimum(position // window, n_windows[parents] - 1)
    encoded = W.combine(pc.dictionary_encode(pc.utf8_lower(flat)))
    ids = W.as_numpy(encoded.indices).astype(np.int64)
    log_q = ref.log_q(encoded.dictionary)
    size = len(encoded.dictionary)
    pairs, counts = np.unique(group * size + ids, return_counts=True)
    g, tok = pairs // size, pairs % size
    group_tokens = np.bincount(group, minlength=first_window[-1]).astype(np.float64)
    p = counts / group_tokens[g]
    kl = np.bincount(g, weights=p * (np.log(p) - log_q[tok]), minlength=first_window[-1])
    doc_of_group = np.repeat(np.arange(n), n_windows)
    mean = np.bincount(doc_of_group, weights=kl * group_tokens, minlength=n)
    enough = n_tokens >= min_tokens
    out[enough] = np.maximum(mean[enough] / n_tokens[enough], 0.0)
    return out


@functools.lru_cache(maxsize=64)
def _dirty_regex(path: str, unspaced: bool) -> str | None:
    """One RE2 alternation of a list's entries (longest first), whole words unless
    ``unspaced``; for spaced text the entries' separators are doubled as the text's are."""
    with open(path, encoding="utf-8") as f:
        entries = {line.strip().lower() for line in f} - ALLOWLIST - {""}
    if not entries:
        return None
    ordered = sorted(entries, key=lambda e: (-len(e), e))
    if unspaced:
        return "(?:" + "|".join(_re2_escape(e) for e in ordered) + ")"
    # in the text every separator is doubled; a space in an entry matches any whitespace run
    alternation = "|".join(
        r"\s+".join(_re2_escape(_SEP_PY.sub(r"\1\1", part)) for part in e.split()) for e in ordered
    )
    return f"(?:^|{_SEP})(?:{alternation})(?:{_SEP}|$)"
