"""``dedup_substring``: exact-substring removal (Lee et al. 2022, "Deduplicating Training Data
Makes Language Models Better"; RefinedWeb's ExactSubstr), as a global stage.

A span of at least ``min_span_tokens`` tokens that occurs in more than one document is kept in
the first of them (the smallest id) and cut out of every other one. Precisely: for every window
of K consecutive tokens inside a document, its *owner* is the smallest id among the documents
that contain it; a document removes every window whose owner is another document (the union of
those windows, so a copied span of any length >= K goes whole). Repeats inside one document are
left alone (the repetition filters judge those). When the copies of a long span are kept by
different documents (A holds its first half, B all of it, C its end), every token of it is still
kept exactly once.

Tokens: whitespace-delimited words. A document in a script written without spaces (Chinese,
Japanese, Thai, Khmer, Lao, Myanmar: by its ``language`` column, else by its characters) is
segmented into words (``refine.pipeline.segment``), so K tokens is a comparable stretch of text
in every language; in other documents each stray Han, kana or Thai character is a token of its
own. Lee et al. counted GPT-2 BPE tokens (K = 50, about 200-250 characters of
English); words are 1.3-1.5 BPE tokens, so the default of 50 words is a slightly longer and more
conservative span, and needs no tokenizer. Tokens are compared exactly (case and punctuation
count); the whitespace between them does not (a span re-wrapped onto other lines still matches).

Phases, none of which holds more than a shard or a shuffled partition:

1. per part (a Dask task each): the part's documents are cut into **shards** of at most
   ``shard_bytes`` of text (a document is never split: one larger than the budget is a shard
   alone). Per shard, a suffix array and its LCP array (pydivsufsort: libdivsufsort and Kasai)
   over the token ids group equal K-token windows exactly; each group gets the smallest id
   among its documents, a 128-bit hash of its tokens and its anchor (below). The shard's
   distinct anchors go to a Parquet table, the arrays to the scratch folder. A Dask shuffle on
   the anchor finds the anchors present in more than one shard; then, per part, the windows
   whose anchor is one of those go to a Parquet table (hash, part, shard: one row per such
   distinct window of a shard);
2. Dask shuffle on the window hash: windows present in more than one shard are the cross-shard
   candidates, written partitioned by part;
3. per part: each candidate gets its shard's smallest id; a second, much smaller shuffle on the
   hash gives the corpus-wide smallest id of every candidate;
4. per part: each document removes the windows owned by another document; spans are cut at
   token boundaries together with the whitespace that follows them. A document that lost text
   and keeps fewer than ``min_tokens`` tokens is dropped (``short_after_substring_dedup``).

Anchors (winnowing, Schleimer et al. 2003) keep phase 1's shuffles small: shuffling every
distinct window of every shard cost 24 bytes per window, 21 bytes per input token. A window's
anchor is the smallest 64-bit hash of its w = ``anchor_windows`` sub-windows of K - w + 1 tokens
(those starting at its first w tokens). It is a function of the window's tokens alone, so a
window present in two shards has the same anchor in both: its anchor is found shared and the
window goes to the window shuffle. Sharing an anchor is needed to be a candidate, not enough
(the window shuffle compares the 128-bit hashes), so an anchor collision only adds candidates:
the result is exactly the same for every w. Consecutive windows mostly share their anchor, so a
shard has about 2 / (w + 1) as many distinct anchors as windows, and few windows besides the
copied ones share one. The stage's ``shuffled_bytes`` counts the rows written for the two
shuffles: 16 x ``anchors`` (anchor, part, shard) + 24 x ``candidate_windows`` (two hashes, part,
shard); the smaller owner shuffle of phase 3 (``cross_shard_windows`` rows) is not counted.
Measured at 10^5 documents of ``scripts/make_corpus.py`` with K = 50 (docs/scaling.md): 19.7
bytes shuffled per input token before anchors, 2.5 with w = 16 (1.6 of anchors, 1.0 of
candidate windows), the same output.

Memory: a shard's suffix array is built by libdivsufsort over the ids written as 1-4 big-endian
bytes each (``suffix_array``); with the LCP array, the token-id vocabulary and the per-token
arrays, a task peaked at about 10x the shard's text bytes for a 16 MiB shard (15x at 4 MiB,
measured with ``scripts/bench_dedup.py --substring``), whatever the corpus size. The anchors add 8
bytes per token and ~50 MB of chunk temporaries, after the suffix array is freed.

The owners depend only on the documents (up to a 2^-128 hash collision between different
windows of different shards), never on partitions, shards or workers. Documents sharing an id
are tied: both keep a span they share.
"""

from __future__ import annotations

import hashlib
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from refine.dedup.by_language import DedupBy, read_languages
from refine.errors import ConfigError
from refine.pipeline import segment
from refine.pipeline.gather import map_folded
from refine.pipeline.stage import GlobalContext, GlobalStage, StageParams, decision_log, text_bytes
from refine.pipeline.stats import StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic

REASON = "short_after_substring_dedup"
#: removed spans kept per document in the decision log (``removed_spans``), and their length
SAMPLE_SPANS = 3
SAMPLE_CHARS = 300

_NOSPACE = "\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
#: a character of a script written without spaces, or a run of other non-space characters
TOKEN_RE = re.compile(f"[{_NOSPACE}]|[^\\s{_NOSPACE}]+")

#: odd multipliers of the two polynomial window hashes (odd: invertible modulo 2^64)
_BASES = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F))
#: odd multiplier of the sub-window hash the anchors are the minima of, and its inverse
_ANCHOR_BASE = 0xD6E8FEB86659FD93
_ANCHOR_INVERSE = pow(_ANCHOR_BASE, -1, 2**64)
#: bytes of one row of the anchor shuffle (anchor int64, part, shard int32) and of the window
#: shuffle (h1, h2 int64, part, shard int32): ``shuffled_bytes`` counts rows x these
ANCHOR_ROW_BYTES = 16
WINDOW_ROW_BYTES = 24
#: w, ``anchor_windows``'s default (see its docstring for the measurements)
ANCHOR_WINDOWS = 16
_STR = "string"


class DedupSubstringParams(StageParams):
    min_span_tokens: int = Field(50, ge=1)
    """K: spans of at least this many tokens (words; Chinese, Japanese, Thai... segmented into
    words) that occur in more than one document are kept only in the smallest id (Lee et al.: 50
    GPT-2 tokens)."""
    shard_bytes: int = Field(64 * 2**20, ge=1)
    """UTF-8 text bytes per suffix array: bounds a task's memory (about 10x this at peak, see
    the module docstring) whatever the corpus size. Shards never span parts, so a part smaller
    than this is one shard. A document larger than this is a shard on its own."""
    min_tokens: int = Field(50, ge=0)
    """A document that lost text and keeps fewer tokens than this is dropped
    (``short_after_substring_dedup``; 50 is gopher_quality's minimum word count). Documents
    with nothing removed are never dropped here; with 0 only an empty remainder is dropped."""
    anchor_windows: int = Field(ANCHOR_WINDOWS, ge=1)
    """w: each K-token window's anchor is the smallest hash of its w sub-windows of K - w + 1
    tokens; only the distinct anchors of a shard are shuffled (about 2 / (w + 1) of its
    windows), then only the windows whose anchor another shard shares (see the module
    docstring). The result is the same for every w; w sets the bytes shuffled: per input token
    19.7 (before anchors), 13.9 (w = 1: every window its own anchor), 3.8 (8), 2.5 (16),
    measured at 10^5 documents with K = 50. Keep K - w + 1 well above a few tokens: short
    sub-windows are shared by chance and make every window around them a candidate. Larger than
    K counts as K."""
    by: DedupBy = "all"
    """``all``: spans are compared across every document. ``language``: only across documents
    with the same ``language`` column (FineWeb-2 deduplicates each language separately): a
    token of one language never equals the same token of another. Needs that column;
    documents without a language form a group of their own."""


#: ``tokenize``'s default: the segmenter an unlabelled document gets from its script.
BY_SCRIPT = "by_script"


def tokenize(text: str, segmenter: str | None = BY_SCRIPT) -> list[str]:
    """The tokens K counts (see the module docstring); ``segmenter``: the document's, from
    ``segment.segmenters`` (None: not segmented; default: from the text's script, as for a
    document without a language)."""
    if segmenter == BY_SCRIPT:
        segmenter = _by_script(text)
    if segmenter is None:
        return TOKEN_RE.findall(text)
    return [text[a:b] for a, b in segment.word_spans(text, segmenter, _gap_spans)]


def token_spans(text: str, segmenter: str | None = BY_SCRIPT) -> np.ndarray:
    """(start, end) character offsets of every token, shape (n, 2) (``segmenter``: as in
    :func:`tokenize`)."""
    if segmenter == BY_SCRIPT:
        segmenter = _by_script(text)
    if segmenter is None:
        spans = _gap_spans(text)
    else:
        spans = segment.word_spans(text, segmenter, _gap_spans)
    return np.array(spans, np.int64).reshape(-1, 2)


def _by_script(text: str) -> str | None:
    keys = segment.segmenters(pa.array([text], pa.large_string()))
    return None if keys is None else keys[0]


def _gap_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in TOKEN_RE.finditer(text)]


def _segmenters(table: pa.Table) -> list[str | None]:
    """Each document's segmenter (None: whitespace tokens), from its language or script."""
    languages = table["language"] if "language" in table.column_names else None
    keys = segment.segmenters(table["text"], languages)
    return [None] * table.num_rows if keys is None else keys.tolist()


def _token_hashes(vocab: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Two independent 64-bit hashes of each distinct token (one 128-bit BLAKE2b)."""
    raw = b"".join(
        hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).digest() for t in vocab
    )
    pairs = np.frombuffer(raw, dtype="<u8").reshape(-1, 2)
    return pairs[:, 0].copy(), pairs[:, 1].copy()


def _window_hash(th: np.ndarray, seq: np.ndarray, base: np.uint64, starts: np.ndarray, k: int):
    """Polynomial hash (mod 2^64) of the K token hashes from each start, by Horner's rule: K
    vector steps over the starts only, so no temporary as large as the shard."""
    acc = np.zeros(starts.size, np.uint64)
    for j in range(k):
        acc *= base
        acc += th[seq[starts + j]]
    return acc


#: window starts per step of ``anchor_hashes`` (bounds its temporaries: ~50 MB)
_ANCHOR_CHUNK = 1 << 20


def _powers(base: int, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) modulo 2^64."""
    out = np.full(n, base, np.uint64)
    out[0] = 1
    return np.cumprod(out, dtype=np.uint64)


def _sliding_min(a: np.ndarray, w: int) -> np.ndarray:
    """``out[i] = min(a[i : i + w])`` for every full run of w, in log2(w) + 1 vector passes."""
    span = 1
    while span * 2 <= w:
        a = np.minimum(a[:-span], a[span:])  # now the minimum over 2 * span
        span *= 2
    if span < w:
        a = np.minimum(a[: a.size - (w - span)], a[w - span :])
    return a


def anchor_hashes(th: np.ndarray, seq: np.ndarray, k: int, w: int) -> np.ndarray:
    """The anchor of the K-token window starting at each position of ``seq`` (token ids; ``th``:
    a 64-bit hash per id): the smallest hash of its w sub-windows of k0 = K - w + 1 tokens,
    those starting at s, s + 1, ..., s + w - 1 (w is clamped to K). A function of the window's
    tokens only, so equal windows anywhere have equal anchors.

    The sub-window hash is sum_i th[t_i] B^i mod 2^64, read off a prefix sum over the tokens and
    divided by B^s (odd B: invertible), so it does not depend on where the window sits; then a
    sliding minimum. A few vector passes per position, in chunks. uint64 per position; the last
    K - 1 hold 2^64 - 1, and a window running over a document's end gets a meaningless value
    (callers read valid starts only).
    """
    w = min(w, k)
    k0 = k - w + 1
    n = seq.size
    out = np.full(n, np.iinfo(np.uint64).max, np.uint64)
    starts = n - k + 1
    if starts <= 0:
        return out
    step = min(_ANCHOR_CHUNK, starts)
    powers = _powers(_ANCHOR_BASE, step + k - 1)
    inverse = _powers(_ANCHOR_INVERSE, step + w - 1)
    for lo in range(0, starts, step):
        hi = min(starts, lo + step)
        tok = th[seq[lo : hi + k - 1]]
        tok *= powers[: tok.size]
        prefix = np.zeros(tok.size + 1, np.uint64)
        np.cumsum(tok, out=prefix[1:])
        del tok
        sub = prefix[k0:] - prefix[: prefix.size - k0]  # hi - lo + w - 1 sub-windows
        del prefix
        sub *= inverse[: sub.size]
        out[lo:hi] = _sliding_min(sub, w)
    return out


#: suffix-array entries filtered per step (bounds the temporaries of ``suffix_array``)
_CHUNK = 1 << 22


def suffix_array(seq: np.ndarray, alphabet: int) -> np.ndarray:
    """Suffix array (int32) of a sequence of token ids < ``alphabet``, with libdivsufsort.

    libdivsufsort sorts bytes: each id is written as ``w`` big-endian bytes (w = 1..4, the fewest
    that hold ``alphabet``), which keeps the lexicographic order of the ids; the byte positions
    that are not the start of an id are then dropped. pydivsufsort does the same for integer
    arrays but with w rounded up to 2 or 4 and whole-array temporaries; this keeps the peak at
    about ``5 w + 8`` bytes per token.
    """
    from pydivsufsort import divsufsort

    n = seq.size
    w = max(1, (int(alphabet - 1).bit_length() + 7) // 8)
    raw = np.empty((n, w), np.uint8)
    for i in range(w):
        raw[:, i] = (seq >> np.uint32(8 * (w - 1 - i))) & np.uint32(0xFF)
    byte_sa = divsufsort(raw.reshape(-1))
    del raw
    if w == 1:
        return byte_sa.astype(np.int32, copy=False)
    out = np.empty(n, np.int32)
    filled = 0
    for lo in range(0, byte_sa.size, _CHUNK):
        chunk = byte_sa[lo : lo + _CHUNK]
        picked = chunk[chunk % w == 0] // w
        out[filled : filled + picked.size] = picked
        filled += picked.size
    return out


def _id_ranks(ids: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct ids (None counts as "") and each document's rank among them."""
    uniq, rank = np.unique(np.array([i or "" for i in ids], dtype=object), return_inverse=True)
    return uniq, rank.astype(np.int64)


def shard_rows(lengths: np.ndarray, budget: int) -> list[tuple[int, int]]:
    """Consecutive row ranges [lo, hi) of at most ``budget`` bytes (at least one row each)."""
    out, lo, size = [], 0, 0
    for row, n in enumerate(lengths.tolist()):
        if row > lo and size + n > budget:
            out.append((lo, row))
            lo, size = row, 0
        size += n
    if lo < len(lengths):
        out.append((lo, len(lengths)))
    return out


def index_shard(
    texts: list[str | None],
    ids: list[str | None],
    k: int,
    segmenters: list[str | None] | None = None,
    groups: list[str] | None = None,
    anchor_windows: int = ANCHOR_WINDOWS,
) -> dict[str, np.ndarray]:
    """Group the equal K-token windows of one shard with a suffix array (``segmenters``: each
    document's, see :func:`tokenize`).

    Returns ``grp`` (per token: its window's group, -1 where fewer than K tokens remain in the
    document), per group ``owner`` (rank of its smallest id within the shard) and ``h1``/``h2``
    (its 128-bit hash) and ``anchor`` (:func:`anchor_hashes` with w = ``anchor_windows``), and
    ``doc_starts`` (each document's first token; one extra at the end).
    ``groups`` (``by: language``): each document's language, part of each of its tokens, so
    windows of different groups never match (not in a shard, nor by hash across shards).
    """
    from pydivsufsort import kasai

    vocab: dict[str, int] = {"": 0}  # id 0 is the separator after each document
    pieces, lengths = [], []
    keys = segmenters
    if keys is None:  # from each text's script, as for documents without a language
        keys = _segmenters(pa.table({"text": pa.array(texts, pa.large_string())}))
    for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
        tokens = tokenize(text or "", key)
        if groups is not None:
            tokens = [f"{groups[i]}\x00{t}" for t in tokens]
        ids_ = [vocab.setdefault(t, len(vocab)) for t in tokens]
        ids_.append(0)
        pieces.append(np.array(ids_, np.uint32))
        lengths.append(len(ids_) - 1)
    seq = np.concatenate(pieces) if pieces else np.zeros(0, np.uint32)
    del pieces
    lengths_arr = np.array(lengths, np.int64)
    doc_starts = np.concatenate([[0], np.cumsum(lengths_arr + 1)]).astype(np.int64)
    n = seq.size
    # a window starts at each token with at least K tokens left in its document
    edges = np.zeros(n + 1, np.int8)
    long_docs = np.flatnonzero(lengths_arr >= k)
    edges[doc_starts[long_docs]] += 1
    edges[doc_starts[long_docs] + lengths_arr[long_docs] - k + 1] -= 1
    valid = np.cumsum(edges[:n], dtype=np.int8).astype(bool)
    del edges
    grp = np.full(n, -1, np.int32)
    result = {"grp": grp, "doc_starts": doc_starts, "sa_entries": np.int64(n)}
    if not valid.any():
        empty = np.zeros(0, np.uint64)
        return {
            **result,
            "owner": np.zeros(0, np.int64),
            "h1": empty,
            "h2": empty,
            "anchor": empty,
        }
    sa = suffix_array(seq, len(vocab))
    lcp = kasai(seq, sa)  # lcp[i]: common prefix of suffixes sa[i] and sa[i + 1], in tokens
    # windows sharing their first K tokens are adjacent in the suffix array; a window never
    # crosses a separator, so a suffix with a separator in its first K tokens sits outside
    # every run of valid windows
    new_run = np.empty(n, bool)
    new_run[0] = True
    np.less(lcp[:-1], k, out=new_run[1:])
    del lcp
    run = np.cumsum(new_run, dtype=np.int32)
    del new_run
    keep = valid[sa]
    pos = sa[keep]
    run = run[keep]
    del sa, keep, valid
    first = np.empty(pos.size, bool)
    first[0] = True
    np.not_equal(run[1:], run[:-1], out=first[1:])
    del run
    grp[pos] = np.cumsum(first, dtype=np.int32) - 1
    starts_idx = np.flatnonzero(first)
    del first
    _, rank = _id_ranks(ids)
    doc_of = np.searchsorted(doc_starts, pos, side="right") - 1
    owner = np.minimum.reduceat(rank[doc_of], starts_idx)
    del doc_of
    rep = pos[starts_idx].astype(np.int64)
    del pos
    th1, th2 = _token_hashes(list(vocab))
    return {
        **result,
        "owner": owner.astype(np.int64),
        "h1": _window_hash(th1, seq, _BASES[0], rep, k),
        "h2": _window_hash(th2, seq, _BASES[1], rep, k),
        "anchor": anchor_hashes(th1, seq, k, anchor_windows)[rep],
    }


class DedupSubstring(GlobalStage):
    """Cuts spans of at least K tokens repeated across documents out of all but the smallest id
    (exact substring dedup with per-shard suffix arrays and cross-shard window hashing)."""

    name = "dedup_substring"
    Params = DedupSubstringParams

    def check(self) -> None:
        try:
            import pydivsufsort  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"dedup_substring needs pydivsufsort (pip install pydivsufsort): {e}"
            ) from None
        segment.check_available()

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = [str(p) for p in list_parts(Path(ctx.input_dir))]
        n = len(parts)
        work = Path(ctx.work_dir)
        remove_tree(work)
        folders = ("shards", "anchors", "shared", "windows", "candidates", "owners", "cross")
        dirs = {k: str(work / k) for k in folders}
        client = ctx.client
        shards: list[dict] = []
        index_cpu = 0.0

        def fold_index(r: dict) -> None:
            nonlocal index_cpu
            shards.extend(r["shards"])
            index_cpu += r["cpu"]

        map_folded(
            client,
            self._index_part,
            parts,
            range(n),
            [dirs["shards"]] * n,
            [dirs["anchors"]] * n,
            fold=fold_index,
        )
        counters = dict.fromkeys(
            ("shared_anchors", "candidate_windows", "cross_shard_windows", "shuffled_bytes"), 0
        )
        counters["shards"] = len(shards)
        counters["anchors"] = sum(s["anchors"] for s in shards)
        if len(shards) > 1 and counters["anchors"]:
            counters["shared_anchors"] = _in_several_shards(
                Path(dirs["anchors"]), Path(dirs["shared"]), n, _ANCHOR_META
            )
            counters["shuffled_bytes"] = ANCHOR_ROW_BYTES * counters["anchors"]
        if counters["shared_anchors"]:

            def fold_candidates(r: dict) -> None:
                nonlocal index_cpu
                counters["candidate_windows"] += r["rows"]
                index_cpu += r["cpu"]

            map_folded(
                client,
                self._candidate_windows,
                range(n),
                [dirs["shards"]] * n,
                [dirs["shared"]] * n,
                [dirs["windows"]] * n,
                fold=fold_candidates,
            )
            counters["shuffled_bytes"] += WINDOW_ROW_BYTES * counters["candidate_windows"]
        if counters["candidate_windows"]:
            counters["cross_shard_windows"] = _in_several_shards(
                Path(dirs["windows"]), Path(dirs["candidates"]), n, _WINDOW_META
            )
        if counters["cross_shard_windows"]:
            map_folded(
                client,
                self._candidate_owners,
                parts,
                range(n),
                [dirs["shards"]] * n,
                [dirs["candidates"]] * n,
                [dirs["owners"]] * n,
            )
            _smallest_owner(Path(dirs["owners"]), Path(dirs["cross"]), n)
        stats = StageStats(name=self.name)

        def fold(part_stats: dict) -> None:
            nonlocal stats
            stats = stats + StageStats.from_dict(part_stats)

        map_folded(
            client,
            self._apply,
            parts,
            range(n),
            [dirs["shards"]] * n,
            [dirs["cross"]] * n,
            [ctx.output_dir] * n,
            [ctx.log_dir] * n,
            fold=fold,
        )
        for key, value in counters.items():
            stats.counters[key] += value
        stats.counters["windows"] = sum(s["windows"] for s in shards)
        # maxima, not sums: what bounds a task's memory
        stats.counters["largest_shard_bytes"] = max((s["bytes"] for s in shards), default=0)
        stats.counters["largest_suffix_array"] = max((s["tokens"] for s in shards), default=0)
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0 + index_cpu
        remove_tree(work)
        return stats

    # -- phase 1 ---------------------------------------------------------------------------
    def _index_part(self, part: str, part_no: int, shards_dir: str, anchors_dir: str) -> dict:
        c0 = time.process_time()
        k = self.params.min_span_tokens
        has_language = "language" in pq.read_schema(part).names
        table = pq.read_table(part, columns=["id", "text"] + ["language"] * has_language)
        texts, ids = table["text"].to_pylist(), table["id"].to_pylist()
        keys = _segmenters(table)
        groups = None
        if self.params.by == "language":
            groups = read_languages(part, self.name).to_pylist()
        lengths = _utf8_lengths(table)
        shards, anchors, shard_nos = [], [], []
        Path(shards_dir).mkdir(parents=True, exist_ok=True)
        for s, (lo, hi) in enumerate(shard_rows(lengths, self.params.shard_bytes)):
            idx = index_shard(
                texts[lo:hi],
                ids[lo:hi],
                k,
                keys[lo:hi],
                groups[lo:hi] if groups else None,
                self.params.anchor_windows,
            )
            np.savez(Path(shards_dir) / f"{part_no:06d}-{s:06d}.npz", lo=lo, hi=hi, **idx)
            distinct = _distinct(idx["anchor"])
            shards.append(
                {
                    "bytes": int(lengths[lo:hi].sum()),
                    "tokens": int(idx["sa_entries"]),
                    "windows": int(idx["h1"].size),
                    "anchors": int(distinct.size),
                }
            )
            anchors.append(distinct)
            shard_nos.append(np.full(distinct.size, s, np.int32))
        out = _hash_rows(part_no, shard_nos, anchor=anchors)
        write_parquet_atomic(out, Path(anchors_dir) / f"{part_no:06d}.parquet")
        return {"shards": shards, "cpu": time.process_time() - c0}

    # -- phase 1 (second half) ---------------------------------------------------------------
    @staticmethod
    def _candidate_windows(
        part_no: int, shards_dir: str, shared_dir: str, windows_dir: str
    ) -> dict:
        """The windows of the part whose anchor another shard has too: the (h1, h2, part, shard)
        rows of the window shuffle, one per such distinct window of a shard."""
        c0 = time.process_time()
        path = Path(shared_dir) / f"part={part_no}"
        if not path.is_dir():
            return {"rows": 0, "cpu": time.process_time() - c0}
        shared = pq.read_table(path, columns=["anchor", "shard"]).to_pandas()
        h1s, h2s, shard_nos = [], [], []
        for s, rows in shared.groupby("shard", sort=True):
            with np.load(Path(shards_dir) / f"{part_no:06d}-{int(s):06d}.npz") as npz:
                anchor, h1, h2 = npz["anchor"], npz["h1"], npz["h2"]
            hit = np.isin(anchor.view(np.int64), rows["anchor"].to_numpy())
            h1s.append(h1[hit])
            h2s.append(h2[hit])
            shard_nos.append(np.full(int(hit.sum()), s, np.int32))
        out = _hash_rows(part_no, shard_nos, h1=h1s, h2=h2s)
        write_parquet_atomic(out, Path(windows_dir) / f"{part_no:06d}.parquet")
        return {"rows": out.num_rows, "cpu": time.process_time() - c0}

    # -- phase 3 ---------------------------------------------------------------------------
    def _candidate_owners(
        self, part: str, part_no: int, shards_dir: str, candidates_dir: str, owners_dir: str
    ) -> None:
        path = Path(candidates_dir) / f"part={part_no}"
        if not path.is_dir():
            return
        cand = pq.read_table(path, columns=["h1", "h2", "shard"]).to_pandas()
        ids = pq.read_table(part, columns=["id"])["id"].to_pylist()
        frames = []
        for s, rows in cand.groupby("shard", sort=True):
            shard = _load(Path(shards_dir) / f"{part_no:06d}-{int(s):06d}.npz")
            groups = pd.DataFrame(
                {
                    "h1": shard["h1"].view(np.int64),
                    "h2": shard["h2"].view(np.int64),
                    "g": np.arange(shard["h1"].size, dtype=np.int64),
                }
            )
            hit = groups.merge(rows[["h1", "h2"]], on=["h1", "h2"], how="inner")
            uniq, _ = _id_ranks(ids[int(shard["lo"]) : int(shard["hi"])])
            frames.append(
                pd.DataFrame(
                    {
                        "h1": hit["h1"].to_numpy(),
                        "h2": hit["h2"].to_numpy(),
                        "part": np.int32(part_no),
                        "shard": np.int32(s),
                        "g": hit["g"].to_numpy(),
                        "owner": pd.array(uniq[shard["owner"][hit["g"].to_numpy()]], _STR),
                    }
                )
            )
        out = pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        write_parquet_atomic(out, Path(owners_dir) / f"{part_no:06d}.parquet")

    # -- phase 4 ---------------------------------------------------------------------------
    def _apply(
        self,
        part: str,
        part_no: int,
        shards_dir: str,
        cross_dir: str,
        output_dir: str,
        log_dir: str,
    ) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        k, min_tokens = self.params.min_span_tokens, self.params.min_tokens
        table = pq.read_table(part)
        n = table.num_rows
        texts, ids = table["text"].to_pylist(), table["id"].to_pylist()
        keys = _segmenters(table)
        cross: dict[int, pd.DataFrame] = {}
        cross_path = Path(cross_dir) / f"part={part_no}"
        if cross_path.is_dir():
            df = pq.read_table(cross_path, columns=["shard", "g", "best"]).to_pandas()
            cross = {int(s): rows for s, rows in df.groupby("shard", sort=False)}
        new_texts: list[str | None] = list(texts)
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        spans_removed = np.zeros(n, np.int64)
        tokens_removed = np.zeros(n, np.int64)
        bytes_removed = np.zeros(n, np.int64)
        kept_by: list[str | None] = [None] * n
        samples: list[list[dict[str, str]] | None] = [None] * n
        tokens_in = 0
        for shard_file in sorted(Path(shards_dir).glob(f"{part_no:06d}-*.npz")):
            s = int(shard_file.stem.split("-")[1])
            shard = _load(shard_file)
            lo, hi = int(shard["lo"]), int(shard["hi"])
            doc_starts = shard["doc_starts"]
            tokens_in += int(doc_starts[-1]) - (hi - lo)
            owners = _owners(shard, ids[lo:hi], cross.get(s), k)
            if owners is None:
                continue
            removed, window_group, owner_id = owners
            per_doc = np.add.reduceat(removed.astype(np.int64), doc_starts[:-1])
            for d in np.flatnonzero(per_doc).tolist():
                row = lo + d
                a, b = int(doc_starts[d]), int(doc_starts[d + 1]) - 1  # b: the separator
                mask = removed[a:b]
                text = texts[row]
                spans = token_spans(text, keys[row])
                cut, sample = _cut(text, spans, mask, window_group[a:b], owner_id)
                gone, left = int(mask.sum()), int(b - a - mask.sum())
                new_texts[row] = cut
                spans_removed[row] = len(sample)
                tokens_removed[row] = gone
                bytes_removed[row] = _nbytes(text) - _nbytes(cut)
                kept_by[row] = sample[0]["kept_by"]
                samples[row] = sample[:SAMPLE_SPANS]
                if left < min_tokens or not cut.strip():
                    reasons[row] = REASON
                    details[row] = f"{left} tokens left after removing {gone}"
        reason_arr = pa.array(reasons, pa.string())
        kept = pc.is_null(reason_arr)
        rewritten = table.set_column(
            table.column_names.index("text"), "text", pa.array(new_texts, pa.large_string())
        )
        out = rewritten.filter(kept)
        name = Path(part).name
        write_parquet_atomic(out, Path(output_dir) / name)
        sample_type = pa.list_(pa.struct([("text", pa.string()), ("kept_by", pa.string())]))
        log = decision_log(
            table,
            kept,
            reason_arr,
            pa.array(details, pa.string()),
            {
                "spans_removed": pa.array(spans_removed, pa.int32()),
                "tokens_removed": pa.array(tokens_removed, pa.int64()),
                "bytes_removed": pa.array(bytes_removed, pa.int64()),
                "kept_by": pa.array(kept_by, pa.string()),
                "removed_spans": pa.array(samples, sample_type),
            },
        )
        write_parquet_atomic(log, Path(log_dir) / name)
        stats = StageStats(name=self.name, parts=1, docs_in=n, docs_out=out.num_rows)
        stats.bytes_in, stats.bytes_out = text_bytes(table), text_bytes(out)
        if n - out.num_rows:
            stats.drop(REASON, n - out.num_rows)
        stats.counters["tokens_in"] = tokens_in
        stats.counters["spans_removed"] = int(spans_removed.sum())
        stats.counters["tokens_removed"] = int(tokens_removed.sum())
        stats.counters["bytes_removed"] = int(bytes_removed.sum())
        stats.counters["docs_with_spans_removed"] = int((spans_removed > 0).sum())
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return stats.to_dict()


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return dict(npz)


def _rows(folder: Path) -> int:
    """Rows of a Parquet dataset, from the footers (0 when Dask wrote no file)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in folder.rglob("*.parquet"))


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted. ``np.unique`` took 90x as long as this on 6.5 M uint64
    (numpy 2.4)."""
    values = np.sort(values)
    keep = np.ones(values.size, bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _hash_rows(part_no: int, shard_nos: list[np.ndarray], **hashes: list[np.ndarray]) -> pa.Table:
    """A part's rows for a shuffle: the uint64 ``hashes`` columns (as int64), part, shard."""
    rows = int(sum(a.size for a in shard_nos))
    columns = {
        name: pa.array(np.concatenate(arrays).view(np.int64) if rows else [], pa.int64())
        for name, arrays in hashes.items()
    }
    columns["part"] = pa.array(np.full(rows, part_no, np.int32))
    columns["shard"] = pa.array(np.concatenate(shard_nos) if rows else [], pa.int32())
    return pa.table(columns)


# -- phases 1 and 2: the anchor and window shuffles ------------------------------------------
_ANCHOR_META = {"anchor": "int64", "part": "int32", "shard": "int32"}
_WINDOW_META = {"h1": "int64", "h2": "int64", "part": "int32", "shard": "int32"}


def _repeated(df: pd.DataFrame, meta: dict[str, str]) -> pd.DataFrame:
    """One partition shuffled on the first column of ``meta``: the rows whose hash (every
    column but part and shard) is in 2+ shards (a shard lists each of its hashes once)."""
    key = [c for c in meta if c not in ("part", "shard")]
    size = df.groupby(key, sort=False)["shard"].transform("size")
    return df[size > 1].astype(meta).reset_index(drop=True)


def _in_several_shards(src: Path, dest: Path, n_parts: int, meta: dict[str, str]) -> int:
    """Dask shuffle of the hash rows in ``src`` (columns ``meta``): write those whose hash occurs
    in more than one shard to ``dest``, partitioned by part; return how many rows that is."""
    import dask.dataframe as dd

    ddf = dd.read_parquet(str(src), columns=list(meta))
    split = max(1, min(n_parts, ddf.npartitions))
    shuffled = ddf.shuffle(on=next(iter(meta)), npartitions=split)
    shuffled.map_partitions(_repeated, meta, meta=meta).to_parquet(
        str(dest), partition_on=["part"], write_index=False
    )
    return _rows(dest)


# -- phase 3 (second half) ---------------------------------------------------------------
_CROSS_META = {"part": "int32", "shard": "int32", "g": "int64", "best": _STR}


def _best_owner(df: pd.DataFrame) -> pd.DataFrame:
    """One partition shuffled on ``h1``: each candidate's smallest id over every shard."""
    best = df.groupby(["h1", "h2"], sort=False)["owner"].transform("min")
    return pd.DataFrame(
        {"part": df["part"], "shard": df["shard"], "g": df["g"], "best": best}
    ).astype(_CROSS_META)


def _smallest_owner(owners_dir: Path, cross_dir: Path, n_parts: int) -> None:
    import dask.dataframe as dd

    ddf = dd.read_parquet(str(owners_dir))
    split = max(1, min(n_parts, ddf.npartitions))
    best = ddf.shuffle(on="h1", npartitions=split).map_partitions(_best_owner, meta=_CROSS_META)
    best.to_parquet(str(cross_dir), partition_on=["part"], write_index=False)


def _utf8_lengths(table: pa.Table) -> np.ndarray:
    lengths = pc.binary_length(table["text"].cast(pa.large_binary()))
    return np.asarray(pc.fill_null(lengths, 0).to_numpy(zero_copy_only=False), np.int64)


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _owners(
    shard: Any, ids: list[str | None], cross: pd.DataFrame | None, k: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Which tokens of the shard go: ``removed`` (bool per token), ``window_group`` (per token,
    the group of the removed window starting there, else -1) and ``owner_id`` (per group, the
    smallest id holding it, corpus-wide). None when the shard loses nothing."""
    grp, own = shard["grp"], shard["owner"]
    if not own.size:
        return None
    uniq, rank = _id_ranks(ids)
    doc_starts = shard["doc_starts"]
    doc_of = np.repeat(np.arange(len(ids), dtype=np.int32), np.diff(doc_starts))
    owner_id = uniq[own]
    external = np.zeros(own.size, bool)
    if cross is not None:
        g = cross["g"].to_numpy()
        best = cross["best"].to_numpy(dtype=object)
        smaller = (best < owner_id[g]).astype(bool)
        external[g[smaller]] = True
        owner_id[g[smaller]] = best[smaller]
    starts = np.flatnonzero(grp >= 0)
    g_at = grp[starts]
    dup = external[g_at] | (rank[doc_of[starts]] != own[g_at])
    if not dup.any():
        return None
    dup_starts = starts[dup]
    cover = np.zeros(grp.size + k, np.int32)
    cover[dup_starts] += 1
    cover[dup_starts + k] -= 1
    removed = np.cumsum(cover[: grp.size]) > 0
    window_group = np.full(grp.size, -1, np.int32)
    window_group[dup_starts] = g_at[dup]
    return removed, window_group, owner_id


def _cut(
    text: str, spans: np.ndarray, mask: np.ndarray, window_group: np.ndarray, owner_id: np.ndarray
) -> tuple[str, list[dict[str, str]]]:
    """Remove the runs of masked tokens from ``text``, each with the whitespace after it (or
    before it, at the end of the text); return the new text and one sample per run."""
    n = mask.size
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    run_starts, run_ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    pieces, sample, cursor = [], [], 0
    for a, b in zip(run_starts.tolist(), run_ends.tolist(), strict=True):
        start = int(spans[a, 0])
        if b < n:
            end = int(spans[b, 0])
        else:
            end = len(text)
            if a > 0:
                start = int(spans[a - 1, 1])
        pieces.append(text[cursor:start])
        cursor = end
        span_text = text[int(spans[a, 0]) : int(spans[b - 1, 1])]
        sample.append({"text": span_text[:SAMPLE_CHARS], "kept_by": owner_id[window_group[a]]})
    pieces.append(text[cursor:])
    return "".join(pieces), sample
