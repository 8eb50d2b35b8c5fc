"""A fastText quality classifier, as DCLM's ``fasttext_oh_eli5`` filter.

``quality_score`` is the probability the model gives the positive label (``positive_label``,
DCLM's ``__label__hq``); a document is kept when it is at least ``min_score``
(``quality_low_score`` otherwise). The text goes to fastText as one line exactly as DCLM makes it
(``one_line``). The default model is DCLM's OpenHermes-2.5 + ELI5 vs RefinedWeb bigram classifier
and its default ``min_score`` DCLM's threshold for it; any local fastText ``.bin`` works
(``refine train-quality`` makes one).

Sources (github.com/mlfoundations/dclm): ``baselines/baselines_configs/fasttext_filter.yaml``
(``quality_filter`` threshold 0.018112 on the ``fasttext_oh_eli5`` probability) and
``baselines/mappers/enrichers/quality_prediction_enrichers_calc_fasttext.py``
(``classify_fasttext_hq_prob``: the text as ``" ".join(content.strip().splitlines())``, the
score the ``__label__hq`` probability); the model card of
huggingface.co/mlfoundations/fasttext-oh-eli5 (labels ``__label__hq`` = OH-2.5 + ELI5,
``__label__cc`` = Common Crawl; "a percentile-based threshold"). The DCLM paper
(arXiv:2406.11794) keeps about the top 10% of DCLM-RefinedWeb with it.

The model loads lazily once per worker process (``refine.models.fasttext_model``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refine.errors import ConfigError
from refine.models import fasttext_labels, fasttext_model
from refine.pipeline.stage import FilterStage, StageParams

#: DCLM's OH-2.5 + ELI5 classifier (labels __label__hq, __label__cc), from the Hugging Face hub
#: (huggingface.co/mlfoundations/fasttext-oh-eli5; the file DCLM-Baseline was filtered with).
DCLM_QUALITY_MODEL = (
    "hf://mlfoundations/fasttext-oh-eli5/openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin"
)
#: DCLM-Baseline's threshold on that model's __label__hq probability (dclm repo,
#: baselines/baselines_configs/fasttext_filter.yaml: ``quality_filter`` ``threshold: 0.018112``).
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
    libraries = ("fasttext",)
    Params = QualityClassifierParams
    model_params = ("model",)
    thresholds = frozenset({"min_score"})

    def check(self) -> None:
        labels = fasttext_labels(self.params.model)  # from the file head: no model in the driver
        if self.params.positive_label not in labels:
            raise ConfigError(
                f"model {self.params.model!r}: positive_label {self.params.positive_label!r} "
                f"is not one of its labels {labels}"
            )

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["quality_score"]

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        model = fasttext_model(self.params.model)
        texts = [one_line(t) for t in table["text"].to_pylist()]
        return {
            "quality_score": pa.array(label_probability(model, texts, self.params.positive_label))
        }

    def decide(self, table: pa.Table) -> pa.Array:
        low = pc.less(table["quality_score"], pa.scalar(self.params.min_score, pa.float32()))
        return pc.if_else(
            pc.fill_null(low, True), "quality_low_score", pa.scalar(None, pa.string())
        )


def one_line(text: str | None) -> str:
    r"""The document as DCLM gives it to fastText: its lines (``str.splitlines``, so also
    ``\r``, ``\x85``, ``\u2028``...) joined by one space. fastText reads one line per
    prediction: a ``\n`` left inside would end the text there."""
    return " ".join(text.strip().splitlines()) if text else ""


def label_probability(model, texts: list[str], label: str) -> np.ndarray:
    """Probability (float32, clipped to 0-1) of ``label`` for each one-line text; one
    ``predict`` call per batch of texts.

    A two-label model is read as DCLM's ``classify_fasttext_hq_prob`` reads it: ``p`` of the
    top label if it is ``label``, else ``1 - p``. fastText reports every probability 1e-5 high
    (``log(p + 1e-5)``), so this is 2e-5 below the reported probability of ``label`` when the
    other label is on top, and DCLM's 0.018112 threshold was set on it. Other models: the
    reported probability of ``label`` (k = all labels)."""
    n_labels = len(model.get_labels())
    two = n_labels == 2
    out = np.zeros(len(texts), dtype=np.float64)
    for start in range(0, len(texts), _BATCH):
        labels, probs = model.predict(texts[start : start + _BATCH], k=1 if two else n_labels)
        for j, (labs, ps) in enumerate(zip(labels, probs, strict=True)):
            if two:
                out[start + j] = ps[0] if labs[0] == label else 1.0 - ps[0]
                continue
            for lab, p in zip(labs, ps, strict=True):
                if lab == label:
                    out[start + j] = p
                    break
    return np.clip(out, 0.0, 1.0).astype(np.float32)
