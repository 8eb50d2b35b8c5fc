"""A fastText quality classifier, as DCLM's ``fasttext_oh_eli5`` filter.

``quality_score`` is the probability the model gives the positive label (``positive_label``,
DCLM's ``__label__hq``); a document is kept when it is at least ``min_score``
(``quality_low_score`` otherwise). As DCLM, the text is one line for fastText (lines joined by a
space). The default model is DCLM's OpenHermes-2.5 + ELI5 vs RefinedWeb bigram classifier and its
default ``min_score`` DCLM's threshold for it (0.018112, the top ~10% of DCLM-RefinedWeb); any
local fastText ``.bin`` works (``refine train-quality`` makes one).

The model loads lazily once per worker process (``refine.models.fasttext_model``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refine.errors import ConfigError
from refine.models import check_fasttext_model, fasttext_model
from refine.pipeline.stage import FilterStage, StageParams

#: DCLM's OH-2.5 + ELI5 classifier (labels __label__hq, __label__cc), from the Hugging Face hub.
DCLM_QUALITY_MODEL = (
    "hf://mlfoundations/fasttext-oh-eli5/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin"
)
#: DCLM-Baseline's threshold on that model's __label__hq probability.
DCLM_MIN_SCORE = 0.018112
#: Documents predicted per call into fastText.
_BATCH = 1024


class QualityClassifierParams(StageParams):
    model: str = Field(
        default=DCLM_QUALITY_MODEL,
        description="fastText supervised model: local path, pkg://PACKAGE/FILE or "
        "hf://OWNER/REPO/FILE (default: DCLM's OH-2.5+ELI5 classifier)",
    )
    positive_label: str = Field(
        default="__label__hq", description="the label whose probability is quality_score"
    )
    min_score: float = Field(
        default=DCLM_MIN_SCORE,
        ge=0,
        le=1,
        description="keep documents whose quality_score is at least this",
    )


class QualityClassifier(FilterStage):
    """fastText quality classifier (quality_score); drops below min_score (DCLM).

    ``quality_score`` is the probability (0-1) of ``positive_label``; documents below
    ``min_score`` are dropped as ``quality_low_score``."""

    name = "quality_classifier"
    Params = QualityClassifierParams
    thresholds = frozenset({"min_score"})

    def check(self) -> None:
        check_fasttext_model(self.params.model)
        labels = fasttext_model(self.params.model).get_labels()
        if self.params.positive_label not in labels:
            raise ConfigError(
                f"model {self.params.model!r}: positive_label {self.params.positive_label!r} "
                f"is not one of its labels {labels}"
            )

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["quality_score"]

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        model = fasttext_model(self.params.model)
        texts = pc.replace_substring(pc.fill_null(table["text"], ""), "\n", " ").to_pylist()
        return {
            "quality_score": pa.array(label_probability(model, texts, self.params.positive_label))
        }

    def decide(self, table: pa.Table) -> pa.Array:
        low = pc.less(table["quality_score"], pa.scalar(self.params.min_score, pa.float32()))
        return pc.if_else(
            pc.fill_null(low, True), "quality_low_score", pa.scalar(None, pa.string())
        )


def label_probability(model, texts: list[str], label: str) -> np.ndarray:
    """Probability (float32, 0-1) that fastText gives ``label`` for each one-line text; one
    ``predict`` call per batch. A text without the label in its top-k (k = all labels) gets 0."""
    k = len(model.get_labels())
    out = np.zeros(len(texts), dtype=np.float32)
    for start in range(0, len(texts), _BATCH):
        labels, probs = model.predict(texts[start : start + _BATCH], k=k)
        for j, (labs, ps) in enumerate(zip(labels, probs, strict=True)):
            for lab, p in zip(labs, ps, strict=True):
                if lab == label:
                    out[start + j] = min(float(p), 1.0)  # fastText's softmax can give 1.00001
                    break
    return out
