"""Language identification with a fastText model (lid.176 by default), as FineWeb / datatrove do.

The top label and its probability are kept as the ``language`` / ``language_score`` columns
(DESIGN.md), so a later run can re-select languages or re-tune ``min_score`` on the saved signals
(both are ``thresholds``: changing them does not re-run the model). A document is kept when its top
language is wanted and scores above ``min_score`` (strictly). That is datatrove's ``LanguageFilter``
decision whenever ``min_score >= 0.5``; below that datatrove also keeps a document whose *second*
language is wanted and above the threshold (e.g. mostly German, 30% English, kept as English),
which we do not.

Two backends: ``lid176`` (fastText's lid.176, ISO 639 labels such as ``de``; the default) and
``glotlid`` (GlotLID, ``cis-lmu/glotlid``, FineWeb-2's language ID: labels such as ``deu_Latn``,
language and script). The ``language_script`` column holds the document's ISO 15924 script: from
the label with GlotLID (``deu_Latn`` -> ``Latn``), from the characters with lid.176 (the script
most of the letters of the first ``SCRIPT_SAMPLE_CHARS`` characters are in; ``Jpan`` for Han
mixed with kana; null when there are no letters).

``min_score`` is one threshold, a threshold per language (``{deu_Latn: 0.82, fra_Latn: 0.82}``;
the others get the table's ``default`` entry, else 0.65), or ``fineweb2``: FineWeb-2's
per-language ``language_score`` thresholds (20 languages, shipped in ``assets/fineweb2``; they
were set on GlotLID's probabilities). Table keys may be GlotLID labels or lid.176 codes (``de``
means ``deu_Latn``).
"""

from __future__ import annotations

import os
import re
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from refine.errors import ConfigError
from refine.models import (
    DEFAULT_LID_MODEL,
    check_fasttext_model,
    fasttext_labels,
    fasttext_model,
)
from refine.pipeline.stage import FilterStage, StageParams

_LABEL_PREFIX = "__label__"
#: Documents predicted per call into fastText (one call per batch, not one per document).
_BATCH = 1024
#: GlotLID's model on the Hugging Face hub (FineWeb-2 used its v3, ``model.bin``).
GLOTLID_MODEL = "hf://cis-lmu/glotlid/model.bin"
#: The file a bare hub id (``OWNER/NAME``) means for the glotlid backend.
GLOTLID_FILE = "model.bin"
#: Per-language thresholds by name: ``fineweb2`` is FineWeb-2's ``language_score`` table.
FINEWEB2 = "fineweb2"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
#: Characters of a document that ``language_script`` reads with lid.176 (from the start).
SCRIPT_SAMPLE_CHARS = 2000
#: The threshold of a language without an entry in a ``min_score`` table (and the default).
DEFAULT_MIN_SCORE = 0.65
#: The ``min_score`` table key whose value applies to the languages the table does not list.
OTHER_LANGUAGES = "default"


class LanguageParams(StageParams):
    backend: Literal["lid176", "glotlid"] = "lid176"
    """``lid176``: fastText's lid.176 (ISO 639 labels: ``en``, ``de``); ``glotlid``: GlotLID
    (FineWeb-2's language ID; labels ``eng_Latn``, ``deu_Latn``: language and script)."""
    languages: list[str] | None = Field(
        default=["en"],
        description="labels to keep (lid.176: ISO 639 codes such as en, de, zh; GlotLID: eng_Latn);"
        " empty or null: any language, still subject to min_score. Default: en (lid176),"
        " eng_Latn (glotlid)",
    )
    min_score: float | dict[str, float] | Literal["fineweb2"] = Field(
        default=DEFAULT_MIN_SCORE,
        description="a wanted language's probability must be above this to keep the document:"
        " one number, a number per language ({deu_Latn: 0.82, ...}: GlotLID labels or lid.176"
        " codes; a `default` entry for the other languages, else 0.65), or fineweb2 (FineWeb-2's"
        " language_score per language, set on GlotLID's probabilities)",
    )
    model: str = Field(
        default=DEFAULT_LID_MODEL,
        description="fastText model: local path, pkg://PACKAGE/FILE or hf://OWNER/REPO/FILE;"
        " with backend glotlid also a hub id (cis-lmu/glotlid: its model.bin). Default: the"
        " packaged lid.176 (lid176), hf://cis-lmu/glotlid/model.bin (glotlid)",
    )

    @model_validator(mode="before")
    @classmethod
    def _backend_defaults(cls, data: Any) -> Any:
        """GlotLID's own defaults for ``model`` and ``languages``; a hub id as its file."""
        if not isinstance(data, dict) or data.get("backend") != "glotlid":
            return data
        data = dict(data)
        data.setdefault("languages", ["eng_Latn"])
        model = data.setdefault("model", GLOTLID_MODEL)
        if isinstance(model, str) and _HUB_ID.match(model) and not os.path.exists(model):
            data["model"] = f"hf://{model}/{GLOTLID_FILE}"
        return data

    @model_validator(mode="after")
    def _scores_in_range(self) -> LanguageParams:
        table = self.min_score if isinstance(self.min_score, dict) else {"": self.min_score}
        if isinstance(self.min_score, str):
            table = {}
        for label, value in table.items():
            if not isinstance(value, float | int) or not 0 <= value <= 1:
                where = f"min_score.{label}" if label else "min_score"
                raise ValueError(f"{where}: a probability between 0 and 1, got {value!r}")
        return self


def score_thresholds(params: LanguageParams) -> dict[str, float] | None:
    """``min_score`` as a table label -> threshold (None when it is one number)."""
    if isinstance(params.min_score, float | int):
        return None
    if params.min_score == FINEWEB2:
        from refine.filters.languages import fineweb2_table

        return {k: float(v["language_score"]) for k, v in fineweb2_table().items()}
    return {k: float(v) for k, v in params.min_score.items()}


def row_thresholds(langs: pa.Array | pa.ChunkedArray, params: LanguageParams) -> pa.Array:
    """Per document, the threshold of its language (the table's ``default`` entry, else
    ``DEFAULT_MIN_SCORE``, without an entry), looked up once per distinct label: a lid.176 code
    finds its GlotLID key (``de`` -> ``deu_Latn``), and the reverse, through
    ``refine.filters.languages.resolve``."""
    table = score_thresholds(params)
    n = len(langs)
    if table is None:
        return pa.array(np.full(n, params.min_score, np.float32))
    from refine.filters.languages import ISO1_TO_LABEL, resolve

    table = dict(table)
    other = table.pop(OTHER_LANGUAGES, DEFAULT_MIN_SCORE)
    # keys given as lid.176 codes are GlotLID labels for ``resolve``
    by_label = {ISO1_TO_LABEL.get(k, k): v for k, v in table.items()}
    keys = frozenset(by_label)
    codes = pc.fill_null(pc.cast(langs, pa.string()), "")
    codes = codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes
    encoded = codes.dictionary_encode()
    per_label = np.array(
        [by_label.get(resolve(code, keys), other) for code in encoded.dictionary.to_pylist()],
        np.float32,
    )
    indices = encoded.indices.to_numpy(zero_copy_only=False)
    return pa.array(per_label[indices] if n else np.zeros(0, np.float32))


#: (first code point, last code point, ISO 15924 script) of the blocks ``text_scripts`` counts.
_SCRIPT_RANGES = [
    (0x0041, 0x005A, "Latn"),
    (0x0061, 0x007A, "Latn"),
    (0x00C0, 0x024F, "Latn"),
    (0x0370, 0x03FF, "Grek"),
    (0x0400, 0x052F, "Cyrl"),
    (0x0530, 0x058F, "Armn"),
    (0x0590, 0x05FF, "Hebr"),
    (0x0600, 0x06FF, "Arab"),
    (0x0700, 0x074F, "Syrc"),
    (0x0750, 0x077F, "Arab"),
    (0x0780, 0x07BF, "Thaa"),
    (0x08A0, 0x08FF, "Arab"),
    (0x0900, 0x097F, "Deva"),
    (0x0980, 0x09FF, "Beng"),
    (0x0A00, 0x0A7F, "Guru"),
    (0x0A80, 0x0AFF, "Gujr"),
    (0x0B00, 0x0B7F, "Orya"),
    (0x0B80, 0x0BFF, "Taml"),
    (0x0C00, 0x0C7F, "Telu"),
    (0x0C80, 0x0CFF, "Knda"),
    (0x0D00, 0x0D7F, "Mlym"),
    (0x0D80, 0x0DFF, "Sinh"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Laoo"),
    (0x0F00, 0x0FFF, "Tibt"),
    (0x1000, 0x109F, "Mymr"),
    (0x10A0, 0x10FF, "Geor"),
    (0x1100, 0x11FF, "Hang"),
    (0x1200, 0x139F, "Ethi"),
    (0x1780, 0x17FF, "Khmr"),
    (0x1800, 0x18AF, "Mong"),
    (0x1E00, 0x1EFF, "Latn"),
    (0x1F00, 0x1FFF, "Grek"),
    (0x3040, 0x309F, "Hira"),
    (0x30A0, 0x30FF, "Kana"),
    (0x3130, 0x318F, "Hang"),
    (0x31F0, 0x31FF, "Kana"),
    (0x3400, 0x4DBF, "Hani"),
    (0x4E00, 0x9FFF, "Hani"),
    (0xAC00, 0xD7AF, "Hang"),
    (0xF900, 0xFAFF, "Hani"),
    (0xFB50, 0xFDFF, "Arab"),
    (0xFE70, 0xFEFF, "Arab"),
    (0xFF66, 0xFF9F, "Kana"),
    (0x20000, 0x3FFFF, "Hani"),
]
_SCRIPT_NAMES = sorted({name for _, _, name in _SCRIPT_RANGES})
_STARTS = np.array([lo for lo, _, _ in _SCRIPT_RANGES], np.uint32)
_ENDS = np.array([hi for _, hi, _ in _SCRIPT_RANGES], np.uint32)
_CODES = np.array([_SCRIPT_NAMES.index(name) for _, _, name in _SCRIPT_RANGES], np.int64)
_JAPANESE = [_SCRIPT_NAMES.index(s) for s in ("Hani", "Hira", "Kana")]
_KANA = [_SCRIPT_NAMES.index(s) for s in ("Hira", "Kana")]


def text_script(text: str | None) -> str | None:
    """The ISO 15924 script most letters of ``text``'s first ``SCRIPT_SAMPLE_CHARS``
    characters are in (``Jpan`` when Han and kana together lead and kana is present), or None
    when none of them is a letter of a script counted here. A block lookup on code points
    (NumPy), not a per-character loop."""
    if not text:
        return None
    points = np.frombuffer(text[:SCRIPT_SAMPLE_CHARS].encode("utf-32-le", "replace"), np.uint32)
    at = np.searchsorted(_STARTS, points, side="right") - 1
    inside = (at >= 0) & (points <= _ENDS[np.maximum(at, 0)])
    if not inside.any():
        return None
    counts = np.bincount(_CODES[at[inside]], minlength=len(_SCRIPT_NAMES))
    japanese = counts[_JAPANESE].sum()
    if counts[_KANA].sum() and japanese >= counts.max():
        return "Jpan"
    return _SCRIPT_NAMES[int(counts.argmax())]


def label_script(label: str) -> str | None:
    """The script subtag of a GlotLID label (``deu_Latn`` -> ``Latn``), None without one."""
    _, sep, script = label.rpartition("_")
    return script if sep and len(script) == 4 and script[0].isupper() else None


class LanguageFilter(FilterStage):
    """Drops documents not in ``languages`` (``language_not_wanted``) or identified with too little
    confidence (``language_low_score``)."""

    name = "language"
    libraries = ("fasttext",)
    Params = LanguageParams
    model_params = ("model",)
    thresholds = frozenset({"languages", "min_score"})

    def check(self) -> None:
        check_fasttext_model(self.params.model)
        if self.params.backend != "glotlid":
            return
        # GlotLID's labels name a script; a wanted label the model cannot output is a typo
        labels = {lab.removeprefix(_LABEL_PREFIX) for lab in fasttext_labels(self.params.model)}
        if not any(label_script(label) for label in labels):
            raise ConfigError(
                f"language: model {self.params.model!r} is not a GlotLID model (backend: "
                f"glotlid): its labels have no script ({', '.join(sorted(labels)[:5])}, ...)"
            )
        missing = sorted(set(self.params.languages or ()) - labels)
        if missing:
            raise ConfigError(
                f"language: languages: {', '.join(missing)} is not a label of the model "
                f"{self.params.model!r} (GlotLID labels look like deu_Latn)"
            )

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        model = fasttext_model(self.params.model)
        # fastText predicts one line: newlines become spaces, as datatrove does.
        texts = pc.replace_substring(pc.fill_null(table["text"], ""), "\n", " ").to_pylist()
        labels: list[str] = []
        scores = np.zeros(len(texts), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            got_labels, got_scores = model.predict(texts[start : start + _BATCH], k=1)
            for j, (labs, scs) in enumerate(zip(got_labels, got_scores, strict=True)):
                labels.append(labs[0].removeprefix(_LABEL_PREFIX) if len(labs) else "")
                scores[start + j] = scs[0] if len(scs) else 0.0
        if self.params.backend == "glotlid":
            scripts = [label_script(label) for label in labels]
        else:
            scripts = [text_script(t) for t in texts]
        # the script first: ``language`` and ``language_score`` stay the last two columns
        return {
            "language_script": pa.array(scripts, pa.string()),
            "language": pa.array(labels, pa.string()),
            "language_score": pa.array(scores, pa.float32()),
        }

    def decide(self, table: pa.Table) -> pa.Array:
        lang, score = table["language"], table["language_score"]
        passes = pc.greater(score, row_thresholds(lang, self.params))
        if not self.params.languages:
            reason = pa.scalar("language_low_score")
        else:
            wanted = pc.is_in(lang, value_set=pa.array(sorted(self.params.languages), pa.string()))
            passes = pc.and_(passes, wanted)
            reason = pc.if_else(wanted, "language_low_score", "language_not_wanted")
        return pc.if_else(passes, pa.scalar(None, pa.string()), reason)

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["language_script", "language", "language_score"]
