"""Per-language settings of the heuristic filters, read off the document's ``language`` column.

A heuristic stage (``gopher_repetition``, ``gopher_quality``, ``fineweb``, ``c4``,
``llama3_heuristics``) takes two more params from ``LanguageParams``:

- ``languages``: null (default: one set of settings for every document, the stage's own params),
  ``fineweb2`` (the shipped table: FineWeb-2's published values for 20 languages, see
  ``assets/fineweb2/``), or an inline table ``{deu_Latn: {dup_line_frac: 0.25, ...}, ...}``
  merged over the shipped one (a language given as null is removed from it). A language's
  settings override the stage's own params for its documents; only the params the stage lists in
  ``per_language`` may be set, the rest of a shipped entry (e.g. ``language_score``, or a
  stop-word list on a stage without one) is ignored.
- ``unknown_language``: what happens to a document whose language has no settings (not in the
  table, null, or no ``language`` column): ``default`` applies the stage's own params to it,
  ``drop`` drops it (reason ``language_without_settings``).

A document's ``language`` may be a lid.176 / ISO 639-1 code (``de``, ``zh``) or a GlotLID /
FineWeb-2 label (``deu_Latn``, ``cmn_Hani``); both resolve to the table's keys (``resolve``).
Inline tables may use either too.

Decisions stay vectorised: rows are grouped by language once per batch (``LanguageGroups``) and a
threshold becomes a per-row array taken from the per-language values.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import model_validator

from refine.pipeline.params import StageParams

FINEWEB2_ASSET = Path(__file__).parent / "assets" / "fineweb2" / "languages.json"
#: The name of the shipped table in ``languages:``.
FINEWEB2 = "fineweb2"
#: The drop reason of a document whose language has no settings under ``unknown_language: drop``.
NO_SETTINGS = "language_without_settings"

#: Names FineWeb-2's configs use for a stage param of another name.
ALIASES = {"stopwords": "stop_words"}

#: ISO 639-1 codes (lid.176's labels) of the languages FineWeb-2 ships settings for, as labels.
#: Macro-language codes map to the variety FineWeb-2 labels (``zh`` -> Mandarin, ``ar`` ->
#: Standard Arabic), as GlotLID would label the same text.
ISO1_TO_LABEL = {
    "ar": "arb_Arab",
    "cs": "ces_Latn",
    "de": "deu_Latn",
    "en": "eng_Latn",
    "es": "spa_Latn",
    "fr": "fra_Latn",
    "hi": "hin_Deva",
    "id": "ind_Latn",
    "it": "ita_Latn",
    "ja": "jpn_Jpan",
    "ko": "kor_Hang",
    "nl": "nld_Latn",
    "pl": "pol_Latn",
    "pt": "por_Latn",
    "ru": "rus_Cyrl",
    "sv": "swe_Latn",
    "th": "tha_Thai",
    "tr": "tur_Latn",
    "uk": "ukr_Cyrl",
    "vi": "vie_Latn",
    "zh": "cmn_Hani",
}
#: ISO 639-3 macro-language codes and the variety FineWeb-2 labels.
MACRO = {"ara": "arb", "zho": "cmn", "msa": "zsm"}
#: Script subtags other labelers use for the same writing system.
SCRIPTS = {"Hans": "Hani", "Hant": "Hani"}


@functools.lru_cache(maxsize=1)
def fineweb2_table() -> dict[str, dict[str, Any]]:
    """The shipped table: label -> FineWeb-2's settings (its key names)."""
    with FINEWEB2_ASSET.open(encoding="utf-8") as f:
        return json.load(f)["languages"]


def resolve(code: str | None, keys: frozenset[str] | set[str]) -> str | None:
    """The key of ``keys`` that a document language ``code`` means, or None.

    Tried in order: the code itself; an ISO 639-1 code as its label (``de`` -> ``deu_Latn``);
    a label's macro-language or script alias (``zho_Hans`` -> ``cmn_Hani``); a bare ISO 639-3
    code as the one key of that language (``deu`` -> ``deu_Latn``). A label never resolves to
    another script's key (``hin_Latn`` is not ``hin_Deva``).
    """
    if not code:
        return None
    if code in keys:
        return code
    label = ISO1_TO_LABEL.get(code.split("-")[0].split("_")[0].lower()) if len(code) <= 3 else None
    if label is None and len(code) <= 3 and code.lower() in MACRO:
        code = MACRO[code.lower()]
    if label in keys:
        return label
    lang, _, script = code.partition("_")
    lang = MACRO.get(lang, lang)
    script = SCRIPTS.get(script, script)
    if f"{lang}_{script}" in keys:
        return f"{lang}_{script}"
    same = [k for k in keys if k.partition("_")[0] == lang]
    if len(same) == 1 and (not script or not same[0].partition("_")[2]):
        return same[0]
    return None


def _canonical_key(code: str) -> str:
    """A table key written as an ISO 639-1 code becomes its label (``de`` -> ``deu_Latn``)."""
    return ISO1_TO_LABEL.get(code, code)


def merged_table(languages: str | dict[str, dict[str, Any] | None] | None) -> dict[str, dict]:
    """The ``languages`` param as one table: label -> settings (FineWeb-2 key names kept)."""
    if languages is None:
        return {}
    if isinstance(languages, str):
        if languages != FINEWEB2:
            raise ValueError(f"languages: unknown table {languages!r} (known: {FINEWEB2!r})")
        return dict(fineweb2_table())
    table = dict(fineweb2_table())
    for code, settings in languages.items():
        key = _canonical_key(code)
        if settings is None:
            table.pop(key, None)
        else:
            table[key] = {**table.get(key, {}), **settings}
    return table


class LanguageParams(StageParams):
    """The two params every per-language heuristic stage adds (see the module docstring)."""

    #: The stage params a language's settings may set (the rest are the same for every document).
    per_language: ClassVar[frozenset[str]] = frozenset()

    languages: str | dict[str, dict[str, Any] | None] | None = None
    """Per-language settings, chosen by each document's ``language`` column: null (the stage's
    own params for every document), ``fineweb2`` (FineWeb-2's published values for 20 languages,
    shipped in ``refine/filters/assets/fineweb2``), or ``{label: {param: value}}`` merged over the
    shipped table (``label: null`` removes a language). Labels: GlotLID (``deu_Latn``) or
    lid.176 (``de``)."""
    unknown_language: Literal["default", "drop"] = "default"
    """A document whose language has no settings (not in ``languages``, null, or no
    ``language`` column): ``default`` judges it by the stage's own params, ``drop`` drops it
    (reason ``language_without_settings``). Unused while ``languages`` is null."""

    @model_validator(mode="after")
    def _check_languages(self):
        if self.languages is not None:
            language_settings(self)  # raises on an unknown table, param or bad value
        return self


_SETTINGS: dict[tuple[type, str], dict[str, LanguageParams]] = {}


def language_settings(params: LanguageParams) -> dict[str, LanguageParams]:
    """label -> the stage's params with that language's settings applied (validated; cached per
    params value, since every batch asks)."""
    key = (type(params), params.model_dump_json())
    if key not in _SETTINGS:
        if len(_SETTINGS) > 64:
            _SETTINGS.clear()
        _SETTINGS[key] = _language_settings(params)
    return _SETTINGS[key]


def _language_settings(params: LanguageParams) -> dict[str, LanguageParams]:
    allowed = type(params).per_language
    inline = params.languages if isinstance(params.languages, dict) else {}
    inline_keys = {
        _canonical_key(code): set(s or ()) for code, s in inline.items() if s is not None
    }
    base = params.model_dump(exclude={"languages", "unknown_language"})
    out = {}
    for label, settings in merged_table(params.languages).items():
        own = {}
        for name, value in settings.items():
            name = ALIASES.get(name, name)
            if name in allowed:
                own[name] = value
        given = {ALIASES.get(k, k) for k in inline_keys.get(label, ())}
        unknown = sorted(given - allowed)
        if unknown:
            raise ValueError(
                f"languages.{label}: {', '.join(unknown)} cannot be set per language "
                f"(allowed: {', '.join(sorted(allowed))})"
            )
        try:
            out[label] = type(params)(**{**base, **own})
        except ValueError as e:
            raise ValueError(f"languages.{label}: {e}") from None
    return out


class LanguageGroups:
    """The rows of a batch grouped by their language's settings.

    ``settings[i]`` applies to the rows where ``index == i``: entry 0 is the stage's own params
    (or None under ``unknown_language: drop``), then one entry per language of the table present
    in the batch.
    """

    def __init__(self, table: pa.Table, params: LanguageParams):
        n = table.num_rows
        by_label = language_settings(params) if params.languages is not None else {}
        fallback = None if params.unknown_language == "drop" and by_label else params
        self.settings: list[LanguageParams | None] = [fallback]
        self.labels: list[str | None] = [None]
        self.index = np.zeros(n, np.int64)
        if not by_label or "language" not in table.column_names or n == 0:
            return
        codes = table["language"].cast(pa.string())
        codes = codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes
        uniques = pc.unique(codes.drop_null())
        group_of_unique = np.zeros(len(uniques), np.int64)
        keys = frozenset(by_label)
        for j, code in enumerate(uniques.to_pylist()):
            label = resolve(code, keys)
            if label is None:
                continue
            if label not in self.labels:
                self.labels.append(label)
                self.settings.append(by_label[label])
            group_of_unique[j] = self.labels.index(label)
        where = pc.index_in(codes, value_set=uniques)
        found = pc.is_valid(where).to_numpy(zero_copy_only=False)
        positions = pc.fill_null(where, 0).to_numpy(zero_copy_only=False).astype(np.int64)
        self.index = np.where(found, group_of_unique[positions] if len(uniques) else 0, 0)

    @property
    def uniform(self) -> bool:
        """Every row has the stage's own params (no per-language work needed)."""
        return len(self.settings) == 1 and self.settings[0] is not None

    def unsettled(self) -> np.ndarray:
        """Rows to drop for want of settings (``unknown_language: drop``)."""
        if self.settings[0] is None:
            return self.index == 0
        return np.zeros(len(self.index), bool)

    def values(self, get, falsy_is_off: bool = False) -> np.ndarray:
        """Per row, ``get(settings)`` as float64; NaN where it is None (rule off), where the row
        has no settings, and, with ``falsy_is_off``, where it is 0 (datatrove's falsy check)."""
        per_group = np.full(len(self.settings), np.nan)
        for i, s in enumerate(self.settings):
            if s is None:
                continue
            v = get(s)
            if v is None or (falsy_is_off and not v):
                continue
            per_group[i] = float(v)
        return per_group[self.index]

    def rows(self, i: int) -> np.ndarray:
        """Row numbers of group ``i``."""
        return np.flatnonzero(self.index == i)


@functools.lru_cache(maxsize=1)
def _asset_digest() -> str:
    return hashlib.sha256(FINEWEB2_ASSET.read_bytes()).hexdigest()[:16]


def _word_rules() -> str:
    """What splits labelled documents' words: spaCy's rules per language, by datatrove's table."""
    from refine.pipeline.versions import library_version

    spacy, datatrove = library_version("spacy"), library_version("datatrove")
    return f"spacy-per-language-1 spacy=={spacy} datatrove=={datatrove}"


class PerLanguageStage:
    """Mixin for a stage whose ``Params`` derive from ``LanguageParams``: its fingerprints name
    the word rules (:func:`_word_rules`) with or without a ``languages`` table, since a document
    labelled German, French... is split by its language's rules either way (outputs made when
    every label got the English rules are recomputed on resume, not mixed with new decisions),
    and the shipped table's content when the table is used."""

    def _identity(self, params: dict) -> dict:
        if params.get("languages") is None:
            params = {k: v for k, v in params.items() if k not in ("languages", "unknown_language")}
            params["word_rules"] = _word_rules()
        else:
            params = {**params, "languages_asset": _asset_digest(), "word_rules": _word_rules()}
        return super()._identity(params)  # type: ignore[misc]
