"""Word segmentation for scripts written without spaces (Chinese, Japanese, Thai, Khmer, ...).

Every word-based rule (heuristic filters' ``_words``, dedup_minhash's shingles, dedup_substring's
tokens, decontamination's n-grams) splits text on white space, which leaves a Chinese or Japanese
page as a handful of "words" of a whole line each. This module decides which documents need a
segmenter and splits them; every other document keeps its stage's own fast, vectorised splitter,
so space-delimited text (and its datatrove parity) does not change.

**Which documents.** Per document, from its ``language`` column when it has a value: lid.176 codes
(``zh``, ``ja``, ``th``, ``km``, ``lo``, ``my``, also ``yue``/``wuu``) and GlotLID labels by their
script (``cmn_Hani``, ``jpn_Jpan``, ``tha_Thai``, ``khm_Khmr``, ``lao_Laoo``, ``mya_Mymr``...).
A document whose language says otherwise (``en``, ``deu_Latn``) is never segmented. Without a
language (no column, or null) the characters decide: when letters of those scripts make up at least
:data:`SCRIPT_SHARE` of the document's letters, the most frequent one picks the segmenter (kana
present at >= :data:`KANA_SHARE` of Han + kana: Japanese). The heuristic filters' words are the
exception: a table without a ``language`` column is split as English there, as datatrove's
filters with their default language (``refine.filters.words``).

**How.** Only the runs of the segmenter's script (Han for Chinese; Han, kana and ``ー`` for
Japanese; Thai...) go through the segmenter; the text between runs (Latin words, digits, URLs,
punctuation) goes to the caller's own splitter, so "iPhone 12" or "2020-08-04" inside a Chinese
page splits exactly as it would in English.

**Segmenters** (those of datatrove 0.10.1, which FineWeb-2 ran, called directly rather than
through a spaCy pipeline; each loads once per process, on first use):

- Chinese: ``rjieba`` (jieba-rs: jieba's dictionary and HMM in Rust; datatrove uses jieba through
  spaCy). On Han runs it gives jieba's words; ~20x faster than jieba, a 3.7 MB wheel with the
  dictionary inside, no 0.6 s dictionary build per process.
- Japanese: ``sudachipy`` + ``sudachidict_core``, split mode A (as datatrove's Japanese tokenizer),
  surface forms only.
- Thai: ``pythainlp`` ``newmm-safe``. Lao: ``laonlp``. Khmer: ``khmer-nltk``. Myanmar:
  ``pyidaungsu-numpy2``'s word CRF, its model opened once per thread (its own ``tokenize`` opens
  it on every call). All as datatrove.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import threading
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

from refine.errors import ConfigError

LANGUAGE_COLUMN = "language"
#: Letters of a no-space script needed (fraction of all letters) to segment a document that has
#: no language: below it, a stray CJK name in an English page does not change how it splits.
SCRIPT_SHARE = 0.3
#: Kana among Han + kana from which an unlabelled Han page is Japanese, not Chinese.
KANA_SHARE = 0.1
#: Characters per segmenter call: Sudachi refuses inputs over ~49 kB; a longer run (no
#: punctuation for 10k characters) is cut, at worst splitting one word.
_MAX_RUN = 10_000

#: Per segmenter: the characters of its runs (``regex`` syntax).
RUN_CLASSES = {
    "zh": r"\p{Han}",
    "ja": r"\p{Han}\p{Hiragana}\p{Katakana}\u30FC\u3005",
    "th": r"\p{Thai}",
    "lo": r"\p{Lao}",
    "km": r"\p{Khmer}",
    "my": r"\p{Myanmar}",
}
#: Which script each detected segmenter is counted by (Han and kana together pick zh or ja).
_SCRIPT_COUNT = {
    "han": r"\p{Han}",
    "kana": r"\p{Hiragana}\p{Katakana}",
    "th": r"\p{Thai}",
    "lo": r"\p{Lao}",
    "km": r"\p{Khmer}",
    "my": r"\p{Myanmar}",
}
_ANY_NOSPACE = "[" + "".join(_SCRIPT_COUNT.values()) + "]"

#: lid.176 / ISO 639 codes (first part of a label) that take a segmenter.
_BY_CODE = {
    "zh": "zh", "zho": "zh", "cmn": "zh", "yue": "zh", "wuu": "zh", "gan": "zh", "lzh": "zh",
    "hak": "zh", "nan": "zh", "ja": "ja", "jpn": "ja", "th": "th", "tha": "th", "lo": "lo",
    "lao": "lo", "km": "km", "khm": "km", "my": "my", "mya": "my",
}  # fmt: skip
#: GlotLID / ISO 15924 scripts (second part of a label) that take a segmenter.
_BY_SCRIPT = {
    "hani": "zh", "hans": "zh", "hant": "zh", "jpan": "ja", "hira": "ja", "kana": "ja",
    "thai": "th", "laoo": "lo", "khmr": "km", "mymr": "my",
}  # fmt: skip
#: Pip packages each segmenter needs (for the error message when one is missing).
PACKAGES = {
    "zh": ("rjieba",),
    "ja": ("sudachipy", "sudachidict_core"),
    "th": ("pythainlp",),
    "lo": ("laonlp",),
    "km": ("khmer-nltk",),
    "my": ("pyidaungsu-numpy2",),
}
_MODULES = {
    "zh": ("rjieba",),
    "ja": ("sudachipy", "sudachidict_core"),
    "th": ("pythainlp",),
    "lo": ("laonlp",),
    "km": ("khmernltk",),
    "my": ("pyidaungsu",),
}


@functools.lru_cache(maxsize=4096)
def segmenter_for_language(label: str | None) -> str | None:
    """The segmenter (``zh``, ``ja``, ``th``, ``lo``, ``km``, ``my``) of a language label, or
    None when the language is written with spaces. ``zh``, ``zh-TW``, ``cmn_Hani``: ``zh``."""
    if not label:
        return None
    parts = regex.split(r"[_\-]", label.strip().lower())
    if len(parts) > 1 and parts[1] in _BY_SCRIPT:
        return _BY_SCRIPT[parts[1]]
    return _BY_CODE.get(parts[0])


def segmenters(
    texts: pa.Array | pa.ChunkedArray, languages: pa.Array | pa.ChunkedArray | None = None
) -> np.ndarray | None:
    """Per document, its segmenter or None (object array); None when no document needs one.

    Vectorised: labels are mapped once per distinct value, and the script of unlabelled
    documents is counted with RE2 only on those that contain a no-space letter at all.
    """
    n = len(texts)
    keys = np.full(n, None, dtype=object)
    unlabelled = np.ones(n, bool)
    if languages is not None and n:
        enc = pc.dictionary_encode(_combine(languages))
        mapped = np.array(
            [segmenter_for_language(v) for v in enc.dictionary.to_pylist()] + [None], object
        )
        idx = np.asarray(pc.fill_null(enc.indices, len(enc.dictionary)).to_numpy(False))
        keys = mapped[idx]
        unlabelled = np.asarray(pc.is_null(enc.indices).to_numpy(False), bool)
    if unlabelled.any():
        texts = _combine(texts)
        cand = np.flatnonzero(unlabelled)
        sub = texts.take(pa.array(cand)) if len(cand) < n else texts
        has = np.asarray(pc.fill_null(pc.match_substring_regex(sub, _ANY_NOSPACE), False))
        if has.any():
            rows = cand[has]
            keys[rows] = _by_script(sub.filter(pa.array(has)))
    if not any(k is not None for k in keys):
        return None
    return keys


def _kept_chars(texts: pa.Array, chars: str) -> tuple[pa.Array, np.ndarray]:
    """``texts`` reduced to the characters of the class body ``chars``, and their counts."""
    kept = pc.replace_substring_regex(texts, f"[^{chars}]+", "")
    return kept, np.asarray(pc.utf8_length(kept).to_numpy(False), np.float64)


def _by_script(texts: pa.Array) -> np.ndarray:
    # deleting long runs of other characters is one cheap RE2 pass; counting single-character
    # matches would cost a match per character
    _, letters = _kept_chars(texts, r"\pL")
    nospace, _ = _kept_chars(texts, _ANY_NOSPACE[1:-1])
    counts = {k: _kept_chars(nospace, c)[1] for k, c in _SCRIPT_COUNT.items()}
    han_kana = counts["han"] + counts["kana"]
    cjk = np.where(counts["kana"] >= KANA_SHARE * np.maximum(han_kana, 1), "ja", "zh")
    names = ["cjk", "th", "lo", "km", "my"]
    table = np.stack([han_kana] + [counts[k] for k in names[1:]])
    best = table.argmax(axis=0)
    share = table.max(axis=0) / np.maximum(letters, 1)
    out = np.full(len(texts), None, dtype=object)
    for i in np.flatnonzero(share >= SCRIPT_SHARE):
        out[i] = str(cjk[i]) if best[i] == 0 else names[best[i]]
    return out


# -- splitting one document -------------------------------------------------------------------


@functools.cache
def _run_re(key: str):
    return regex.compile(f"[{RUN_CLASSES[key]}]+")


def runs(text: str, key: str) -> Iterator[tuple[bool, int, int]]:
    """``(is_run, start, end)`` pieces covering ``text`` in order: runs of ``key``'s script (at
    most ``_MAX_RUN`` characters each) and the non-empty gaps between them."""
    pos = 0
    for m in _run_re(key).finditer(text):
        a, b = m.span()
        if a > pos:
            yield False, pos, a
        for lo in range(a, b, _MAX_RUN):
            yield True, lo, min(b, lo + _MAX_RUN)
        pos = b
    if pos < len(text):
        yield False, pos, len(text)


def segment_run(run: str, key: str) -> list[str]:
    """The words of one run of ``key``'s script (no white space inside), in order; they
    concatenate back to ``run``."""
    return _SEGMENT[key](run)


def split_words(text: str, key: str, split_gap: Callable[[str], Iterable[str]]) -> list[str]:
    """Words of ``text``: runs of ``key``'s script by its segmenter, the rest by ``split_gap``."""
    out: list[str] = []
    seg = _SEGMENT[key]
    for is_run, a, b in runs(text, key):
        if is_run:
            out.extend(seg(text[a:b]))
        else:
            out.extend(split_gap(text[a:b]))
    return out


def word_spans(
    text: str, key: str, gap_spans: Callable[[str], Iterable[tuple[int, int]]]
) -> list[tuple[int, int]]:
    """``(start, end)`` character offsets of the words of ``split_words`` (``gap_spans`` gives the
    offsets of a gap's words relative to the gap)."""
    out: list[tuple[int, int]] = []
    seg = _SEGMENT[key]
    for is_run, a, b in runs(text, key):
        if is_run:
            pos = a
            for w in seg(text[a:b]):
                out.append((pos, pos + len(w)))
                pos += len(w)
        else:
            out.extend((a + s, a + e) for s, e in gap_spans(text[a:b]))
    return out


def spaced(
    texts: pa.Array | pa.ChunkedArray,
    languages: pa.Array | pa.ChunkedArray | None = None,
    keys: np.ndarray | None = None,
) -> pa.Array | pa.ChunkedArray:
    """``texts`` with each document that needs segmentation rewritten as its words joined by
    single spaces (runs by the segmenter, the rest split on white space); the others, and the
    whole array when none needs it, unchanged. For whitespace splitters downstream (MinHash
    shingles, decontamination n-grams): they then see words, and still run vectorised."""
    if keys is None:
        keys = segmenters(texts, languages)
    if keys is None:
        return texts
    texts = _combine(texts)
    rows = np.flatnonzero(keys != None)  # noqa: E711 (element-wise)
    values = texts.take(pa.array(rows)).to_pylist()
    joined = [
        None if t is None else " ".join(split_words(t, k, str.split))
        for t, k in zip(values, keys[rows], strict=True)
    ]
    mask = np.zeros(len(texts), bool)
    mask[rows] = True
    replacement = pa.array(joined, texts.type)
    return pc.replace_with_mask(texts, pa.array(mask), replacement)


def check_available(keys: Iterable[str] = tuple(PACKAGES)) -> None:
    """Raise ``ConfigError`` naming the pip packages missing for the segmenters ``keys``. Cheap
    (nothing is imported): call it when a stage is built, so a missing segmenter is not
    discovered hours into a run at the first Thai page."""
    missing = [
        package
        for key in keys
        for package, module in zip(PACKAGES[key], _MODULES[key], strict=True)
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise ConfigError(
            "word segmentation for scripts without spaces needs: pip install " + " ".join(missing)
        )


# -- the segmenters (loaded once per process, on first use) ------------------------------------


def _load_zh():
    import rjieba

    return rjieba.cut


_sudachi = threading.local()  # a Sudachi tokenizer is not safe to share between threads
_crf = threading.local()  # nor is a CRFsuite tagger


def _load_ja():
    from sudachipy import Dictionary, SplitMode

    return Dictionary(), SplitMode.A


def _load_th():
    from pythainlp.tokenize import word_tokenize

    return word_tokenize


def _load_lo():
    from laonlp.tokenize import word_tokenize

    return word_tokenize


def _load_km():
    from khmernltk import word_tokenize

    return word_tokenize


def _load_my():
    # the module, not the package's function of the same name
    module = importlib.import_module("pyidaungsu.tokenize")
    model = os.path.join(os.path.dirname(module.__file__), "model", "tokenizer.crfsuite")
    return module.Tokenize(), model


_LOADERS = {
    "zh": _load_zh,
    "ja": _load_ja,
    "th": _load_th,
    "lo": _load_lo,
    "km": _load_km,
    "my": _load_my,
}
_loaded: dict[str, object] = {}


def _get(key: str):
    """The loaded segmenter of ``key`` (imported once per process)."""
    got = _loaded.get(key)
    if got is None:
        try:
            got = _loaded[key] = _LOADERS[key]()
        except ImportError as e:
            raise ConfigError(
                f"segmenting {key!r} text needs the package(s) {', '.join(PACKAGES[key])} "
                f"(pip install {' '.join(PACKAGES[key])}): {e}"
            ) from e
    return got


def _exact(run: str, words: list[str]) -> list[str]:
    """Words that concatenate to ``run`` (a segmenter that dropped or normalised characters is
    realigned on the run's characters; empty words are dropped)."""
    words = [w for w in words if w]
    if sum(map(len, words)) == len(run) and "".join(words) == run:
        return words
    out, pos = [], 0
    for w in words:
        at = run.find(w, pos)
        if at < 0:
            continue
        if at > pos:
            out.append(run[pos:at])
        out.append(w)
        pos = at + len(w)
    if pos < len(run):
        out.append(run[pos:])
    return out


def _seg_zh(run: str) -> list[str]:
    return _exact(run, _get("zh")(run))


def _seg_ja(run: str) -> list[str]:
    tok = getattr(_sudachi, "tokenizer", None)
    if tok is None:
        dictionary, mode = _get("ja")
        tok = _sudachi.tokenizer = dictionary.tokenizer(mode, fields={"surface"})
    return _exact(run, [m.surface() for m in tok.tokenize(run)])


def _seg_th(run: str) -> list[str]:
    return _exact(run, _get("th")(run, engine="newmm-safe", keep_whitespace=False))


def _seg_lo(run: str) -> list[str]:
    return _exact(run, _get("lo")(run))


def _seg_km(run: str) -> list[str]:
    return _exact(run, _get("km")(run, return_tokens=True))


def _seg_my(run: str) -> list[str]:
    tokenizer, model = _get("my")
    tagger = getattr(_crf, "my", None)
    if tagger is None:
        import pycrfsuite

        tagger = _crf.my = pycrfsuite.Tagger()
        tagger.open(model)
    return _exact(run, tokenizer.segment_sentence(tagger, run).split())


_SEGMENT: dict[str, Callable[[str], list[str]]] = {
    "zh": _seg_zh,
    "ja": _seg_ja,
    "th": _seg_th,
    "lo": _seg_lo,
    "km": _seg_km,
    "my": _seg_my,
}


def _combine(arr):
    if isinstance(arr, pa.ChunkedArray):
        return arr.combine_chunks() if arr.num_chunks else pa.array([], arr.type)
    return arr
