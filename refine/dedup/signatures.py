"""MinHash signatures of whole batches of documents, vectorised with Arrow and NumPy.

The unit of work is an Arrow string array (a batch of documents), never one Python object per
document or per n-gram:

1. normalise (Arrow compute kernels, as datatrove's ``simplify_text``): NFD without combining
   marks (diacritics), lower case, numbers -> ``0``, punctuation and symbols -> space, then split
   on whitespace (documents in a script written without spaces are segmented into words first:
   ``refine.pipeline.segment``);
2. hash every word (a polynomial hash over the UTF-8 bytes, computed for all words of the batch
   at once with ``np.add.reduceat``), then every word n-gram (shingle) from its words' hashes;
3. the signature of a document is, per permutation, the minimum over its shingles of
   datasketch's ``affine32`` permutation ``a * fmix32(h) + b mod 2**32`` with datasketch's own
   ``(a, b)`` for the seed, so a signature equals ``datasketch.MinHash(num_perm, seed)`` fed with
   the same 32-bit shingle hashes (the tests check this). The ``(a, b)`` are drawn as datasketch
   draws them (:func:`affine32_permutations`) rather than by building a ``datasketch.MinHash``:
   importing datasketch pulls in ``scipy.integrate`` through its LSH module, ~0.5 CPU-s in every
   process that computes signatures, for two NumPy draws; the tests compare both for many seeds.

Documents with fewer words than the n-gram size have no shingle and no signature (as datatrove);
they take no part in near-duplicate detection (``dedup_exact`` still sees them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refine.pipeline import segment

_M64 = (
    np.uint64(0xFF51AFD7ED558CCD),
    np.uint64(0xC4CEB9FE1A85EC53),
)
_WORD_BASE = np.uint64(0x100000001B3 * 2 + 1)  # odd: powers never become 0 mod 2**64
_SHINGLE_MUL = np.uint64(0x9E3779B97F4A7C15)
#: shingles per NumPy block when taking minima: bounds the (num_perm x block) uint32 matrix
#: (3.5 MiB at 112 permutations, 128 MiB at the largest signature, 4096)
_BLOCK = 1 << 13

_DIACRITICS = r"\p{Mn}"
_NUMBERS = r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?"
_PUNCTUATION = r"[\p{P}\p{S}]"


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that avalanches), element-wise."""
    h = h ^ (h >> np.uint64(33))
    h = h * _M64[0]
    h = h ^ (h >> np.uint64(33))
    h = h * _M64[1]
    return h ^ (h >> np.uint64(33))


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finaliser, as datasketch's ``affine32`` scheme pre-mixes inputs."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def normalize(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """datatrove's ``simplify_text`` as Arrow kernels: one pass per rule over the whole batch."""
    t = pc.utf8_normalize(texts, "NFD")
    t = pc.replace_substring_regex(t, _DIACRITICS, "")
    t = pc.utf8_lower(t)
    t = pc.replace_substring_regex(t, _NUMBERS, "0")
    return pc.replace_substring_regex(t, _PUNCTUATION, " ")


def _flat_strings(words: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 relative to the data, UTF-8 bytes) of a string array without copies."""
    words = words.cast(pa.large_string())
    if isinstance(words, pa.ChunkedArray):
        words = words.combine_chunks()
    _, off_buf, data_buf = words.buffers()
    offsets = np.frombuffer(off_buf, np.int64)[words.offset : words.offset + len(words) + 1]
    data = np.frombuffer(data_buf, np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    return offsets - offsets[0], data[offsets[0] : offsets[-1]]


def word_hashes(words: pa.Array) -> np.ndarray:
    """A 64-bit hash of every (non-empty) word, all words of the array in one NumPy pass."""
    offsets, data = _flat_strings(words)
    n = len(offsets) - 1
    if n == 0:
        return np.zeros(0, np.uint64)
    starts = offsets[:-1]
    lengths = np.diff(offsets)
    pos = np.arange(len(data), dtype=np.int64) - np.repeat(starts, lengths)
    powers = np.cumprod(np.full(int(lengths.max()), _WORD_BASE, dtype=np.uint64))
    values = (data.astype(np.uint64) + np.uint64(1)) * powers[pos]
    h = np.add.reduceat(values, starts) if len(data) else np.zeros(n, np.uint64)
    return fmix64(h ^ lengths.astype(np.uint64))


@dataclass
class Shingles:
    """The word n-grams of a batch: one 64-bit hash per shingle, grouped by document."""

    hashes: np.ndarray  # uint64, the shingles of document 0, then of document 1, ...
    counts: np.ndarray  # int64 per document (0: fewer words than the n-gram size, or null)


def shingles(
    texts: pa.Array | pa.ChunkedArray,
    ngram: int,
    languages: pa.Array | pa.ChunkedArray | None = None,
) -> Shingles:
    """Hashes of the word ``ngram``-grams of every document of a batch (normalised text).

    Documents in a script written without spaces (by ``languages``, one label per document,
    else by their characters) are first segmented into words (``refine.pipeline.segment``):
    whitespace shingles of a Chinese page are whole lines, so one edit anywhere in a line
    changes every shingle over it. The segmenter sees the raw text (it needs the diacritics and
    punctuation that normalising removes); its words are then normalised like all others.
    """
    lists = pc.utf8_split_whitespace(normalize(segment.spaced(texts, languages)))
    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    flat = pc.list_flatten(lists)
    nonempty = pc.greater(pc.binary_length(flat), 0)  # split leaves "" at the ends
    parents = pc.list_parent_indices(lists).filter(nonempty).to_numpy()
    n_words = np.bincount(parents, minlength=len(lists)).astype(np.int64)
    w = word_hashes(flat.filter(nonempty))
    counts = np.maximum(n_words - (ngram - 1), 0)
    if w.size < ngram:
        return Shingles(np.zeros(0, np.uint64), counts)
    h = w[: w.size - ngram + 1].copy()
    for k in range(1, ngram):
        h = fmix64(h * _SHINGLE_MUL + w[k : w.size - ngram + 1 + k])
    # shingle i is valid when its last word is in the same document as its first
    ends = np.cumsum(n_words)
    doc_of = np.repeat(np.arange(len(n_words)), n_words)[: h.size]
    valid = np.arange(h.size) + ngram <= ends[doc_of]
    return Shingles(h[valid], counts)


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of ``datasketch.MinHash(num_perm, seed=seed, scheme="affine32")``: the same
    ``RandomState`` draws in the same order (datasketch 2.x ``_init_permutations``): ``a`` odd,
    so ``h -> a * h + b mod 2**32`` is a bijection."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class MinHasher:
    """datasketch-compatible MinHash (``affine32`` scheme) over word n-grams, by batches."""

    def __init__(self, num_perm: int, seed: int, ngram: int):
        self.a, self.b = affine32_permutations(num_perm, seed)
        self.num_perm, self.seed, self.ngram = num_perm, seed, ngram

    def from_hashes(self, hashes32: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Signatures (documents x num_perm, uint32) from 32-bit shingle hashes grouped by
        document; a document without shingles gets all 0xFFFFFFFF (datasketch's empty value).

        The permuted values are one (num_perm x block) matrix, reused for every block: each
        permutation's row is contiguous, so the per-document minima reduce along memory order
        (measured: 6x less CPU than a fresh (block x num_perm) matrix per block)."""
        n = len(counts)
        sig = np.full((n, self.num_perm), np.iinfo(np.uint32).max, np.uint32)
        if hashes32.size == 0:
            return sig
        hv = fmix32(hashes32.astype(np.uint32))
        doc_of = np.repeat(np.arange(n), counts)
        a, b = self.a[:, None], self.b[:, None]
        buf = np.empty((self.num_perm, min(_BLOCK, hv.size)), np.uint32)
        for lo in range(0, hv.size, _BLOCK):
            block = hv[lo : lo + _BLOCK]
            docs = doc_of[lo : lo + _BLOCK]
            phv = buf[:, : block.size]
            np.multiply(a, block[None, :], out=phv)
            phv += b
            starts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
            mins = np.minimum.reduceat(phv, starts, axis=1).T
            rows = docs[starts]  # distinct within a block
            sig[rows] = np.minimum(sig[rows], mins)
        return sig

    def signatures(
        self,
        texts: pa.Array | pa.ChunkedArray,
        languages: pa.Array | pa.ChunkedArray | None = None,
    ) -> tuple[np.ndarray, Shingles]:
        """(signatures, shingles) of a batch of documents (``languages``: see :func:`shingles`)."""
        sh = shingles(texts, self.ngram, languages)
        return self.from_hashes(shingle_hashes32(sh.hashes), sh.counts), sh


def shingle_hashes32(hashes: np.ndarray) -> np.ndarray:
    """The 32-bit value a shingle contributes (the high half of its 64-bit hash)."""
    return (hashes >> np.uint64(32)).astype(np.uint32)


def band_keys(sig: np.ndarray, num_bands: int, rows_per_band: int) -> np.ndarray:
    """One 64-bit bucket key per (document, band): a hash of the band's number and its rows,
    so equal keys mean equal bands (up to 64-bit collisions), never equal rows of two bands."""
    n = sig.shape[0]
    bands = sig[:, : num_bands * rows_per_band].reshape(n, num_bands, rows_per_band)
    h = np.broadcast_to(
        fmix64(np.arange(1, num_bands + 1, dtype=np.uint64) * _SHINGLE_MUL), (n, num_bands)
    ).copy()
    for r in range(rows_per_band):
        h = fmix64(h * _SHINGLE_MUL + bands[:, :, r].astype(np.uint64))
    return h.view(np.int64)


def sorted_unique_sets(sh: Shingles) -> pa.Array:
    """Each document's set of shingle hashes (sorted, unique uint64) as bytes: a large_binary
    array built from two buffers, for the optional true-Jaccard check of candidate pairs."""
    n = len(sh.counts)
    doc_of = np.repeat(np.arange(n), sh.counts)
    order = np.lexsort((sh.hashes, doc_of))
    h, d = sh.hashes[order], doc_of[order]
    keep = np.r_[True, (h[1:] != h[:-1]) | (d[1:] != d[:-1])] if h.size else np.zeros(0, bool)
    h, d = h[keep], d[keep]
    per_doc = np.bincount(d, minlength=n).astype(np.int64)
    offsets = np.r_[0, np.cumsum(per_doc * 8)].astype(np.int64)
    return pa.Array.from_buffers(
        pa.large_binary(),
        n,
        [None, pa.py_buffer(offsets.tobytes()), pa.py_buffer(h.astype("<u8").tobytes())],
    )


def jaccard_of_sets(a: bytes, b: bytes) -> float:
    """Jaccard similarity of two ``sorted_unique_sets`` entries."""
    x, y = np.frombuffer(a, "<u8"), np.frombuffer(b, "<u8")
    if not x.size and not y.size:
        return 1.0
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / (x.size + y.size - inter)
