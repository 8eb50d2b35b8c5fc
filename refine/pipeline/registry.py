"""Stage registry: YAML stage name -> implementing class.

Adding a stage is one module plus one line here. Entries are import strings so that building the
registry does not import every stage's heavy dependencies.
"""

from __future__ import annotations

import importlib

from refine.pipeline.stage import Stage

STAGES: dict[str, str] = {
    "read": "refine.extract.stages:ReadWarc",
    "extract": "refine.extract.stages:Extract",
    "url_filter": "refine.filters.url:UrlFilter",
    "language": "refine.filters.language:LanguageFilter",
    "gopher_repetition": "refine.filters.gopher:GopherRepetition",
    "gopher_quality": "refine.filters.gopher:GopherQuality",
    "c4": "refine.filters.c4:C4Quality",
    "fineweb": "refine.filters.fineweb:FineWebQuality",
    "llama3_heuristics": "refine.filters.llama3:Llama3Heuristics",
    "perplexity": "refine.filters.perplexity:PerplexityFilter",
    "quality_classifier": "refine.filters.classifier:QualityClassifier",
    "model_classifier": "refine.filters.model_classifier:ModelClassifier",
    "pii": "refine.filters.pii:PiiAnonymizer",
    "decontaminate": "refine.filters.decontaminate:Decontaminate",
    "dedup_url": "refine.dedup.keyed:DedupUrl",
    "dedup_exact": "refine.dedup.keyed:DedupExact",
    "dedup_minhash": "refine.dedup.minhash:DedupMinhash",
    "dedup_lines": "refine.dedup.lines:DedupLines",
    "dedup_substring": "refine.dedup.substring:DedupSubstring",
    "rehydrate": "refine.dedup.rehydrate:Rehydrate",
    "mix": "refine.tokenize.mix:Mix",
    "shuffle": "refine.tokenize.shuffle:Shuffle",
    "tokenize": "refine.tokenize.stage:Tokenize",
}

#: The pipeline's stage names in their usual order (RefinedWeb / FineWeb); later issues register
#: the rest. Names are the same in config keys, output folders and report.json.
CANONICAL_ORDER = [
    "read",
    "extract",
    "url_filter",
    "language",
    "gopher_repetition",
    "gopher_quality",
    "c4",
    "fineweb",
    "llama3_heuristics",
    "perplexity",
    "quality_classifier",
    "model_classifier",
    "pii",
    "decontaminate",
    "dedup_url",
    "dedup_exact",
    "dedup_minhash",
    "dedup_lines",
    "dedup_substring",
    "rehydrate",
    "mix",
    "shuffle",
    "tokenize",
]


def stage_class(name: str) -> type[Stage]:
    """The class registered under ``name``; KeyError if there is none."""
    module_name, _, attr = STAGES[name].partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if cls.name != name:
        raise RuntimeError(f"registry entry {name!r} points at a stage named {cls.name!r}")
    return cls
