"""Gopher repetition and quality rules (Rae et al. 2021, table A1), as datatrove 0.10.1 has them.

Every rule's value is a signal column; ``decide`` applies the thresholds of ``Params`` in
datatrove's order and gives datatrove's reason for the first rule that fails. Words come from the
shared ``_words`` column (see ``refine.filters.words``).

With ``languages`` (``refine.filters.languages``) each document is judged by its language's
thresholds, and ``gopher_quality`` counts its language's stop words: ``languages: fineweb2`` gives
FineWeb-2's published values for 20 languages.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import model_validator

from refine.filters import words as W
from refine.filters.languages import (
    NO_SETTINGS,
    LanguageGroups,
    LanguageParams,
    PerLanguageStage,
    language_settings,
)
from refine.pipeline.stage import FilterStage

# datatrove.utils.text.PUNCTUATION_SET: a word made only of these is a "symbol" word.
_PUNCTUATION = (
    "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»"
    + "".join(chr(x) for a, b in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(a, b))
)
#: datatrove.utils.text.TERMINAL_PUNCTUATION (sentence-ending marks of many scripts).
TERMINAL_PUNCTUATION = frozenset(
    "᪩？⁈𑩂．꩞𑅃﹗𑂾\u1b7d፧𑅂꡶꘎⁉࠾᪨𑊩𑱂᱿𖩮᥅\U00011f43\U00011f44﹒𑈹𑈸።܂؞꛳\U00010f88𑗍𐩖𑙂\u061d꩟᠉\u1b7e𑗗᰼𑻸؟𑪜꧉"
    "𑗉𐽙𖫵𖬷܀꓿᜵𑗏𑁇𑗓𑥄៖𑥆𑗑𑗒꯫۔𐩗\U00010f86꡷\u2e54｡៕߹⸮.𑇅࠹𛲟꫰꤯𐽗᭞𑜼፨𑃁꣏𑇟𖬸𑪛𑜾࠷𝪈?𑃀𑗃！։꣎॥𑗖᭛"
    "᠃!၊𖺘⁇𑗌𑑋𖭄᭟𑅁𑙁⸼꩝𑗋。꧈꫱𑜽𐽖𑂿᙮។꛷\U00010f89៚᥄𑗕𑗎᪪᭚࠽𑇞𑗊𐽘\u2e53𑗔𖩯𑇍𑻷𐽕𑩃।𑗂𑇆𑁈။᱾𑱁꘏܁᜶‼"
    "𑈻‽᪫﹖𑑌𑈼\U00010f87𑗐៙᰻"
)
PUNCTUATION_SET = frozenset(_PUNCTUATION) | TERMINAL_PUNCTUATION
STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")

_F64 = pa.float64()


def _arr(values: np.ndarray, type_: pa.DataType = _F64) -> pa.Array:
    return pa.array(values, type=type_, from_pandas=True)


def limit(
    groups: LanguageGroups,
    params: LanguageParams,
    get: Callable[[LanguageParams], float | None],
    falsy_is_off: bool = False,
) -> float | np.ndarray | None:
    """A rule's threshold: the stage's own value when every row uses the stage's params, else a
    per-row array of the row's language's value (NaN: rule off for that row)."""
    if groups.uniform:
        value = get(params)
        return (value or None) if falsy_is_off else value
    return groups.values(get, falsy_is_off)


def language_flags(groups: LanguageGroups) -> list[tuple[np.ndarray, str]]:
    """The ``unknown_language: drop`` flag, for ``first_failure``."""
    return [] if groups.uniform else [(groups.unsettled(), NO_SETTINGS)]


class GopherRepetition(PerLanguageStage, FilterStage):
    """Drops documents made of repeated lines, paragraphs or n-grams (datatrove's
    ``GopherRepetitionFilter``); with ``languages``, by each document's language's thresholds."""

    name = "gopher_repetition"
    thresholds = frozenset(
        {
            "dup_line_frac",
            "dup_para_frac",
            "dup_line_char_frac",
            "dup_para_char_frac",
            "languages",
            "unknown_language",
        }
    )

    class Params(LanguageParams):
        per_language: ClassVar[frozenset[str]] = frozenset(
            {
                "dup_line_frac",
                "dup_para_frac",
                "dup_line_char_frac",
                "dup_para_char_frac",
                "top_n_grams",
                "dup_n_grams",
            }
        )
        dup_line_frac: float | None = 0.3
        """Max share of lines that repeat an earlier line (0 or null: off)."""
        dup_para_frac: float | None = 0.3
        """Max share of paragraphs (split on blank lines) that repeat an earlier one."""
        dup_line_char_frac: float | None = 0.2
        """Max share of the text's characters in repeated lines."""
        dup_para_char_frac: float | None = 0.2
        """Max share of the text's characters in repeated paragraphs."""
        top_n_grams: tuple[tuple[int, float], ...] = ((2, 0.2), (3, 0.18), (4, 0.16))
        """(n, max share of characters covered by the most frequent word n-gram)."""
        dup_n_grams: tuple[tuple[int, float], ...] = (
            (5, 0.15),
            (6, 0.14),
            (7, 0.13),
            (8, 0.12),
            (9, 0.11),
            (10, 0.10),
        )
        """(n, max share of characters in word n-grams that repeat an earlier n-gram)."""

        @model_validator(mode="after")
        def _same_ngram_sizes(self):
            # the signals are the stage's n-gram sizes; a language can only re-set thresholds
            if self.languages is None:
                return self
            for label, s in language_settings(self).items():
                for key in ("top_n_grams", "dup_n_grams"):
                    extra = {n for n, _ in getattr(s, key)} - {n for n, _ in getattr(self, key)}
                    if extra:
                        raise ValueError(
                            f"languages.{label}.{key}: n = {sorted(extra)} not in the stage's "
                            f"{key}; add (n, threshold) there so the signal is computed"
                        )
            return self

    def signal_names(self, table: pa.Table | None = None) -> list[str]:
        p = self.params
        return [
            "gopher_rep_dup_para_frac",
            "gopher_rep_dup_para_char_frac",
            "gopher_rep_dup_line_frac",
            "gopher_rep_dup_line_char_frac",
            *(f"gopher_rep_top_{n}_gram_frac" for n, _ in p.top_n_grams),
            *(f"gopher_rep_dup_{n}_gram_frac" for n, _ in p.dup_n_grams),
        ]

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        n = table.num_rows
        text = W.texts(table)
        text_len = W.as_numpy(pc.utf8_length(text)).astype(np.float64)
        out: dict[str, pa.Array] = {}
        paras = pc.split_pattern_regex(W.strip(text), r"\n{2,}")
        lines = pc.split_pattern_regex(text, r"\n+")
        for kind, lists in (("para", paras), ("line", lines)):
            values, parents = W.flat_with_parents(lists)
            dup, dup_chars = W.duplicate_counts(values, parents, n)
            count = W.as_numpy(pc.list_value_length(W.combine(lists)))
            out[f"gopher_rep_dup_{kind}_frac"] = _arr(W.ratio(dup, count))
            out[f"gopher_rep_dup_{kind}_char_frac"] = _arr(W.ratio(dup_chars, text_len))
        words = W.words_of(table)
        grams = _NGramIndex(words)
        for size, _ in self.params.top_n_grams:
            out[f"gopher_rep_top_{size}_gram_frac"] = _arr(W.ratio(grams.top(size), text_len))
        for size, _ in self.params.dup_n_grams:
            out[f"gopher_rep_dup_{size}_gram_frac"] = _arr(W.ratio(grams.dup(size), text_len))
        out[W.WORDS_COLUMN] = words
        return out

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        groups = LanguageGroups(table, p)

        def frac(name: str) -> float | np.ndarray | None:
            # datatrove: a falsy threshold (0, None) turns these four rules off
            return limit(groups, p, lambda s: getattr(s, name), falsy_is_off=True)

        def gram(key: str, n: int) -> float | np.ndarray | None:
            return limit(groups, p, lambda s: dict(getattr(s, key)).get(n))

        rules = [
            ("gopher_rep_dup_para_frac", frac("dup_para_frac"), "dup_para_frac"),
            ("gopher_rep_dup_para_char_frac", frac("dup_para_char_frac"), "dup_para_char_frac"),
            ("gopher_rep_dup_line_frac", frac("dup_line_frac"), "dup_line_frac"),
            ("gopher_rep_dup_line_char_frac", frac("dup_line_char_frac"), "dup_line_char_frac"),
            *(
                (f"gopher_rep_top_{k}_gram_frac", gram("top_n_grams", k), f"top_{k}_gram")
                for k, _ in p.top_n_grams
            ),
            *(
                (f"gopher_rep_dup_{k}_gram_frac", gram("dup_n_grams", k), f"duplicated_{k}_n_grams")
                for k, _ in p.dup_n_grams
            ),
        ]
        empty = W.as_numpy(pc.equal(W.texts(table), "")).astype(bool)
        flags = [*language_flags(groups), (empty, "empty")]
        return first_failure(table, flags, [(c, t, r, ">") for c, t, r in rules])


def first_failure(
    table: pa.Table,
    flags: list[tuple[np.ndarray, str]],
    rules: list[tuple[str, float | np.ndarray | None, str, str]],
) -> pa.Array:
    """The reason of the first failing rule per row (null: kept), in the order given.

    ``flags`` are precomputed boolean masks checked first; each rule is (signal column,
    threshold, reason, ``>`` or ``<``): the row fails when ``signal op threshold``. A None
    threshold disables the rule; a threshold may also be a per-row array (NaN: off for that
    row). NaN signals never fail.
    """
    n = table.num_rows
    reasons = np.full(n, None, dtype=object)
    undecided = np.ones(n, dtype=bool)
    for mask, reason in flags:
        hit = undecided & mask
        reasons[hit] = reason
        undecided &= ~hit
    for column, threshold, reason, op in rules:
        if threshold is None:
            continue
        values = W.as_numpy(table[column]).astype(np.float64)
        with np.errstate(invalid="ignore"):
            fails = values > threshold if op == ">" else values < threshold
        hit = undecided & fails
        reasons[hit] = reason
        undecided &= ~hit
    return pa.array(reasons, pa.string())


_MIX = np.uint64(0xBF58476D1CE4E5B9)


class _NGramIndex:
    """Word n-grams of a batch as 64-bit hashes of batch-wide word ids.

    datatrove compares n-grams as strings (``" ".join`` for the top n-gram, ``"".join`` for the
    duplicated n-grams); equal word sequences give equal hashes, and a collision of two different
    sequences is ~1e-10 likely per batch.

    Cost: an n-gram can occur twice in a document only if the (n-1)-grams at its start and at
    its next word do too, so for the sizes asked in increasing order (as the Gopher rules are)
    only those candidates are hashed and numbered: on web text ~40% of the 3-grams and ~7% of
    the 10-grams. The hash of the n words at each position is built from the one of the n-1
    words there, and n-grams are numbered in order of first appearance by a hash table
    (``pandas.factorize``), not a sort.
    """

    def __init__(self, words):
        words = W.combine(words)
        self.n_docs = len(words)
        flat = pc.list_flatten(words)
        self.doc = pc.list_parent_indices(words).to_numpy(zero_copy_only=False).astype(np.int64)
        encoded = W.combine(pc.dictionary_encode(flat)) if len(flat) else None
        if encoded is None:
            self.ids = np.zeros(0, np.uint64)
            self.lens = np.zeros(0, np.int64)
        else:
            ids = W.as_numpy(encoded.indices).astype(np.uint64)
            self.ids = ids * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
            self.lens = W.as_numpy(pc.utf8_length(flat)).astype(np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.lens)])
        #: per word position, the end (exclusive) of its document's words
        self.doc_end = W.as_numpy(words.offsets).astype(np.int64)[1:][self.doc]
        self._rolling = (1, self.ids)  # (n, hash of the n words at every position)
        self._last: tuple[int, _Grams] | None = None

    def _hashes(self, n: int) -> np.ndarray:
        """Hash of the ``n`` words at each position (not yet tied to a document)."""
        size, h = self._rolling
        if size > n:
            size, h = 1, self.ids
        with np.errstate(over="ignore"):
            while size < n:
                size += 1
                h = h[:-1]
                h = (h ^ (h >> np.uint64(29))) * _MIX + self.ids[size - 1 :]
        self._rolling = (size, h)
        return h

    def _starts(self, n: int) -> np.ndarray:
        """Start positions of all the n-grams that fit in their document."""
        m = len(self.ids) - n + 1
        if m <= 0:
            return np.zeros(0, np.int64)
        return np.flatnonzero(self.doc[:m] == self.doc[n - 1 :])

    def _grams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start positions, hashes, char lengths without separators) of all valid n-grams."""
        starts = self._starts(n)
        return starts, self._hash_at(n, starts), self.cum[starts + n] - self.cum[starts]

    def _hash_at(self, n: int, starts: np.ndarray) -> np.ndarray:
        if len(starts) == 0:
            return np.zeros(0, np.uint64)
        with np.errstate(over="ignore"):
            return self._hashes(n)[starts] ^ (
                self.doc[starts].astype(np.uint64) * np.uint64(0x94D049BB133111EB)
            )

    def _codes(self, n: int) -> _Grams:
        """The n-grams that may occur more than once in their document, numbered."""
        last = self._last
        if last is not None and last[0] == n:
            return last[1]
        if last is not None and last[0] == n - 1 and len(self.ids):
            prev = last[1]
            repeats = np.zeros(len(self.ids) + 1, bool)  # (n-1)-gram there occurs twice or more
            repeats[prev.pos[prev.counts[prev.codes] > 1]] = True
            pos = np.flatnonzero(repeats[:-1])
            pos = pos[(pos + n <= self.doc_end[pos]) & repeats[pos + 1]]
        else:
            pos = self._starts(n)
        codes = pd.factorize(self._hash_at(n, pos))[0] if len(pos) else np.zeros(0, np.int64)
        new = np.ones(len(codes), bool)
        if len(codes):
            new[1:] = codes[1:] > np.maximum.accumulate(codes)[:-1]
        first = np.flatnonzero(new)
        grams = _Grams(pos, codes, first, np.bincount(codes, minlength=len(first)))
        self._last = (n, grams)
        return grams

    def top(self, n: int) -> np.ndarray:
        """Per document: characters of its most frequent n-gram (with its n-1 separators) times
        its count."""
        result = np.zeros(self.n_docs, np.float64)
        starts = self._starts(n)
        if len(starts) == 0:
            return result
        # no n-gram repeats: Counter.most_common(1) gives the document's first n-gram, once
        lead = starts[np.r_[True, self.doc[starts[1:]] != self.doc[starts[:-1]]]]
        result[self.doc[lead]] = self.cum[lead + n] - self.cum[lead] + n - 1
        g = self._codes(n)
        if len(g.first) == 0:
            return result
        # numbers grow with first appearance and documents are contiguous, so a document's
        # numbers form one run; most_common(1): the highest count, ties to the first seen
        first_pos = g.pos[g.first]
        code_doc = self.doc[first_pos]
        run_start = np.flatnonzero(np.r_[True, code_doc[1:] != code_doc[:-1]])
        run = np.repeat(np.arange(len(run_start)), np.diff(np.r_[run_start, len(g.first)]))
        best = np.maximum.reduceat(g.counts, run_start)
        cand = np.flatnonzero((g.counts == best[run]) & (g.counts > 1))
        if len(cand) == 0:
            return result
        lead = cand[np.r_[True, run[cand][1:] != run[cand][:-1]]]
        at = first_pos[lead]
        result[code_doc[lead]] = g.counts[lead] * (self.cum[at + n] - self.cum[at] + n - 1)
        return result

    def dup(self, n: int) -> np.ndarray:
        """Per document: datatrove's ``find_all_duplicate`` (characters in repeated n-grams,
        scanning left to right and jumping over an n-gram once it is counted).

        The scan adds every n-gram it lands on to the seen set, and counts one already there.
        Only n-grams that occurred before (not first appearances) can count, so the loop visits
        just those: one is in the seen set when its first appearance was landed on (not jumped
        over), or an earlier repeat of it was landed on without counting.
        """
        g = self._codes(n)
        repeats = np.flatnonzero(g.first[g.codes] < np.arange(len(g.codes)))
        if len(repeats) == 0:
            return np.zeros(self.n_docs, np.float64)
        at = g.pos[repeats]
        cand = at.tolist()
        cand_code = g.codes[repeats].tolist()
        cand_first = g.pos[g.first[g.codes[repeats]]].tolist()
        cand_end = self.doc_end[at].tolist()
        jumped = bytearray(len(self.ids))
        ones = b"\x01" * n
        seen_again: set[int] = set()
        counted: list[int] = []
        j, m = 0, len(cand)
        while j < m:
            k = cand[j]
            if not jumped[cand_first[j]] or cand_code[j] in seen_again:
                counted.append(j)
                stop = min(k + n, cand_end[j])
                jumped[k + 1 : stop] = ones[: stop - k - 1]
                j = bisect.bisect_left(cand, stop, j + 1)
            else:
                seen_again.add(cand_code[j])
                j += 1
        hit = at[counted]
        chars = self.cum[hit + n] - self.cum[hit]
        return np.bincount(self.doc[hit], weights=chars, minlength=self.n_docs)


@dataclass
class _Grams:
    """The n-grams of a batch that may repeat in their document (all that do, in order)."""

    pos: np.ndarray  # start word position of each
    codes: np.ndarray  # numbers, equal for equal n-grams, in order of first appearance
    first: np.ndarray  # index into ``pos`` of each number's first appearance
    counts: np.ndarray  # occurrences of each number


class GopherQuality(PerLanguageStage, FilterStage):
    """Drops documents whose words do not look like prose (datatrove's ``GopherQualityFilter``);
    with ``languages``, by each document's language's thresholds and stop words."""

    name = "gopher_quality"
    #: ``languages`` is a threshold although its stop words are scoring: ``score_fingerprint``
    #: adds the stop words per language, so only a change of them recomputes the signals.
    thresholds = frozenset(
        {
            "languages",
            "unknown_language",
            "min_doc_words",
            "max_doc_words",
            "min_avg_word_length",
            "max_avg_word_length",
            "max_symbol_word_ratio",
            "max_bullet_lines_ratio",
            "max_ellipsis_lines_ratio",
            "max_non_alpha_words_ratio",
            "min_stop_words",
        }
    )

    class Params(LanguageParams):
        per_language: ClassVar[frozenset[str]] = frozenset(
            {
                "min_doc_words",
                "max_doc_words",
                "min_avg_word_length",
                "max_avg_word_length",
                "max_symbol_word_ratio",
                "max_bullet_lines_ratio",
                "max_ellipsis_lines_ratio",
                "max_non_alpha_words_ratio",
                "min_stop_words",
                "stop_words",
            }
        )

        min_doc_words: int | None = 50
        """Min words that are not only punctuation (0 or null: off)."""
        max_doc_words: int | None = 100000
        """Max words that are not only punctuation."""
        min_avg_word_length: int | None = 3
        """Min mean length of those words, in characters."""
        max_avg_word_length: int | None = 10
        """Max mean length of those words, in characters."""
        max_symbol_word_ratio: float | None = 0.1
        """Max count of '#', and of '...'/'…', per word (all words, punctuation included)."""
        max_bullet_lines_ratio: float | None = 0.9
        """Max share of lines starting with '•' or '-'."""
        max_ellipsis_lines_ratio: float | None = 0.3
        """Max share of lines ending with '...' or '…'."""
        max_non_alpha_words_ratio: float | None = 0.8
        """Min (despite the name, as in datatrove) share of words with a letter."""
        min_stop_words: int | None = 2
        """Min number of distinct stop words present."""
        stop_words: tuple[str, ...] | None = None
        """Stop words (case-sensitive); null: the, be, to, of, and, that, have, with. Per
        language (``languages``, FineWeb-2's ``stopwords``) each document is scored with its
        language's list."""

    SIGNALS = (
        "gopher_word_count",
        "gopher_mean_word_length",
        "gopher_hash_word_ratio",
        "gopher_ellipsis_word_ratio",
        "gopher_bullet_lines_ratio",
        "gopher_ellipsis_lines_ratio",
        "gopher_alpha_words_ratio",
        "gopher_stop_words",
    )

    def signal_names(self, table: pa.Table | None = None) -> list[str]:
        return list(self.SIGNALS)

    def score_fingerprint(self) -> str:
        base = super().score_fingerprint()
        if self.params.languages is None:
            return base
        stops = {k: s.stop_words for k, s in sorted(language_settings(self.params).items())}
        ident = json.dumps([base, stops], sort_keys=True)
        return hashlib.sha256(ident.encode()).hexdigest()[:16]

    def _stop_words(self, table: pa.Table, flat: pa.Array, parents: np.ndarray) -> np.ndarray:
        """Distinct stop words per document, each document with its language's list."""
        n = table.num_rows
        groups = LanguageGroups(table, self.params)
        if groups.uniform:
            return _distinct_hits(flat, parents, self.params.stop_words, n)
        counts = np.zeros(n, np.int64)
        word_group = groups.index[parents]
        for i, settings in enumerate(groups.settings):
            mask = word_group == i
            if not mask.any():
                continue
            stop_words = (settings or self.params).stop_words
            counts += _distinct_hits(flat.filter(pa.array(mask)), parents[mask], stop_words, n)
        return counts

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        n = table.num_rows
        text = W.texts(table)
        words = W.combine(W.words_of(table))
        flat, parents = W.flat_with_parents(words)
        n_words = W.as_numpy(pc.list_value_length(words)).astype(np.float64)
        lens = W.as_numpy(pc.utf8_length(flat)).astype(np.float64)
        non_symbol = W.as_numpy(
            pc.match_substring_regex(flat, f"[^{W.char_class(PUNCTUATION_SET)}]")
        ).astype(bool)
        word_count = np.bincount(parents[non_symbol], minlength=n).astype(np.int64)
        length_sum = np.bincount(parents[non_symbol], weights=lens[non_symbol], minlength=n)
        alpha = W.per_row_sum(pc.match_substring_regex(flat, r"\pL"), parents, n)
        stop_count = self._stop_words(table, flat, parents)

        hashes = W.as_numpy(pc.count_substring(text, "#"))
        ellipses = W.as_numpy(pc.count_substring(text, "...")) + W.as_numpy(
            pc.count_substring(text, "…")
        )
        lines, extra = W.splitlines(text)
        line_flat, line_parents = W.flat_with_parents(lines)
        n_lines = W.as_numpy(pc.list_value_length(lines)) - extra
        bullets = W.per_row_sum(
            pc.match_substring_regex(line_flat, rf"\A[{W.WS}]*[•\-]"), line_parents, n
        )
        end_ellipsis = W.per_row_sum(
            pc.match_substring_regex(line_flat, rf"(?:\.\.\.|…)[{W.WS}]*\z"), line_parents, n
        )
        return {
            "gopher_word_count": pa.array(word_count, pa.int64()),
            "gopher_mean_word_length": _arr(W.ratio(length_sum, word_count)),
            "gopher_hash_word_ratio": _arr(W.ratio(hashes, n_words)),
            "gopher_ellipsis_word_ratio": _arr(W.ratio(ellipses, n_words)),
            "gopher_bullet_lines_ratio": _arr(W.ratio(bullets, n_lines)),
            "gopher_ellipsis_lines_ratio": _arr(W.ratio(end_ellipsis, n_lines)),
            "gopher_alpha_words_ratio": _arr(W.ratio(alpha, n_words)),
            "gopher_stop_words": pa.array(stop_count, pa.int64()),
            W.WORDS_COLUMN: words,
        }

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        groups = LanguageGroups(table, p)

        def t(name: str) -> float | np.ndarray | None:
            # datatrove: a falsy threshold (0, None) turns a rule off
            return limit(groups, p, lambda s: getattr(s, name), falsy_is_off=True)

        return first_failure(
            table,
            language_flags(groups),
            [
                ("gopher_word_count", t("min_doc_words"), "gopher_short_doc", "<"),
                ("gopher_word_count", t("max_doc_words"), "gopher_long_doc", ">"),
                (
                    "gopher_mean_word_length",
                    t("min_avg_word_length"),
                    "gopher_below_avg_threshold",
                    "<",
                ),
                (
                    "gopher_mean_word_length",
                    t("max_avg_word_length"),
                    "gopher_above_avg_threshold",
                    ">",
                ),
                (
                    "gopher_hash_word_ratio",
                    t("max_symbol_word_ratio"),
                    "gopher_too_many_hashes",
                    ">",
                ),
                (
                    "gopher_ellipsis_word_ratio",
                    t("max_symbol_word_ratio"),
                    "gopher_too_many_ellipsis",
                    ">",
                ),
                (
                    "gopher_bullet_lines_ratio",
                    t("max_bullet_lines_ratio"),
                    "gopher_too_many_bullets",
                    ">",
                ),
                (
                    "gopher_ellipsis_lines_ratio",
                    t("max_ellipsis_lines_ratio"),
                    "gopher_too_many_end_ellipsis",
                    ">",
                ),
                (
                    "gopher_alpha_words_ratio",
                    t("max_non_alpha_words_ratio"),
                    "gopher_below_alpha_threshold",
                    "<",
                ),
                ("gopher_stop_words", t("min_stop_words"), "gopher_enough_stop_words", "<"),
            ],
        )


def _distinct_hits(
    flat: pa.Array, parents: np.ndarray, stop_words: tuple[str, ...] | None, n: int
) -> np.ndarray:
    """Per document (``parents`` numbers the word's document): how many distinct stop words of
    the list occur among its words (null list: English ``STOP_WORDS``)."""
    stop = np.array(STOP_WORDS if stop_words is None else stop_words)
    stop_ids = (
        W.as_numpy(pc.index_in(flat, pa.array(stop, pa.large_string())))
        if len(stop)
        else np.full(len(flat), np.nan)
    )
    hit = ~np.isnan(stop_ids.astype(np.float64))
    pairs = np.unique(parents[hit] * max(len(stop), 1) + stop_ids[hit].astype(np.int64))
    return np.bincount(pairs // max(len(stop), 1), minlength=n).astype(np.int64)
