"""Gopher repetition and quality rules (Rae et al. 2021, table A1), as datatrove 0.10.1 has them.

Every rule's value is a signal column; ``decide`` applies the thresholds of ``Params`` in
datatrove's order and gives datatrove's reason for the first rule that fails. Words come from the
shared ``_words`` column (see ``refine.filters.words``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refine.filters import words as W
from refine.pipeline.stage import FilterStage, StageParams

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


class GopherRepetition(FilterStage):
    """Drops documents made of repeated lines, paragraphs or n-grams (datatrove's
    ``GopherRepetitionFilter``)."""

    name = "gopher_repetition"
    thresholds = frozenset(
        {"dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac"}
    )

    class Params(StageParams):
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
        rules = [
            # datatrove: a falsy threshold (0, None) turns these four rules off
            ("gopher_rep_dup_para_frac", p.dup_para_frac or None, "dup_para_frac"),
            ("gopher_rep_dup_para_char_frac", p.dup_para_char_frac or None, "dup_para_char_frac"),
            ("gopher_rep_dup_line_frac", p.dup_line_frac or None, "dup_line_frac"),
            ("gopher_rep_dup_line_char_frac", p.dup_line_char_frac or None, "dup_line_char_frac"),
            *((f"gopher_rep_top_{k}_gram_frac", t, f"top_{k}_gram") for k, t in p.top_n_grams),
            *(
                (f"gopher_rep_dup_{k}_gram_frac", t, f"duplicated_{k}_n_grams")
                for k, t in p.dup_n_grams
            ),
        ]
        empty = W.as_numpy(pc.equal(W.texts(table), "")).astype(bool)
        return first_failure(table, [(empty, "empty")], [(c, t, r, ">") for c, t, r in rules])


def first_failure(
    table: pa.Table,
    flags: list[tuple[np.ndarray, str]],
    rules: list[tuple[str, float | None, str, str]],
) -> pa.Array:
    """The reason of the first failing rule per row (null: kept), in the order given.

    ``flags`` are precomputed boolean masks checked first; each rule is (signal column,
    threshold, reason, ``>`` or ``<``): the row fails when ``signal op threshold``. A None
    threshold disables the rule. NaN signals never fail.
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


class _NGramIndex:
    """Word n-grams of a batch as 64-bit hashes of batch-wide word ids (one sort per n).

    datatrove compares n-grams as strings (``" ".join`` for the top n-gram, ``"".join`` for the
    duplicated n-grams); equal word sequences give equal hashes, and a collision of two different
    sequences is ~1e-10 likely per batch.
    """

    def __init__(self, words):
        words = W.combine(words)
        self.n_docs = len(words)
        flat = pc.list_flatten(words)
        self.doc = pc.list_parent_indices(words).to_numpy(zero_copy_only=False)
        encoded = W.combine(pc.dictionary_encode(flat)) if len(flat) else None
        if encoded is None:
            self.ids = np.zeros(0, np.uint64)
            self.lens = np.zeros(0, np.int64)
        else:
            ids = W.as_numpy(encoded.indices).astype(np.uint64)
            self.ids = ids * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)
            self.lens = W.as_numpy(pc.utf8_length(flat)).astype(np.int64)
        self.cum = np.concatenate([[0], np.cumsum(self.lens)])

    def _grams(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start positions, hashes, char lengths without separators) of the valid n-grams."""
        m = len(self.ids) - n + 1
        if m <= 0:
            empty = np.zeros(0, np.int64)
            return empty, np.zeros(0, np.uint64), empty
        starts = np.flatnonzero(self.doc[:m] == self.doc[n - 1 :])
        h = self.ids[starts].copy()
        with np.errstate(over="ignore"):
            for k in range(1, n):
                h = (h ^ (h >> np.uint64(29))) * np.uint64(0xBF58476D1CE4E5B9) + self.ids[
                    starts + k
                ]
            h ^= self.doc[starts].astype(np.uint64) * np.uint64(0x94D049BB133111EB)
        chars = self.cum[starts + n] - self.cum[starts]
        return starts, h, chars

    def top(self, n: int) -> np.ndarray:
        """Per document: characters of its most frequent n-gram times its count."""
        result = np.zeros(self.n_docs, np.float64)
        starts, h, chars = self._grams(n)
        if len(h) == 0:
            return result
        _, first, inverse, counts = np.unique(
            h, return_index=True, return_inverse=True, return_counts=True
        )
        docs = self.doc[starts[first]]
        # Counter.most_common(1): the highest count, ties to the n-gram seen first
        order = np.lexsort((first, -counts, docs))
        lead = order[np.r_[True, docs[order][1:] != docs[order][:-1]]]
        result[docs[lead]] = counts[lead] * (chars[first[lead]] + n - 1)
        del inverse
        return result

    def dup(self, n: int) -> np.ndarray:
        """Per document: datatrove's ``find_all_duplicate`` (characters in repeated n-grams,
        scanning left to right and jumping over an n-gram once it is counted)."""
        result = np.zeros(self.n_docs, np.float64)
        starts, h, chars = self._grams(n)
        if len(h) == 0:
            return result
        _, first, inverse = np.unique(h, return_index=True, return_inverse=True)
        repeat = first[inverse] < np.arange(len(h))
        if not repeat.any():
            return result
        doc_of = self.doc[starts]
        bounds = np.searchsorted(doc_of, np.arange(self.n_docs + 1))
        for d in np.unique(doc_of[repeat]):
            a, b = bounds[d], bounds[d + 1]
            first_rep = a + int(np.argmax(repeat[a:b]))
            keys = h[a:b].tolist()
            lengths = chars[a:b].tolist()
            i = first_rep - a
            seen = set(keys[:i])
            total = 0
            m = b - a
            while i < m:
                key = keys[i]
                if key in seen:
                    total += lengths[i]
                    i += n
                else:
                    seen.add(key)
                    i += 1
            result[d] = total
        return result


class GopherQuality(FilterStage):
    """Drops documents whose words do not look like prose (datatrove's ``GopherQualityFilter``)."""

    name = "gopher_quality"
    thresholds = frozenset(
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
        }
    )

    class Params(StageParams):
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
        """Stop words (case-sensitive); null: the, be, to, of, and, that, have, with."""

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
        stop = np.array(STOP_WORDS if self.params.stop_words is None else self.params.stop_words)
        stop_ids = (
            W.as_numpy(pc.index_in(flat, pa.array(stop, pa.large_string())))
            if len(stop)
            else np.full(len(flat), np.nan)
        )
        hit = ~np.isnan(stop_ids.astype(np.float64))
        pairs = np.unique(parents[hit] * max(len(stop), 1) + stop_ids[hit].astype(np.int64))
        stop_count = np.bincount(pairs // max(len(stop), 1), minlength=n).astype(np.int64)

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
        # datatrove: a falsy threshold (0, None) turns a rule off
        return first_failure(
            table,
            [],
            [
                ("gopher_word_count", p.min_doc_words or None, "gopher_short_doc", "<"),
                ("gopher_word_count", p.max_doc_words or None, "gopher_long_doc", ">"),
                (
                    "gopher_mean_word_length",
                    p.min_avg_word_length or None,
                    "gopher_below_avg_threshold",
                    "<",
                ),
                (
                    "gopher_mean_word_length",
                    p.max_avg_word_length or None,
                    "gopher_above_avg_threshold",
                    ">",
                ),
                (
                    "gopher_hash_word_ratio",
                    p.max_symbol_word_ratio or None,
                    "gopher_too_many_hashes",
                    ">",
                ),
                (
                    "gopher_ellipsis_word_ratio",
                    p.max_symbol_word_ratio or None,
                    "gopher_too_many_ellipsis",
                    ">",
                ),
                (
                    "gopher_bullet_lines_ratio",
                    p.max_bullet_lines_ratio or None,
                    "gopher_too_many_bullets",
                    ">",
                ),
                (
                    "gopher_ellipsis_lines_ratio",
                    p.max_ellipsis_lines_ratio or None,
                    "gopher_too_many_end_ellipsis",
                    ">",
                ),
                (
                    "gopher_alpha_words_ratio",
                    p.max_non_alpha_words_ratio or None,
                    "gopher_below_alpha_threshold",
                    "<",
                ),
                ("gopher_stop_words", p.min_stop_words or None, "gopher_enough_stop_words", "<"),
            ],
        )
