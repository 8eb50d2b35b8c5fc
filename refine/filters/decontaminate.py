"""Benchmark decontamination: drop (or cut) documents that contain n-grams of evaluation sets.

As GPT-3 / lm-eval-harness (13-gram overlap) and datatrove's ``NGramsDecontFilter``, with the
index built once on the driver and matching vectorised over a whole partition.

**Words.** A text is lower-cased and stripped of punctuation and symbols (Unicode ``\\p{P}`` and
``\\p{S}``: ``don't`` -> ``dont``, ``3.14`` -> ``314``; numbers are kept), then split on white space
(any: a line break is a space). The n-grams are runs of ``ngram`` consecutive words, so a planted
passage is found whatever its case, punctuation or line breaks. Text in a script written without
spaces (Chinese, Japanese, Thai...) is segmented into words first (``refine.pipeline.segment``):
a document by its ``language`` column (else its characters), a benchmark text by its characters,
with the same segmenters, so a Chinese item's n-grams are words as in the documents.

**Items.** Each benchmark record is an item (its ``id_field`` value, else its row number). Its
texts are the string values of ``fields`` (default: every string field, strings inside lists such as
``choices`` and inside nested objects; never ``id_field``); each text is matched on its own (no
n-gram spans two fields or two choices). A text of at least ``ngram`` words gives all its n-grams;
a shorter one with at least ``min_item_words`` words is matched *whole*: its full word sequence is
one shorter n-gram (a 9-word question is found when those 9 words appear in a row); texts shorter
than ``min_item_words`` (answer letters, one-word choices, subject names) are not matched.

**Hashing.** Each distinct word is hashed once per batch (xxh3_64 of its UTF-8); an n-gram of words
``w_0..w_{k-1}`` is the polynomial ``sum w_j P^(k-1-j) mod 2^64`` (prefix sums, so every window of
every document is a few NumPy operations) mixed with ``k`` through splitmix64's finaliser. Index and
documents go through the same functions.

**Index.** ``hashes`` (uint64, sorted, unique) with ``refs`` (uint32: the item of the first text
that has the n-gram), plus per item its benchmark and id: 12 bytes per n-gram (10^7 n-grams:
~120 MB) and a bitset of ~1 byte per n-gram built on load that rejects most document n-grams before
the binary search. It is an ``.npz`` in the run's ``OUT/decontaminate/`` (which the workers see;
``refine plan`` and stages built outside a run use ``$REFINE_CACHE/decontaminate``, default
``~/.cache/refine/decontaminate``), named by a hash of the benchmark files' identities (content for
local files, size/etag/revision for remote ones) and the params that shape it, written atomically
on the driver when the pipeline is built; workers load it once per process. Its name enters the
stage fingerprint, so a changed benchmark file recomputes the stage.

**Decision.** Signals: ``decont_hits`` (matched n-gram positions), ``decont_benchmark`` /
``decont_item`` (the item with most matched n-grams), ``decont_cut_words`` (words ``cut`` removes:
each match plus ``cut_margin`` words either side) and ``decont_words`` (normalised words in the
document). A document with more than ``max_hits`` hits is ``contaminated`` (``action: drop``); with
``action: cut`` the matched spans are removed from its text and it is dropped only when fewer than
``min_words_after_cut`` words remain (``contaminated_too_short_after_cut``). ``action``,
``max_hits`` and ``min_words_after_cut`` are thresholds: re-tuning them reuses the saved signals.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator

from refine.errors import ConfigError, RefineError
from refine.pipeline import segment
from refine.pipeline.segment import LANGUAGE_COLUMN
from refine.pipeline.stage import FilterStage, StageParams, StageResult, text_bytes

#: Bump when the index layout or the hashing changes: old cache files are then not used.
INDEX_VERSION = 2
#: Unicode punctuation and symbols, removed before splitting into words (RE2 syntax).
PUNCT_RE = r"[\p{P}\p{S}]+"
#: Multiplier of the n-gram polynomial (odd, so invertible mod 2^64) and its inverse.
_P = 0x9E3779B97F4A7C15
_Q = pow(_P, -1, 1 << 64)
#: Words per chunk of documents hashed together: bounds the arrays' memory per partition.
_CHUNK_WORDS = 1 << 20
#: Bits per index n-gram in the bitset pre-filter (false positive rate about 1 - e^(-1/8) = 12%).
_BITSET_LOAD = 8

_U64 = np.uint64


class BenchmarkSpec(BaseModel):
    """One evaluation set: a file (or glob) of records."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(
        description="local path or glob, https:// or hf://datasets/ORG/NAME[@rev]/FILE; JSONL "
        "(.jsonl, .jsonl.gz, .jsonl.zst, .json.gz) or Parquet"
    )
    fields: list[str] | None = Field(
        default=None,
        description="fields holding the item's text (default: every string field, and strings in "
        "lists such as choices)",
    )
    name: str | None = Field(default=None, description="benchmark name (default: the file name)")
    id_field: str | None = Field(
        default=None, description="field with the item id (default: the row number in the file)"
    )

    @field_validator("path")
    @classmethod
    def _absolute(cls, v: str) -> str:
        # made absolute on the driver: workers (which may rebuild a missing index) run elsewhere
        if "://" in v or os.path.isabs(v):
            return v
        return os.path.abspath(os.path.expanduser(v))


class DecontaminateParams(StageParams):
    benchmarks: list[BenchmarkSpec] = Field(
        min_length=1, description="evaluation sets: {path, fields?, name?, id_field?}"
    )
    ngram: int = Field(default=13, ge=2, le=64, description="n-gram length in words")
    min_item_words: int = Field(
        default=8,
        ge=1,
        description="item texts shorter than ngram but with at least this many words are matched "
        "whole; shorter ones are not matched",
    )
    action: Literal["drop", "cut"] = Field(
        default="drop",
        description="drop contaminated documents, or cut the matched spans out of them",
    )
    max_hits: int = Field(
        default=0,
        ge=0,
        description="a document with more matched n-grams than this is contaminated",
    )
    cut_margin: int = Field(
        default=30, ge=0, description="cut: words removed on each side of a matched n-gram"
    )
    min_words_after_cut: int = Field(
        default=50, ge=0, description="cut: drop the document if fewer words remain"
    )


class Decontaminate(FilterStage):
    """Drops or cuts documents that share n-grams with evaluation sets (``decont_*`` signals)."""

    name = "decontaminate"
    Params = DecontaminateParams
    rewrites_text = True
    thresholds = frozenset({"action", "max_hits", "min_words_after_cut"})
    libraries = ("xxhash",)

    def __init__(self, params: StageParams | None = None):
        super().__init__(params)
        self._index_file: str | None = None  # absolute path, set on the driver; travels pickled
        self._index_dir: str | None = None  # OUT/decontaminate once the run's output is known

    def bind_output(self, root: str | os.PathLike) -> None:
        """Keep the index in the run's output folder (``OUT/decontaminate/``), which every
        worker sees (README: OUT is on storage the driver and the workers share), instead of
        this machine's cache."""
        self._index_dir = str(Path(root).absolute() / "decontaminate")
        self._index_file = None

    # -- build time (driver) ---------------------------------------------------------------------
    def check(self) -> None:
        segment.check_available()
        self.index_file()

    def index_file(self) -> str:
        """The index's file, built now if it is not in the cache (``ConfigError`` on bad input)."""
        if self._index_file is None:
            self._index_file = build_index(self.params, self._index_dir)
        return self._index_file

    def model_files(self) -> dict[str, str]:
        # the cache file is named by the benchmark files' identities and the shaping params
        return {"benchmarks": Path(self.index_file()).stem}

    # -- worker ----------------------------------------------------------------------------------
    def _index(self) -> BenchmarkIndex:
        path = self.index_file()
        if not os.path.exists(path):  # a worker that does not see it: rebuild into its cache
            self._index_file, self._index_dir = None, None
            path = self.index_file()
        return load_index(path)

    def signal_names(self, table: pa.Table) -> list[str]:
        return list(SIGNALS)

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        p = self.params
        index = self._index()
        words = normalised_words(table["text"], _languages(table))
        m = index.match(words, p.cut_margin)
        bench, item = index.describe(m.best_ref)
        return {
            "decont_hits": pa.array(m.hits, pa.int32()),
            "decont_benchmark": bench,
            "decont_item": item,
            "decont_cut_words": pa.array(m.cut_words, pa.int32()),
            "decont_words": pa.array(m.words, pa.int32()),
        }

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        contaminated = pc.greater(pc.fill_null(table["decont_hits"], 0), p.max_hits)
        if p.action == "drop":
            return pc.if_else(contaminated, "contaminated", pa.scalar(None, pa.string()))
        left = pc.subtract(table["decont_words"], table["decont_cut_words"])
        short = pc.and_(contaminated, pc.less(left, p.min_words_after_cut))
        return pc.if_else(short, "contaminated_too_short_after_cut", pa.scalar(None, pa.string()))

    def process(self, table: pa.Table, previous: pa.Table | None = None) -> StageResult:
        res = super().process(table, previous)
        out, stats = res.table, res.stats
        p = self.params
        hits = out["decont_hits"].to_numpy(zero_copy_only=False) if out.num_rows else np.zeros(0)
        over = np.flatnonzero(hits > p.max_hits)
        contaminated = res.log.filter(
            pc.greater(pc.fill_null(res.log["decont_hits"], 0), p.max_hits)
        )
        stats.counters["docs_contaminated"] += contaminated.num_rows
        for name, n in _counts(contaminated["decont_benchmark"]):
            stats.counters[f"benchmark:{name}"] += n
        if p.action == "cut" and len(over):
            texts = out["text"].combine_chunks().take(pa.array(over))
            languages = _languages(out)
            if languages is not None:
                languages = languages.take(pa.array(over))
            new, cut = cut_texts(self._index(), texts, p.cut_margin, languages)
            values = out["text"].combine_chunks().to_pylist()
            for j, row in enumerate(over.tolist()):
                values[row] = new[j]
            col = pa.array(values, out.schema.field("text").type)
            out = out.set_column(out.column_names.index("text"), "text", col)
            stats.counters["docs_cut"] += len(over)
            stats.counters["words_cut"] += int(cut.sum())
            stats.bytes_out = text_bytes(out)
        return StageResult(out, res.log, stats)


#: The signal columns, in the decision log.
SIGNALS = ("decont_hits", "decont_benchmark", "decont_item", "decont_cut_words", "decont_words")


def _counts(arr: pa.Array | pa.ChunkedArray) -> list[tuple[str, int]]:
    if len(arr) == 0:
        return []
    return [(v["values"].as_py(), v["counts"].as_py()) for v in pc.value_counts(arr)]


def contamination_table(stats: dict) -> list[tuple[str, int]]:
    """(benchmark, contaminated documents) from a ``decontaminate`` stage's stats (the dict of
    ``stats/NN_decontaminate.json`` or report.json), most first: for the report's table."""
    counters = stats.get("counters", {})
    rows = [(k.split(":", 1)[1], int(v)) for k, v in counters.items() if k.startswith("benchmark:")]
    return sorted(rows, key=lambda r: (-r[1], r[0]))


# -- words and n-gram hashes ----------------------------------------------------------------------


def normalise(texts: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Lower case, punctuation and symbols removed; white space kept as it is."""
    return pc.replace_substring_regex(pc.utf8_lower(texts), PUNCT_RE, "")


def _languages(table: pa.Table) -> pa.ChunkedArray | None:
    return table[LANGUAGE_COLUMN] if LANGUAGE_COLUMN in table.column_names else None


def normalised_words(
    texts: pa.Array | pa.ChunkedArray, languages: pa.Array | pa.ChunkedArray | None = None
) -> pa.ListArray:
    """One list of normalised words per text (null text: no words); texts in a script without
    spaces are segmented first (by ``languages``, one label per text, else by their script)."""
    texts = segment.spaced(texts, languages)
    # trimmed first: Arrow gives an empty word for white space at either end
    words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(normalise(texts)))
    if isinstance(words, pa.ChunkedArray):
        words = words.combine_chunks() if words.num_chunks else pa.array([], words.type)
    words = pc.fill_null(words, pa.scalar([], words.type))
    flat = words.flatten()
    empty = pc.equal(pc.utf8_length(flat), 0)
    if pc.any(empty).as_py():  # a text of nothing but punctuation and space: [""]
        words = _drop_words(words, pc.invert(empty))
    return words


def _drop_words(words: pa.ListArray, keep: pa.Array) -> pa.ListArray:
    """``words`` with only the flat words where ``keep`` is true."""
    off = words.offsets.to_numpy().astype(np.int64)
    off -= off[0]
    kept = np.r_[0, np.cumsum(keep.to_numpy(zero_copy_only=False))]
    return pa.ListArray.from_arrays(pa.array(kept[off], pa.int32()), words.flatten().filter(keep))


def word_hashes(words: pa.Array) -> np.ndarray:
    """xxh3_64 of each word's UTF-8 (a flat string array), uint64; each distinct word once."""
    if len(words) == 0:
        return np.zeros(0, _U64)
    enc = pc.dictionary_encode(words)
    digest = xxhash.xxh3_64_intdigest
    uniq = enc.dictionary.cast(pa.large_binary()).to_pylist()
    table = np.fromiter((digest(b) for b in uniq), dtype=_U64, count=len(uniq))
    return table[enc.indices.to_numpy(zero_copy_only=False)]


_powers_lock = threading.Lock()
_powers: dict[str, np.ndarray] = {"P": np.ones(1, _U64), "Q": np.ones(1, _U64)}


def _pow_table(n: int) -> tuple[np.ndarray, np.ndarray]:
    """P^i and Q^i (mod 2^64) for i < n."""
    if len(_powers["P"]) < n:
        with _powers_lock:
            size = max(n, 2 * len(_powers["P"]))
            for key, base in (("P", _P), ("Q", _Q)):
                arr = np.full(size, base, dtype=_U64)
                arr[0] = 1
                _powers[key] = np.cumprod(arr, dtype=_U64)
    return _powers["P"][:n], _powers["Q"][:n]


def _mix(h: np.ndarray, k: int) -> np.ndarray:
    """splitmix64's finaliser of ``h + k * golden``: the window length enters the hash."""
    with np.errstate(over="ignore"):
        z = h + _U64((k * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
        return z ^ (z >> _U64(31))


class _Windows:
    """Prefix sums over a run of word hashes: the hash of any window in a few operations."""

    def __init__(self, wh: np.ndarray):
        n = len(wh)
        self.ppow, qpow = _pow_table(n + 1)
        self.prefix = np.zeros(n + 1, _U64)
        with np.errstate(over="ignore"):
            np.cumsum(wh * qpow[:n], dtype=_U64, out=self.prefix[1:])

    def hashes(self, starts: np.ndarray, k: int) -> np.ndarray:
        with np.errstate(over="ignore"):
            poly = self.ppow[starts + k - 1] * (self.prefix[starts + k] - self.prefix[starts])
        return _mix(poly, k)


def _valid_starts(offsets: np.ndarray, k: int) -> np.ndarray:
    """Start positions (in the flat word array) of every k-word window inside one document."""
    lengths = np.diff(offsets) - k + 1
    lengths = np.maximum(lengths, 0)
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    firsts = offsets[:-1][lengths > 0]
    lens = lengths[lengths > 0]
    base = np.repeat(firsts - np.concatenate(([0], np.cumsum(lens)[:-1])), lens)
    return base + np.arange(total, dtype=np.int64)


def _chunks(offsets: np.ndarray) -> list[tuple[int, int]]:
    """Runs of documents [a, b) with about ``_CHUNK_WORDS`` words each (at least one doc)."""
    out, a, n = [], 0, len(offsets) - 1
    while a < n:
        b = int(np.searchsorted(offsets, offsets[a] + _CHUNK_WORDS, side="right")) - 1
        b = max(b, a + 1)
        out.append((a, min(b, n)))
        a = min(b, n)
    return out


# -- the index --------------------------------------------------------------------------------


class Matches:
    """Per document: matched windows, the most-matched item (-1: none), words cut, words."""

    def __init__(self, n: int):
        self.hits = np.zeros(n, np.int64)
        self.best_ref = np.full(n, -1, np.int64)
        self.cut_words = np.zeros(n, np.int64)
        self.words = np.zeros(n, np.int64)
        #: (doc, first word, last word + 1) of each merged span to cut, word positions in the doc
        self.spans: list[tuple[int, int, int]] = []


class BenchmarkIndex:
    """The sorted n-gram hashes of the benchmarks, and which item each came from."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.hashes: np.ndarray = arrays["hashes"]
        self.refs: np.ndarray = arrays["refs"]
        self.item_benchmark: np.ndarray = arrays["item_benchmark"]
        self.item_ids = _Strings(arrays["item_id_bytes"], arrays["item_id_offsets"])
        self.benchmarks: list[str] = [str(s) for s in arrays["benchmarks"]]
        self.lengths: list[int] = [int(k) for k in arrays["lengths"]]
        n = len(self.hashes)
        self.bits = max(10, int(np.ceil(np.log2(max(n, 1) * _BITSET_LOAD))))
        slots = self.hashes >> _U64(64 - self.bits)
        self.bitset = np.zeros(1 << (self.bits - 6), _U64)
        if n:
            words = (slots >> _U64(6)).astype(np.int64)
            ones = _U64(1) << (slots & _U64(63))
            starts = np.flatnonzero(np.r_[True, words[1:] != words[:-1]])
            self.bitset[words[starts]] = np.bitwise_or.reduceat(ones, starts)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays a worker holds."""
        return sum(
            a.nbytes
            for a in (
                self.hashes,
                self.refs,
                self.item_benchmark,
                self.bitset,
                *self.item_ids.arrays,
            )
        )

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """For each hash: the position in ``hashes`` where it is, or -1."""
        out = np.full(len(h), -1, np.int64)
        if not len(self.hashes) or not len(h):
            return out
        slots = h >> _U64(64 - self.bits)
        maybe = (self.bitset[(slots >> _U64(6)).astype(np.int64)] >> (slots & _U64(63))) & _U64(1)
        cand = np.flatnonzero(maybe)
        if len(cand):
            pos = np.searchsorted(self.hashes, h[cand])
            pos = np.minimum(pos, len(self.hashes) - 1)
            found = self.hashes[pos] == h[cand]
            out[cand[found]] = pos[found]
        return out

    def match(self, words: pa.ListArray, margin: int = 0) -> Matches:
        """Match every document (a list of normalised words each) against the index."""
        offsets_all = words.offsets.to_numpy().astype(np.int64)
        offsets_all = offsets_all - offsets_all[0]
        flat = words.flatten()
        m = Matches(len(words))
        m.words[:] = np.diff(offsets_all)
        for a, b in _chunks(offsets_all):
            lo, hi = int(offsets_all[a]), int(offsets_all[b])
            if hi == lo:
                continue
            offsets = offsets_all[a : b + 1] - lo
            wh = word_hashes(flat.slice(lo, hi - lo))
            win = _Windows(wh)
            doc_of_word = np.repeat(np.arange(a, b), np.diff(offsets))
            found_start, found_len, found_ref = [], [], []
            for k in self.lengths:
                starts = _valid_starts(offsets, k)
                if not len(starts):
                    continue
                pos = self.lookup(win.hashes(starts, k))
                hit = pos >= 0
                if hit.any():
                    found_start.append(starts[hit])
                    found_len.append(np.full(int(hit.sum()), k, np.int64))
                    found_ref.append(self.refs[pos[hit]].astype(np.int64))
            if not found_start:
                continue
            s, k_, r = (np.concatenate(x) for x in (found_start, found_len, found_ref))
            d = doc_of_word[s]
            m.hits += np.bincount(d, minlength=len(m.hits))
            self._best(m, d, r)
            self._cover(m, d, s, k_, offsets, a, margin)
        return m

    def _best(self, m: Matches, d: np.ndarray, r: np.ndarray) -> None:
        """Per document, the item with most matched windows (ties: the first item)."""
        pairs, counts = np.unique(np.stack([d, r]), axis=1, return_counts=True)
        order = np.lexsort((pairs[1], -counts, pairs[0]))  # by doc, most hits, smallest ref
        pd = pairs[0][order]
        first = np.r_[True, pd[1:] != pd[:-1]]
        m.best_ref[pd[first]] = pairs[1][order][first]

    def _cover(self, m, d, s, k, offsets, a, margin) -> None:
        """Words covered by the matched windows widened by ``margin``, merged, per document."""
        lo = np.maximum(s - margin, offsets[d - a])
        hi = np.minimum(s + k + margin, offsets[d - a + 1])
        order = np.lexsort((hi, lo))
        lo, hi, dd = lo[order], hi[order], d[order]
        reach = np.maximum.accumulate(hi)
        prev = np.r_[np.int64(-1), reach[:-1]]
        m.cut_words += np.bincount(
            dd, np.maximum(0, hi - np.maximum(lo, prev)), len(m.hits)
        ).astype(np.int64)
        new = lo > prev  # a span that does not touch the previous one starts a merged span
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(lo)]
        for i, j in zip(starts.tolist(), ends.tolist(), strict=True):
            doc = int(dd[i])
            base = int(offsets[doc - a])
            m.spans.append((doc, int(lo[i]) - base, int(reach[j - 1]) - base))

    def describe(self, refs: np.ndarray) -> tuple[pa.Array, pa.Array]:
        """Benchmark names and item ids of ``refs`` (-1: null)."""
        names = [None] * len(refs)
        ids: list[str | None] = [None] * len(refs)
        for i in np.flatnonzero(refs >= 0).tolist():
            ref = int(refs[i])
            names[i] = self.benchmarks[int(self.item_benchmark[ref])]
            ids[i] = self.item_ids[ref]
        return pa.array(names, pa.string()), pa.array(ids, pa.string())


class _Strings:
    """Many short strings as one UTF-8 blob and offsets (an .npz needs no pickle for them)."""

    def __init__(self, blob: np.ndarray, offsets: np.ndarray):
        self.blob, self.offsets = blob, offsets
        self.arrays = (blob, offsets)

    def __getitem__(self, i: int) -> str:
        return bytes(self.blob[self.offsets[i] : self.offsets[i + 1]]).decode()

    @staticmethod
    def pack(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = [v.encode() for v in values]
        offsets = np.zeros(len(enc) + 1, np.int64)
        np.cumsum([len(e) for e in enc], out=offsets[1:])
        return np.frombuffer(b"".join(enc), np.uint8).copy(), offsets


_loaded: dict[str, BenchmarkIndex] = {}
_load_lock = threading.Lock()


def load_index(path: str) -> BenchmarkIndex:
    """The index in ``path``, loaded once per process."""
    index = _loaded.get(path)
    if index is None:
        with _load_lock:
            index = _loaded.get(path)
            if index is None:
                with np.load(path) as z:
                    index = _loaded[path] = BenchmarkIndex({k: z[k] for k in z.files})
    return index


# -- building the index (driver) ------------------------------------------------------------


def cache_dir() -> Path:
    root = os.environ.get("REFINE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "refine"
    return base / "decontaminate"


_built: dict[str, str] = {}


def build_index(params: DecontaminateParams, directory: str | None = None) -> str:
    """The absolute path of the index for ``params``: from the cache when its key (the benchmark
    files' identities and the params that shape the index) is there, else built and written."""
    files = [(spec, _expand(spec)) for spec in params.benchmarks]
    key_obj = {
        "version": INDEX_VERSION,
        "ngram": params.ngram,
        "min_item_words": params.min_item_words,
        "benchmarks": [
            {**spec.model_dump(), "files": [[u, _identity(u)] for u in urls]}
            for spec, urls in files
        ],
    }
    key = xxhash.xxh3_128_hexdigest(json.dumps(key_obj, sort_keys=True))[:24]
    path = (Path(directory) if directory else cache_dir()) / f"{key}.npz"
    hit = _built.get(str(path))
    if hit is not None and os.path.exists(hit):
        return hit
    if not path.exists():
        arrays = _build_arrays(params, files)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _built[str(path)] = str(path.resolve())
    return _built[str(path)]


def _expand(spec: BenchmarkSpec) -> list[str]:
    from refine.pipeline.inputs import _expand_one, input_format

    where = f"decontaminate: benchmark {spec.path}"
    try:
        urls = _expand_one(spec.path)
    except (RefineError, OSError) as e:
        raise ConfigError(f"{where}: {_one_line(e)}") from None
    if not urls:
        raise ConfigError(f"{where}: matched no files")
    for u in urls:
        if input_format(u) not in ("jsonl", "parquet"):
            raise ConfigError(
                f"decontaminate: benchmark {u}: not a JSONL (.jsonl, .jsonl.gz, .jsonl.zst, "
                ".json.gz) or Parquet file"
            )
    return urls


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _identity(url: str) -> str:
    """Content identity of a local file; size and version tags of a remote one."""
    if "://" not in url:
        from refine.models import file_identity

        if not os.path.isfile(url):
            raise ConfigError(f"decontaminate: benchmark {url}: no such file")
        return file_identity(url)
    import fsspec

    try:
        fs, _ = fsspec.core.url_to_fs(url)
        info = fs.info(url)
    except Exception as e:  # noqa: BLE001 - fsspec, HTTP and Hub errors all end here
        raise ConfigError(f"decontaminate: benchmark {url}: {_one_line(e)}") from None
    keep = ("size", "ETag", "etag", "blob_id", "last_commit", "lfs", "LastModified", "mtime")
    return json.dumps({k: info.get(k) for k in keep if k in info}, sort_keys=True, default=str)


def _records(url: str) -> list[dict]:
    from refine.pipeline.inputs import input_format

    if input_format(url) == "parquet":
        from refine.extract.textfiles import _parquet_file

        try:
            return _parquet_file(url).read().to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow, fsspec and HTTP errors
            raise ConfigError(
                f"decontaminate: benchmark {url}: cannot read Parquet: {_one_line(e)}"
            ) from None
    import orjson

    from refine.extract.textfiles import _iter_lines, _StreamError

    out = []
    try:
        for pos, line in _iter_lines(url, 0, None):
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                rec = None
            if not isinstance(rec, dict):
                raise ConfigError(
                    f"decontaminate: benchmark {url}: the line at byte {pos} is not a JSON object"
                )
            out.append(rec)
    except _StreamError as e:
        raise ConfigError(f"decontaminate: benchmark {url}: {e.detail}") from None
    except OSError as e:
        raise ConfigError(f"decontaminate: benchmark {url}: {_one_line(e)}") from None
    return out


def _strings(value: Any) -> list[str]:
    """The strings in a field value: itself, or those inside lists and objects."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    return []


def _build_arrays(
    params: DecontaminateParams, files: list[tuple[BenchmarkSpec, list[str]]]
) -> dict[str, np.ndarray]:
    names: list[str] = []
    item_benchmark: list[int] = []
    item_ids: list[str] = []
    item_file: list[int] = []
    file_urls: list[str] = []
    texts: list[str] = []
    text_item: list[int] = []
    for spec, urls in files:
        for url in urls:
            base = url.rstrip("/").rsplit("/", 1)[-1]
            name = spec.name or re.sub(
                r"\.(jsonl|json|ndjson|parquet)(\.(gz|zst|zstd))?$", "", base
            )
            if name not in names:
                names.append(name)
            b = names.index(name)
            file_urls.append(url)
            records = _records(url)
            if not records:
                raise ConfigError(f"decontaminate: benchmark {url}: empty (no records)")
            if spec.fields is not None:
                missing = [f for f in spec.fields if not any(f in r for r in records)]
                if missing:
                    raise ConfigError(
                        f"decontaminate: benchmark {url}: field(s) {', '.join(missing)} not found; "
                        f"its fields are: {', '.join(records[0])}"
                    )
            if spec.id_field is not None and not any(spec.id_field in r for r in records):
                raise ConfigError(
                    f"decontaminate: benchmark {url}: id_field {spec.id_field!r} not found; "
                    f"its fields are: {', '.join(records[0])}"
                )
            prefix = f"{base}:" if len(urls) > 1 and spec.id_field is None else ""
            found = 0
            for row, rec in enumerate(records):
                item = len(item_ids)
                rid = rec.get(spec.id_field) if spec.id_field else None
                item_ids.append(str(rid) if rid is not None else f"{prefix}{row}")
                item_benchmark.append(b)
                item_file.append(len(file_urls) - 1)
                keys = (
                    spec.fields
                    if spec.fields is not None
                    else [k for k in rec if k != spec.id_field]
                )
                for k in keys:
                    for s in _strings(rec.get(k)):
                        texts.append(s)
                        text_item.append(item)
                        found += 1
            if not found:
                raise ConfigError(
                    f"decontaminate: benchmark {url}: no string field"
                    + (f" among {', '.join(spec.fields)}" if spec.fields else "")
                )
    hashes, refs, lengths = _item_ngrams(texts, np.array(text_item, np.int64), params)
    given = np.bincount(np.array(item_file)[refs], minlength=len(file_urls))
    if not given.all():
        raise ConfigError(
            f"decontaminate: benchmark {file_urls[int(np.argmin(given))]}: no item text has "
            f"{params.min_item_words} words or more (empty set)"
        )
    ids_blob, ids_off = _Strings.pack(item_ids)
    return {
        "hashes": hashes,
        "refs": refs,
        "item_benchmark": np.array(item_benchmark, np.uint16),
        "item_id_bytes": ids_blob,
        "item_id_offsets": ids_off,
        "benchmarks": np.array(names, dtype=str),
        "lengths": np.array(lengths, np.int64),
    }


def _item_ngrams(
    texts: list[str], text_item: np.ndarray, params: DecontaminateParams
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Sorted unique n-gram hashes of the item texts, the item of each, the window lengths."""
    n = params.ngram
    words = normalised_words(pa.array(texts, pa.large_string()))
    offsets = words.offsets.to_numpy().astype(np.int64)
    offsets -= offsets[0]
    counts = np.diff(offsets)
    wh = word_hashes(words.flatten())
    win = _Windows(wh)
    text_of_word = np.repeat(np.arange(len(texts)), counts)
    parts_h, parts_r, lengths = [], [], []
    starts = _valid_starts(offsets, n)
    if len(starts):
        parts_h.append(win.hashes(starts, n))
        parts_r.append(text_item[text_of_word[starts]])
        lengths.append(n)
    short = np.flatnonzero((counts >= params.min_item_words) & (counts < n))
    for k in np.unique(counts[short]).tolist():
        which = short[counts[short] == k]
        parts_h.append(win.hashes(offsets[which], k))
        parts_r.append(text_item[which])
        lengths.append(int(k))
    if not parts_h:
        return np.zeros(0, _U64), np.zeros(0, np.uint32), []
    h = np.concatenate(parts_h)
    r = np.concatenate(parts_r)
    order = np.lexsort((r, h))
    h, r = h[order], r[order]
    first = np.r_[True, h[1:] != h[:-1]]
    return h[first], r[first].astype(np.uint32), sorted(lengths)


# -- cutting --------------------------------------------------------------------------------


def cut_texts(
    index: BenchmarkIndex,
    texts: pa.Array,
    margin: int,
    languages: pa.Array | pa.ChunkedArray | None = None,
) -> tuple[list[str], np.ndarray]:
    """``texts`` with every match (plus ``margin`` words either side) removed, and the number of
    words removed from each. Words are the raw white-space tokens (segmented words in a script
    without spaces) normalised one by one, the same words as ``normalised_words`` gives, so their
    characters can be found in the text."""
    raw = pc.utf8_split_whitespace(segment.spaced(texts, languages))
    raw = pc.fill_null(raw, pa.scalar([], raw.type))
    flat = raw.flatten()
    norm = pa.ListArray.from_arrays(raw.offsets, normalise(flat))
    keep = pc.greater(pc.utf8_length(norm.flatten()), 0)
    words = _drop_words(norm, keep)
    raw_off = raw.offsets.to_numpy().astype(np.int64)
    raw_off -= raw_off[0]
    kept_tokens = np.flatnonzero(keep.to_numpy(zero_copy_only=False))  # word i is raw token kept[i]
    offsets = words.offsets.to_numpy().astype(np.int64)
    m = index.match(words, margin)
    values = texts.to_pylist()
    tokens = flat.to_pylist()
    by_doc: dict[int, list[tuple[int, int]]] = {}
    for doc, w0, w1 in m.spans:
        by_doc.setdefault(doc, []).append((w0, w1))
    out = list(values)
    for doc, spans in by_doc.items():
        text = values[doc]
        # character offsets of the doc's raw tokens, in order
        t0, t1 = int(raw_off[doc]), int(raw_off[doc + 1])
        starts, pos = [], 0
        for t in range(t0, t1):
            pos = text.find(tokens[t], pos)
            starts.append(pos)
            pos += len(tokens[t])
        word_tok = kept_tokens[offsets[doc] : offsets[doc + 1]] - t0
        pieces, last = [], 0
        for w0, w1 in spans:
            a = starts[int(word_tok[w0])]
            tok = int(word_tok[w1 - 1])
            b = starts[tok] + len(tokens[t0 + tok])
            pieces.append(text[last:a])
            last = b
        pieces.append(text[last:])
        out[doc] = "".join(pieces)
    return out, m.cut_words
