"""CCNet perplexity: a KenLM n-gram model scores SentencePiece-tokenised, normalised paragraphs.

As cc_net (``cc_net/perplexity.py``, ``text_normalizer.py``): each line is normalised (lowercase,
accents stripped, every digit to ``0``, unicode punctuation mapped to ASCII, control characters
removed), split into SentencePiece pieces joined by spaces, and scored by ``kenlm.Model.score``
(log10, with ``<s>`` and ``</s>``). The document perplexity is
``10 ** (-sum(log10 p) / sum(pieces + 1))`` over its lines (the ``+ 1`` is ``</s>``).

Two deliberate differences from cc_net's ``mine.py``, both as its ``DocLM(normalize=True)`` does:
lines are normalised one at a time (``mine.py`` normalises the whole document before
tokenising, and the normaliser deletes ``\\n`` as a control character, so it scores each
document as one long sentence), and lines that are empty after normalisation are skipped (an
empty line would add a nearly free ``</s>`` and lower the perplexity of documents with many
blank lines). A document with nothing to score gets a null ``ppl`` and is kept.

Decision: ``max_ppl`` drops documents above it (``ppl_too_high``); or ``keep_buckets`` keeps only
the cc_net buckets named (``head`` < ``cutoffs[lang][0]`` <= ``middle`` < ``cutoffs[lang][1]`` <=
``tail``), the others dropped as ``ppl_middle`` / ``ppl_tail`` / ``ppl_head``; a language with no
cutoffs is bucket ``all`` and kept. Both are ``thresholds``: re-tuning them reuses saved ``ppl``.

The SentencePiece model and the KenLM model (binary or ARPA) load lazily, once per worker process,
through module-level caches keyed by path; they are never pickled into the task graph.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import re
import sys
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from refine.errors import ConfigError
from refine.models import load_once, resolve_model
from refine.pipeline.stage import FilterStage, StageParams

# --- cc_net's text_normalizer.normalize, exactly (punct=1), made faster with str.translate --------

#: cc_net's UNICODE_PUNCT table, verbatim.
UNICODE_PUNCT = {
    "，": ",",
    "。": ".",
    "、": ",",
    "„": '"',
    "”": '"',
    "“": '"',
    "«": '"',
    "»": '"',
    "１": '"',
    "」": '"',
    "「": '"',
    "《": '"',
    "》": '"',
    "´": "'",
    "∶": ":",
    "：": ":",
    "？": "?",
    "！": "!",
    "（": "(",
    "）": ")",
    "；": ";",
    "–": "-",
    "—": " - ",
    "．": ". ",
    "～": "~",
    "’": "'",
    "…": "...",
    "━": "-",
    "〈": "<",
    "〉": ">",
    "【": "[",
    "】": "]",
    "％": "%",
    "►": "-",
}
_PUNCT_TABLE = str.maketrans(UNICODE_PUNCT)
_PUNCT_RE = re.compile(f"[{''.join(UNICODE_PUNCT)}]")
#: cc_net's NON_PRINTING_CHARS_RE: code points 0-31 and 127-159 are deleted.
_NON_PRINTING_RE = re.compile(f"[{''.join(map(chr, [*range(32), *range(127, 160)]))}]")
_DIGIT_RE = re.compile(r"\d")
#: Every combining mark (category Mn, cc_net's ``strip_accents`` test) of the Basic Multilingual
#: Plane, as one character class: sre matches it with a bitmap, unlike ``str.translate``'s dict.
_BMP_MARKS_RE = re.compile(
    "[" + "".join(chr(c) for c in range(0x10000) if unicodedata.category(chr(c)) == "Mn") + "]"
)


def normalize_line(line: str) -> str:
    """cc_net ``text_normalizer.normalize(line)`` with its defaults (accent, case, numbers,
    punct=1): the same output for every input (``tests/test_perplexity.py`` compares them),
    about 4x faster (regex passes instead of Python loops per character)."""
    line = line.strip()
    if not line:
        return line
    line = line.lower()
    if not line.isascii():  # ASCII has no marks or unicode punctuation; NFD is the identity
        line = _BMP_MARKS_RE.sub("", unicodedata.normalize("NFD", line))
        if line and max(line) > "\uffff":
            line = line.translate(_astral_marks())
    line = _DIGIT_RE.sub("0", line)
    if not line.isascii() and _PUNCT_RE.search(line):
        line = line.translate(_PUNCT_TABLE)
    return _NON_PRINTING_RE.sub("", line)


@functools.cache
def _astral_marks() -> dict[int, None]:
    """A ``str.translate`` table deleting the combining marks above U+FFFF (rare: built once
    per process, on the first line that has such a character)."""
    category = unicodedata.category
    return {cp: None for cp in range(0x10000, sys.maxunicode + 1) if category(chr(cp)) == "Mn"}


def normalized_lines(text: str | None) -> list[str]:
    """The document's lines (split on ``\\n``), normalised, without the ones left empty."""
    if not text:
        return []
    return [n for n in map(normalize_line, text.split("\n")) if n]


# --- models, once per process ---------------------------------------------------------------------

_kenlm_models: dict[str, Any] = {}
_sp_models: dict[str, Any] = {}

_KENLM_BINARY_MAGIC = b"mmap lm "


def check_kenlm_model(spec: str) -> str:
    """Resolve ``spec`` and check, without loading it, that it is a KenLM binary or ARPA file."""
    path = resolve_model(spec)
    if importlib.util.find_spec("kenlm") is None:
        raise ConfigError(
            f"model {spec!r}: the kenlm module is not installed (pip install kenlm==0.3.0)"
        )
    with open(path, "rb") as f:
        head = f.read(4096)
    if not (head.startswith(_KENLM_BINARY_MAGIC) or head.lstrip().startswith(b"\\data\\")):
        raise ConfigError(f"model {spec!r}: {path} is not a KenLM binary or ARPA file")
    return path


def check_sentencepiece_model(spec: str) -> str:
    """Resolve ``spec`` and load it once (SentencePiece models are small) to prove it is one."""
    path = resolve_model(spec)
    if importlib.util.find_spec("sentencepiece") is None:
        raise ConfigError(f"model {spec!r}: the sentencepiece module is not installed")
    import sentencepiece

    try:
        sentencepiece.SentencePieceProcessor(model_file=path)
    except Exception as e:
        raise ConfigError(f"model {spec!r}: {path} is not a SentencePiece model ({e})") from e
    return path


def _load_kenlm(path: str) -> Any:
    import kenlm

    return kenlm.Model(path)


def _load_sentencepiece(path: str) -> Any:
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=path)


def kenlm_model(spec: str) -> Any:
    """The KenLM model named by ``spec``, loaded once per process (call it in the worker)."""
    return load_once(_kenlm_models, resolve_model(spec), _load_kenlm)


def sentencepiece_model(spec: str) -> Any:
    """The SentencePiece processor named by ``spec``, loaded once per process."""
    return load_once(_sp_models, resolve_model(spec), _load_sentencepiece)


def tokenize_lines(sp: Any, lines: list[str]) -> list[str]:
    """Each (normalised) line as its SentencePiece pieces joined by single spaces, as cc_net."""
    # one call per line: SentencePiece's batch call was ~5% slower on a document's few lines
    # even with num_threads=1 (and 2.5x slower with its thread pool)
    encode = sp.encode_as_pieces
    return [" ".join(encode(line)) for line in lines]


def line_scores(lm: Any, tokenized: list[str]) -> tuple[list[float], list[int]]:
    """log10 probability (with ``<s>``, ``</s>``) and token count (pieces + 1) of each line.
    Plain lists: a document has few lines, and NumPy's per-call cost would dominate."""
    score = lm.score
    return [score(t) for t in tokenized], [len(t.split()) + 1 for t in tokenized]


def perplexity(logp: list[float], lengths: list[int]) -> float:
    """cc_net's ``pp``: ``10 ** (-sum(log10 p) / sum(tokens))``."""
    return 10.0 ** (-sum(logp) / sum(lengths))


# --- the stage ------------------------------------------------------------------------------------

BUCKETS = ("head", "middle", "tail")


class PerplexityParams(StageParams):
    model: str = Field(
        description="KenLM model (binary or ARPA, trained on normalised SentencePiece pieces, e.g. "
        "by `refine train-lm`): local path, pkg://PACKAGE/FILE or hf://OWNER/REPO/FILE"
    )
    sp_model: str = Field(
        description="SentencePiece model the KenLM model was trained with (path or hub spec)"
    )
    max_ppl: float | None = Field(
        default=None, gt=0, description="drop documents whose perplexity is above this"
    )
    keep_buckets: list[str] | None = Field(
        default=None,
        description="keep only these cc_net buckets (head, middle, tail) by per-language cutoffs",
    )
    cutoffs: dict[str, tuple[float, float]] | None = Field(
        default=None,
        description="language -> [head/middle, middle/tail] perplexity cutoffs for keep_buckets",
    )
    cutoff_csv: str | None = Field(
        default=None,
        description="cc_net cutoff.csv (rows: percentiles 0-100, columns: languages) instead of "
        "cutoffs; with percentile_head and percentile_tail",
    )
    percentile_head: int = Field(default=30, ge=0, le=100)
    percentile_tail: int = Field(default=60, ge=0, le=100)
    language: str = Field(
        default="en",
        description="language of the cutoffs for documents without a `language` column",
    )
    languages: list[str] | None = Field(
        default=None,
        description="score only documents whose `language` is in this list (others: null ppl, "
        "kept); null: score every document",
    )
    paragraph_ppl: bool = Field(
        default=False, description="also write `ppl_paragraphs`: the perplexity of each line"
    )

    @model_validator(mode="after")
    def _consistent(self) -> PerplexityParams:
        if self.keep_buckets is not None:
            bad = sorted(set(self.keep_buckets) - set(BUCKETS))
            if bad:
                raise ValueError(f"keep_buckets: unknown bucket(s) {bad}; use {list(BUCKETS)}")
            if self.cutoffs is None and self.cutoff_csv is None:
                raise ValueError("keep_buckets needs cutoffs or cutoff_csv")
        if self.percentile_head > self.percentile_tail:
            raise ValueError("percentile_head must not be above percentile_tail")
        return self


class PerplexityFilter(FilterStage):
    """CCNet perplexity of a KenLM model (ppl); drops above max_ppl or keeps cc_net buckets.

    Lower ``ppl`` means more like the model's training text (cc_net: Wikipedia). Drop reasons:
    ``ppl_too_high``; with ``keep_buckets``, ``ppl_head`` / ``ppl_middle`` / ``ppl_tail``."""

    name = "perplexity"
    path_params = ("cutoff_csv",)
    libraries = ("kenlm", "sentencepiece")
    Params = PerplexityParams
    model_params = ("model", "sp_model")
    thresholds = frozenset(
        {"max_ppl", "keep_buckets", "cutoffs", "cutoff_csv", "percentile_head", "percentile_tail"}
    )

    def check(self) -> None:
        check_sentencepiece_model(self.params.sp_model)
        check_kenlm_model(self.params.model)
        self._cutoffs()

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["ppl", "ppl_paragraphs"] if self.params.paragraph_ppl else ["ppl"]

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        sp = sentencepiece_model(self.params.sp_model)
        lm = kenlm_model(self.params.model)
        texts = table["text"].to_pylist() if "text" in table.column_names else []
        wanted = self._wanted_rows(table)
        ppl = np.full(table.num_rows, np.nan)
        paragraphs: list[list[float] | None] = [None] * table.num_rows
        for i, text in enumerate(texts):
            if not wanted[i]:
                continue
            tokenized = tokenize_lines(sp, normalized_lines(text))
            if not tokenized:
                continue
            logp, lengths = line_scores(lm, tokenized)
            ppl[i] = perplexity(logp, lengths)
            if self.params.paragraph_ppl:
                paragraphs[i] = [10.0 ** (-lp / n) for lp, n in zip(logp, lengths, strict=True)]
        out = {"ppl": pa.array(ppl, pa.float64(), mask=np.isnan(ppl))}
        if self.params.paragraph_ppl:
            out["ppl_paragraphs"] = pa.array(paragraphs, pa.list_(pa.float32()))
        return out

    def decide(self, table: pa.Table) -> pa.Array:
        ppl = table["ppl"]
        n = table.num_rows
        reasons = pa.nulls(n, pa.string())
        if self.params.max_ppl is not None:
            too_high = pc.fill_null(pc.greater(ppl, self.params.max_ppl), False)
            reasons = pc.if_else(too_high, "ppl_too_high", reasons)
        if self.params.keep_buckets is not None:
            bucket = self.buckets(table)
            keep = pc.or_(
                pc.is_in(bucket, value_set=pa.array(["all", *self.params.keep_buckets])),
                pc.is_null(bucket),
            )
            dropped = pc.binary_join_element_wise("ppl_", bucket, "")
            reasons = pc.if_else(pc.and_(pc.is_null(reasons), pc.invert(keep)), dropped, reasons)
        return reasons

    def buckets(self, table: pa.Table) -> pa.Array:
        """cc_net's ``PerplexityBucket``: head / middle / tail by the document's language
        cutoffs, ``all`` for a language without cutoffs, null where ``ppl`` is null."""
        cutoffs = self._cutoffs()
        langs = self._languages(table).to_pylist()
        ppl = table["ppl"].to_pylist()
        out: list[str | None] = []
        for lang, p in zip(langs, ppl, strict=True):
            if p is None:
                out.append(None)
            elif lang not in cutoffs:
                out.append("all")
            else:
                head, tail = cutoffs[lang]
                out.append("head" if p < head else "middle" if p < tail else "tail")
        return pa.array(out, pa.string())

    def _languages(self, table: pa.Table) -> pa.Array:
        if "language" in table.column_names:
            return pc.fill_null(table["language"], self.params.language)
        return pa.array([self.params.language] * table.num_rows, pa.string())

    def _wanted_rows(self, table: pa.Table) -> list[bool]:
        if not self.params.languages or "language" not in table.column_names:
            return [True] * table.num_rows
        wanted = pc.is_in(table["language"], value_set=pa.array(self.params.languages))
        return pc.fill_null(wanted, False).to_pylist()

    def _cutoffs(self) -> dict[str, tuple[float, float]]:
        if self.params.cutoffs is not None:
            return dict(self.params.cutoffs)
        if self.params.cutoff_csv is None:
            return {}
        return read_cutoff_csv(
            self.params.cutoff_csv, self.params.percentile_head, self.params.percentile_tail
        )


_cutoff_cache: dict[tuple[str, int, int], dict[str, tuple[float, float]]] = {}


def read_cutoff_csv(path: str, head: int, tail: int) -> dict[str, tuple[float, float]]:
    """cc_net's ``cutoff.csv``: first column the percentile (0-100), one column per language."""
    key = (path, head, tail)
    if key in _cutoff_cache:
        return _cutoff_cache[key]
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"cutoff_csv {path!r}: file not found")
    try:
        with open(file, newline="") as f:
            rows = list(csv.reader(f))
        langs = rows[0][1:]
        by_pct = {int(float(r[0])): r[1:] for r in rows[1:] if r}
        cutoffs = {
            lang: (float(by_pct[head][j]), float(by_pct[tail][j])) for j, lang in enumerate(langs)
        }
    except (KeyError, IndexError, ValueError) as e:
        raise ConfigError(
            f"cutoff_csv {path!r}: expected rows 0-100 (percentiles) and one column per "
            f"language, with percentiles {head} and {tail} ({type(e).__name__}: {e})"
        ) from e
    _cutoff_cache[key] = cutoffs
    return cutoffs
