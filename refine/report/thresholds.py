"""Which config param is the threshold of which saved signal, so a histogram can mark it.

``FilterStage.thresholds`` names a stage's threshold params and the decision logs name its
signals, but nothing in the code ties one to the other. For the stages we ship, the table below
says it explicitly (read off each stage's ``decide``); for any other stage a param ``min_X`` /
``max_X`` is matched to the signal whose name ends with ``X``, and marked as a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refine.pipeline.registry import stage_class


@dataclass(frozen=True)
class Threshold:
    """``signal op value`` is the drop condition (e.g. ``gopher_word_count < 50``)."""

    signal: str
    param: str
    op: str
    value: float
    guessed: bool = False

    def describe(self) -> str:
        return f"{self.param} = {self.value:g}: drops {self.signal} {self.op} {self.value:g}"


# stage -> (param, signal, drop condition), from each stage's ``decide``.
KNOWN: dict[str, list[tuple[str, str, str]]] = {
    "url_filter": [("soft_word_threshold", "url_soft_words", ">=")],
    "language": [("min_score", "language_score", "<=")],
    "gopher_repetition": [
        ("dup_para_frac", "gopher_rep_dup_para_frac", ">"),
        ("dup_para_char_frac", "gopher_rep_dup_para_char_frac", ">"),
        ("dup_line_frac", "gopher_rep_dup_line_frac", ">"),
        ("dup_line_char_frac", "gopher_rep_dup_line_char_frac", ">"),
        # top_n_grams and dup_n_grams are (n, threshold) lists: see _ngram_thresholds
    ],
    "gopher_quality": [
        ("min_doc_words", "gopher_word_count", "<"),
        ("max_doc_words", "gopher_word_count", ">"),
        ("min_avg_word_length", "gopher_mean_word_length", "<"),
        ("max_avg_word_length", "gopher_mean_word_length", ">"),
        ("max_symbol_word_ratio", "gopher_hash_word_ratio", ">"),
        ("max_symbol_word_ratio", "gopher_ellipsis_word_ratio", ">"),
        ("max_bullet_lines_ratio", "gopher_bullet_lines_ratio", ">"),
        ("max_ellipsis_lines_ratio", "gopher_ellipsis_lines_ratio", ">"),
        # despite its name, a minimum share of words with a letter (as in datatrove)
        ("max_non_alpha_words_ratio", "gopher_alpha_words_ratio", "<"),
        ("min_stop_words", "gopher_stop_words", "<"),
    ],
    "c4": [("min_num_sentences", "c4_num_sentences", "<")],
    "fineweb": [
        ("line_punct_thr", "fineweb_line_punct_ratio", "<"),
        ("short_line_thr", "fineweb_short_line_ratio", ">"),
        ("char_duplicates_ratio", "fineweb_char_dup_ratio", ">"),
        ("new_line_ratio", "fineweb_list_ratio", ">"),
    ],
    "llama3_heuristics": [
        ("max_dup_ngram_coverage", "llama3_dup_ngram_coverage", ">"),
        ("max_dirty_words", "llama3_dirty_words", ">"),
        ("max_token_kl", "llama3_token_kl", ">"),
    ],
    "quality_classifier": [("min_score", "quality_score", "<")],
    "perplexity": [("max_ppl", "ppl", ">")],
}

#: Stages whose rules treat a threshold of 0 as "rule off" (datatrove's falsy check).
_ZERO_IS_OFF = {"gopher_repetition", "gopher_quality"}
#: Stages whose rules treat -1 as "rule off".
_MINUS_ONE_IS_OFF = {"c4"}


def effective_params(stage: str, given: dict[str, Any] | None) -> dict[str, Any] | None:
    """The stage's params with defaults filled in, or None for a stage not in the registry."""
    try:
        cls = stage_class(stage)
    except (KeyError, ImportError, RuntimeError):
        return None
    params_cls = getattr(cls, "Params", None)
    if params_cls is None:
        return dict(given or {})
    try:
        return params_cls(**(given or {})).model_dump()
    except Exception:  # a config from another refine version: show what it said
        return dict(given or {})


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _ngram_thresholds(params: dict[str, Any]) -> list[Threshold]:
    out = []
    for key, template in (("top_n_grams", "gopher_rep_top_{}_gram_frac"), ("dup_n_grams", None)):
        for n, value in params.get(key) or ():
            signal = template.format(n) if template else f"gopher_rep_dup_{n}_gram_frac"
            out.append(Threshold(signal, f"{key}[{n}]", ">", float(value)))
    return out


def _guess(stage: str, params: dict[str, Any], signals: list[str]) -> list[Threshold]:
    try:
        names = getattr(stage_class(stage), "thresholds", frozenset())
    except (KeyError, ImportError, RuntimeError):
        return []
    out = []
    for param in sorted(names):
        value = _number(params.get(param))
        if value is None:
            continue
        op = "<" if param.startswith("min_") else ">" if param.startswith("max_") else "?"
        stem = param.removeprefix("min_").removeprefix("max_")
        stem = stem.removesuffix("_threshold").removesuffix("_thr")
        for signal in signals:
            if signal.endswith(stem):
                out.append(Threshold(signal, param, op, value, guessed=True))
    return out


def thresholds_for(
    stage: str, given: dict[str, Any] | None, signals: list[str]
) -> dict[str, list[Threshold]]:
    """signal -> the thresholds that apply to it, with the run's values (defaults filled in).
    Rules that are switched off (null, or 0 where the stage reads 0 as off) are left out."""
    params = effective_params(stage, given)
    if params is None:
        return {}
    if stage in KNOWN:
        found = []
        for param, signal, op in KNOWN[stage]:
            value = _number(params.get(param))
            if value is None or (value == 0 and stage in _ZERO_IS_OFF):
                continue
            if value == -1 and stage in _MINUS_ONE_IS_OFF:
                continue
            found.append(Threshold(signal, param, op, value))
        if stage == "gopher_repetition":
            found += _ngram_thresholds(params)
    else:
        found = _guess(stage, params, signals)
    out: dict[str, list[Threshold]] = {}
    for t in found:
        if t.signal in signals:
            out.setdefault(t.signal, []).append(t)
    return out
