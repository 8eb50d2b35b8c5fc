"""C4's line and document rules (Raffel et al. 2020), as datatrove 0.10.1's ``C4QualityFilter``.

Unlike the other heuristics this stage also rewrites ``text``: a kept document keeps only its
lines that pass the line rules (terminal punctuation, at least ``min_words_per_line`` words, no
"javascript", no cookie/terms-of-use phrase, no word over ``max_word_length`` characters), with
Wikipedia-style citations removed. The base class does the bookkeeping on the scored table; this
stage then swaps in the rewritten text (``process``) and refreshes the shared ``_words`` column
from the words of the kept lines, which it has anyway for the sentence count.

With ``filter_badwords`` the stage also applies the paper's bad-words rule, as datatrove's separate
``C4BadWordsFilter`` placed right after ``C4QualityFilter`` does: a document whose kept lines
contain an entry of its language's LDNOOBW list is dropped (``document_removed_with_badwords``),
except a ``badwords_keep_fraction`` of them. The language is the ``language`` column's (null or
absent: ``badwords_default_language``); a language without a list is kept (datatrove's
``fail_on_missing_language=False``). The lists ship in ``assets/ldnoobw`` (no download); see
``refine.filters.badwords`` for how matching follows datatrove's. The kept share is drawn per
document from a hash of ``badwords_seed`` and its id, not from a random stream as datatrove does,
so it does not depend on partitioning, order or resume; both are re-tunable on the saved
``c4_badwords`` signal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refine.errors import ConfigError
from refine.filters import badwords as BW
from refine.filters import words as W
from refine.filters.gopher import language_flags, limit
from refine.filters.languages import (
    LanguageGroups,
    LanguageParams,
    PerLanguageStage,
    language_settings,
)
from refine.pipeline.stage import FilterStage, StageResult, text_bytes

CITATION = r"\[\d*\]|\[edit\]|\[citation needed\]"
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
#: spaCy's Sentencizer.default_punct_chars: a token among these ends a sentence.
SENTENCE_PUNCT = frozenset(
    "!.?։؟۔܀܁܂߹।॥၊။።፧፨᙮᜵᜶᠃᠉᥄᥅᪨᪩᪪᪫᭚᭛᭞᭟᰻᰼᱾᱿‼‽⁇⁈⁉⸮⸼꓿꘎꘏꛳꛷꡶꡷꣎꣏꤯꧈꧉꩝꩞꩟꫰꫱꯫﹒﹖﹗！．？𐩖𐩗𑁇𑁈𑂾𑂿𑃀𑃁𑅁𑅂𑅃𑇅𑇆𑇍𑇞𑇟𑈸𑈹𑈻𑈼𑊩"
    "𑑋𑑌𑗂𑗃𑗉𑗊𑗋𑗌𑗍𑗎𑗏𑗐𑗑𑗒𑗓𑗔𑗕𑗖𑗗𑙁𑙂𑜼𑜽𑜾𑩂𑩃𑪛𑪜𑱁𑱂𖩮𖩯𖫵𖬷𖬸𖭄𛲟𝪈｡。"
)
NEW_TEXT = "_c4_text"


class C4Quality(PerLanguageStage, FilterStage):
    """C4's heuristics: drops documents, and drops lines from the documents it keeps."""

    name = "c4"

    class Params(LanguageParams):
        #: with ``languages``: the document rules' thresholds (FineWeb-2 sets none of them)
        per_language: ClassVar[frozenset[str]] = frozenset(
            {"min_num_sentences", "badwords_keep_fraction"}
        )

        remove_citations: bool = True
        """Remove Wikipedia-style citations such as [1], [edit], [citation needed]."""
        filter_no_terminal_punct: bool = True
        """Drop lines that do not end with . ? ! " ' (or that end with '...')."""
        min_num_sentences: int = 5
        """Drop documents with fewer sentences in their kept lines (-1: off)."""
        min_words_per_line: int = 3
        """Drop lines with fewer whitespace-separated words (-1: off)."""
        max_word_length: int = 1000
        """Drop lines with a word longer than this, in characters (-1: off)."""
        filter_lorem_ipsum: bool = True
        """Drop documents with 'lorem ipsum' in a line that got that far."""
        filter_javascript: bool = True
        """Drop lines mentioning 'javascript'."""
        filter_curly_bracket: bool = True
        """Drop documents with '{' in a line that got that far."""
        filter_policy: bool = True
        """Drop lines with a cookie / terms-of-use / privacy-policy phrase."""
        filter_badwords: bool = False
        """Drop documents whose kept lines contain a word of their language's LDNOOBW list
        (datatrove's ``C4BadWordsFilter``, a separate filter there, so off by default)."""
        badwords_keep_fraction: float = Field(default=0.0, ge=0, le=1)
        """Share of the documents with bad words that are kept anyway (0: drop them all)."""
        badwords_seed: int = 0
        """Seed of the per-document draws that pick the documents ``badwords_keep_fraction``
        keeps."""
        badwords_default_language: str = "en"
        """List used for documents without a ``language`` column (or with a null one)."""
        badwords_lists: dict[str, str] = Field(default_factory=dict)
        """language -> file (one entry per line) replacing or adding to the shipped lists."""

    thresholds = frozenset(
        {
            "min_num_sentences",
            "badwords_keep_fraction",
            "badwords_seed",
            "languages",
            "unknown_language",
        }
    )
    SIGNALS = ("c4_lorem_ipsum_line", "c4_curly_bracket_line", "c4_num_sentences", "c4_kept_lines")

    def check(self) -> None:
        for lang, path in self.params.badwords_lists.items():
            if not Path(path).expanduser().is_file():
                raise ConfigError(f"c4.badwords_lists.{lang}: file not found: {path}")

    def signal_names(self, table: pa.Table | None = None) -> list[str]:
        return [*self.SIGNALS, "c4_badwords"] if self.params.filter_badwords else list(self.SIGNALS)

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        n = table.num_rows
        lines, _ = W.splitlines(W.texts(table))
        flat, parents = W.flat_with_parents(lines)
        offsets = W.as_numpy(lines.offsets)
        index_in_doc = np.arange(len(flat)) - offsets[parents] if len(flat) else parents
        stripped = W.strip(flat)
        n_words = W.as_numpy(pc.count_substring_regex(stripped, f"[^{W.WS}]+"))
        ok = np.ones(len(flat), bool)
        if p.max_word_length != -1:
            long = np.flatnonzero(W.as_numpy(pc.utf8_length(stripped)) > p.max_word_length)
            for i in long.tolist():
                if any(len(w) > p.max_word_length for w in stripped[i].as_py().split()):
                    ok[i] = False
        line = (
            pc.replace_substring_regex(stripped, CITATION, "") if p.remove_citations else stripped
        )
        if p.filter_no_terminal_punct:
            ends = np.zeros(len(flat), bool)
            for mark in END_PUNCTUATION:
                ends |= W.as_numpy(pc.ends_with(line, mark)).astype(bool)
            ends &= ~W.as_numpy(pc.ends_with(line, ELLIPSIS)).astype(bool)
            ok &= ends
        ok &= n_words >= p.min_words_per_line
        lower = pc.utf8_lower(line)

        def has(arr, pattern: str) -> np.ndarray:
            return W.as_numpy(pc.match_substring(arr, pattern)).astype(bool)

        lorem = ok & has(lower, "lorem ipsum") if p.filter_lorem_ipsum else np.zeros_like(ok)
        ok &= ~lorem
        if p.filter_javascript:
            ok &= ~has(lower, "javascript")
        curly = ok & has(line, "{") if p.filter_curly_bracket else np.zeros_like(ok)
        ok &= ~curly
        if p.filter_policy:
            pattern = "|".join(POLICY_SUBSTRINGS)
            ok &= ~W.as_numpy(pc.match_substring_regex(lower, pattern)).astype(bool)

        kept = line.filter(pa.array(ok))
        kept_parents = parents[ok]
        kept_words = W.split_texts(kept.to_pylist())
        sentences = _sentence_counts(kept_words) if self._counts_sentences() else None
        n_sentences = (
            np.bincount(kept_parents, weights=sentences, minlength=n).astype(np.int64)
            if sentences is not None
            else np.zeros(n, np.int64)
        )
        new_text = _join_lines(kept, kept_parents, n)
        out = {
            "c4_lorem_ipsum_line": _first_line(lorem, parents, index_in_doc, n),
            "c4_curly_bracket_line": _first_line(curly, parents, index_in_doc, n),
            "c4_num_sentences": pa.array(n_sentences, pa.int64()),
            "c4_kept_lines": pa.array(np.bincount(kept_parents, minlength=n), pa.int64()),
            NEW_TEXT: new_text,
            W.WORDS_COLUMN: _concat_rows(kept_words, kept_parents, n),
        }
        if p.filter_badwords:
            out["c4_badwords"] = self._badwords(table, new_text)
        return out

    def _counts_sentences(self) -> bool:
        """Whether any document's ``min_num_sentences`` (its language's, or the stage's) is on."""
        p = self.params
        if p.languages is None:
            return p.min_num_sentences != -1
        return any(s.min_num_sentences != -1 for s in [p, *language_settings(p).values()])

    def _badwords(self, table: pa.Table, text: pa.Array) -> pa.Array:
        """Per document: bad-word occurrences in ``text`` (its kept lines); null when its
        language has no list."""
        p = self.params
        n = table.num_rows
        if "language" in table.column_names:
            languages = W.combine(
                pc.fill_null(table["language"].cast(pa.string()), p.badwords_default_language)
            )
        else:
            languages = pa.array([p.badwords_default_language] * n, pa.string())
        counts = np.full(n, np.nan)
        for lang in pc.unique(languages).to_pylist():
            path = BW.list_path(lang, p.badwords_lists)
            pattern = None if path is None else BW.c4_pattern(str(path), lang in BW.UNSPACED)
            rows = np.flatnonzero(W.as_numpy(pc.equal(languages, lang)).astype(bool))
            if path is None:
                continue
            if pattern is None:  # an empty list finds nothing
                counts[rows] = 0
                continue
            sub = pc.utf8_lower(text.take(pa.array(rows)))
            if lang not in BW.UNSPACED:
                sub = BW.double_separators(sub)
            counts[rows] = W.as_numpy(pc.count_substring_regex(sub, pattern))
        return pa.array(counts, pa.int64(), from_pandas=True)

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        groups = LanguageGroups(table, p)
        lorem = _line_or_inf(table["c4_lorem_ipsum_line"])
        curly = _line_or_inf(table["c4_curly_bracket_line"])
        reasons = np.full(table.num_rows, None, dtype=object)
        for mask, reason in language_flags(groups):
            reasons[mask] = reason
        undecided = reasons == None  # noqa: E711
        reasons[undecided & np.isfinite(curly) & (curly < lorem)] = "curly_bracket"
        reasons[undecided & np.isfinite(lorem) & (lorem <= curly)] = "lorem_ipsum"
        with np.errstate(invalid="ignore"):
            few = W.as_numpy(table["c4_num_sentences"]) < limit(
                groups, p, lambda s: s.min_num_sentences
            )
        reasons[(reasons == None) & few] = "too_few_sentences"  # noqa: E711
        if p.filter_badwords:
            found = W.as_numpy(pc.fill_null(table["c4_badwords"], 0)) > 0
            keep_fraction = np.broadcast_to(
                np.nan_to_num(limit(groups, p, lambda s: s.badwords_keep_fraction)),
                (table.num_rows,),
            )
            if (keep_fraction > 0).any():
                rows = np.flatnonzero(found)
                ids = table["id"].take(pa.array(rows)).to_pylist()
                draws = np.array([_uniform(p.badwords_seed, i) for i in ids], np.float64)
                found[rows[draws < keep_fraction[rows]]] = False
            reasons[(reasons == None) & found] = "document_removed_with_badwords"  # noqa: E711
        return pa.array(reasons, pa.string())

    def process(self, table: pa.Table, previous: pa.Table | None = None) -> StageResult:
        result = super().process(table, previous)
        out = result.table
        if NEW_TEXT not in out.column_names:  # signals reused from a previous run: no scratch
            scored = self.score(out)
            out = _set(out, W.WORDS_COLUMN, scored[W.WORDS_COLUMN])
            out = out.append_column(NEW_TEXT, scored[NEW_TEXT])
        new_text = out[NEW_TEXT]
        out = out.drop_columns([NEW_TEXT])
        out = out.set_column(
            out.column_names.index("text"), "text", new_text.cast(out["text"].type)
        )
        result.table = out
        result.stats.bytes_out = text_bytes(out)
        return result


def _uniform(seed: int, doc_id: str | None) -> float:
    """A draw in [0, 1) fixed by the seed and the document id."""
    key = f"{seed}\x00{doc_id}".encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") / 2.0**64


def _offsets(parents: np.ndarray, n: int) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(np.bincount(parents, minlength=n))]), pa.int32())


def _join_lines(lines: pa.Array, parents: np.ndarray, n: int) -> pa.Array:
    """``"\\n".join(kept_lines).strip()`` per document."""
    per_doc = pa.ListArray.from_arrays(_offsets(parents, n), lines.cast(pa.large_string()))
    return W.strip(pc.binary_join(per_doc, pa.scalar("\n", pa.large_string())))


def _concat_rows(lists: pa.ListArray, parents: np.ndarray, n: int) -> pa.ListArray:
    """Concatenate consecutive list rows (one per kept line) into one row per document."""
    line_offsets = W.as_numpy(lists.offsets)
    doc_offsets = W.as_numpy(_offsets(parents, n))
    return pa.ListArray.from_arrays(
        pa.array(line_offsets[doc_offsets], pa.int32()), pc.list_flatten(lists)
    )


def _first_line(mask: np.ndarray, parents: np.ndarray, index: np.ndarray, n: int) -> pa.Array:
    """Per document: the index of its first line where ``mask`` holds, else null."""
    first = np.full(n, -1, np.int64)
    hits = np.flatnonzero(mask)[::-1]  # reversed, so the earliest line is written last
    first[parents[hits]] = index[hits]
    return pa.array(first, pa.int64(), mask=first < 0)


def _line_or_inf(column) -> np.ndarray:
    missing = W.as_numpy(pc.is_null(column)).astype(bool)
    return np.where(missing, np.inf, W.as_numpy(pc.fill_null(column, 0)).astype(np.float64))


def _sentence_counts(tokens: pa.ListArray) -> np.ndarray:
    """Sentences per row as spaCy's Sentencizer counts them on these tokens.

    A new sentence starts at a token that is not punctuation when a sentence-final mark
    (``SENTENCE_PUNCT``) came after the previous such token; a row with tokens has at least one.
    """
    flat, parents = W.flat_with_parents(tokens)
    rows = len(tokens)
    if len(flat) == 0:
        return np.zeros(rows, np.float64)
    final = W.as_numpy(pc.is_in(flat, pa.array(sorted(SENTENCE_PUNCT), pa.large_string())))
    final = final.astype(bool)
    punct = W.as_numpy(pc.match_substring_regex(flat, r"\A\pP+\z")).astype(bool)
    word = ~punct & ~final
    before = np.concatenate([[0], np.cumsum(final)])  # finals before each token
    starts = W.as_numpy(tokens.offsets)[:-1]
    idx = np.flatnonzero(word)
    row = parents[idx]
    prev = np.empty(len(idx), np.int64)
    prev[1:] = before[idx[:-1] + 1] if len(idx) > 1 else prev[1:]
    first_in_row = np.ones(len(idx), bool)
    first_in_row[1:] = row[1:] != row[:-1]
    prev[first_in_row] = before[starts[row[first_in_row]]]
    new = before[idx] > prev
    counts = np.bincount(row[new], minlength=rows).astype(np.float64)
    has_tokens = W.as_numpy(pc.list_value_length(tokens)) > 0
    return counts + has_tokens


def _set(table: pa.Table, name: str, values) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
