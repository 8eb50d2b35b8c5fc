"""FineWeb's own line-based quality rules (datatrove 0.10.1's ``FineWebQualityFilter``)."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refine.filters import words as W
from refine.filters.gopher import TERMINAL_PUNCTUATION, first_failure, language_flags, limit
from refine.filters.languages import LanguageGroups, LanguageParams, PerLanguageStage
from refine.pipeline.stage import FilterStage


class FineWebQuality(PerLanguageStage, FilterStage):
    """Drops list-like, unpunctuated or line-duplicated documents, as FineWeb did; with
    ``languages``, by each document's language's thresholds (FineWeb-2's ``line_punct_thr`` and
    ``new_line_ratio``)."""

    name = "fineweb"
    thresholds = frozenset(
        {
            "line_punct_thr",
            "line_punct_exclude_zero",
            "short_line_thr",
            "char_duplicates_ratio",
            "new_line_ratio",
            "languages",
            "unknown_language",
        }
    )

    class Params(LanguageParams):
        per_language: ClassVar[frozenset[str]] = frozenset(
            {
                "line_punct_thr",
                "line_punct_exclude_zero",
                "short_line_thr",
                "char_duplicates_ratio",
                "new_line_ratio",
            }
        )

        line_punct_thr: float = 0.12
        """Min share of non-blank lines ending with a stop character."""
        line_punct_exclude_zero: bool = False
        """Keep documents where no line ends with a stop character (share exactly 0)."""
        stop_chars: tuple[str, ...] | None = None
        """Line-ending characters that count as punctuation; null: datatrove's terminal marks."""
        short_line_thr: float = 0.67
        """Max share of non-blank lines no longer than ``short_line_length``."""
        short_line_length: int = 30
        """A line this long or shorter (characters) is short."""
        char_duplicates_ratio: float = 0.01
        """Max share of characters (newlines excluded) in lines repeating an earlier line."""
        new_line_ratio: float = 0.3
        """Max newlines per word."""

    SIGNALS = (
        "fineweb_lines",
        "fineweb_line_punct_ratio",
        "fineweb_short_line_ratio",
        "fineweb_char_dup_ratio",
        "fineweb_list_ratio",
    )

    def signal_names(self, table: pa.Table | None = None) -> list[str]:
        return list(self.SIGNALS)

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        n = table.num_rows
        text = W.texts(table)
        lines, parents = W.flat_with_parents(pc.split_pattern(text, "\n"))
        nonblank = W.as_numpy(pc.match_substring_regex(lines, f"[^{W.WS}]")).astype(bool)
        lines = lines.filter(pa.array(nonblank))
        parents = parents[nonblank]
        n_lines = np.bincount(parents, minlength=n)
        stops = tuple(TERMINAL_PUNCTUATION) if p.stop_chars is None else p.stop_chars
        if all(len(s) == 1 for s in stops):
            last = pc.utf8_slice_codeunits(lines, -1)
            ends = pc.is_in(last, pa.array(list(stops), pa.large_string()))
        else:
            ends = pa.array(np.zeros(len(lines), bool))
            for s in stops:
                ends = pc.or_(ends, pc.ends_with(lines, s))
        punct = W.per_row_sum(ends, parents, n)
        short = W.per_row_sum(pc.less_equal(pc.utf8_length(lines), p.short_line_length), parents, n)
        _, dup_chars = W.duplicate_counts(lines, parents, n)
        newlines = W.as_numpy(pc.count_substring(text, "\n"))
        chars = W.as_numpy(pc.utf8_length(text)) - newlines
        words = W.combine(W.words_of(table))
        n_words = W.as_numpy(pc.list_value_length(words))
        return {
            "fineweb_lines": pa.array(n_lines, pa.int64()),
            "fineweb_line_punct_ratio": pa.array(W.ratio(punct, n_lines), from_pandas=True),
            "fineweb_short_line_ratio": pa.array(W.ratio(short, n_lines), from_pandas=True),
            "fineweb_char_dup_ratio": pa.array(W.ratio(dup_chars, chars), from_pandas=True),
            "fineweb_list_ratio": pa.array(W.ratio(newlines, n_words), from_pandas=True),
            W.WORDS_COLUMN: words,
        }

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        groups = LanguageGroups(table, p)

        def t(name: str):
            return limit(groups, p, lambda s: getattr(s, name))

        empty = W.as_numpy(table["fineweb_lines"]) == 0
        punct = W.as_numpy(table["fineweb_line_punct_ratio"]).astype(np.float64)
        exclude_zero = np.asarray(t("line_punct_exclude_zero")) == 1
        with np.errstate(invalid="ignore"):
            low_punct = (punct < t("line_punct_thr")) & ~((punct == 0) & exclude_zero)
        return first_failure(
            table,
            [*language_flags(groups), (empty, "empty"), (low_punct, "line_punct_ratio")],
            [
                ("fineweb_short_line_ratio", t("short_line_thr"), "short_line_ratio", ">"),
                ("fineweb_char_dup_ratio", t("char_duplicates_ratio"), "char_dup_ratio", ">"),
                ("fineweb_list_ratio", t("new_line_ratio"), "list_ratio", ">"),
            ],
        )
