"""A transformer quality / domain classifier, as Llama 3, FineWeb-Edu and NeMo Curator use.

Any ``transformers`` sequence-classification or regression model (a hub id such as
``HuggingFaceFW/fineweb-edu-classifier``, or a local folder that ``refine train-classifier``
wrote) scores every document; the scores are signals, the thresholds config:

- a regression model (one output, FineWeb-Edu's) gives ``score_column`` = its output; with
  ``int_range: [0, 5]`` also ``<score_column>_int`` = round(clip(score, 0, 5)), FineWeb-Edu's
  ``int_score`` (it keeps ``int_score >= 3``: ``min_int_score: 3``). With no threshold set the
  stage only annotates;
- a classification model gives ``score_column`` = the probability of ``positive_label`` (or of the
  top label when none is named), ``label_column`` (e.g. ``domain``) = the top label, and with
  ``probabilities: true`` one ``<score_column>_<label>`` column per label.

Documents are dropped as ``model_low_score`` (below ``min_score``), ``model_low_int_score``
(below ``min_int_score``) or ``model_label_not_kept`` (top label not in ``keep_labels``); all three
are thresholds, re-tunable from the saved signals without running the model again.

Placement: ``device: cpu`` runs on every worker; ``device: cuda`` runs only on Dask workers that
declare the resource in ``resources`` (default ``{GPU: 1}``), so extraction and the other filters
stay on CPU workers; ``auto`` uses a GPU where the worker has one. On CPU ``precision: auto`` is
bf16 where the CPU computes it natively (AMX / AVX512-BF16), else fp32; on a GPU it is bf16.
See ``refine.encoders`` for how batches are formed (scores do not depend on partitioning).
"""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from refine.errors import ConfigError
from refine.pipeline.stage import FilterStage, StageParams

#: FineWeb-Edu's classifier (BERT-style regressor of educational value, 0-5; keep int_score >= 3).
FINEWEB_EDU_MODEL = "HuggingFaceFW/fineweb-edu-classifier"


class ModelClassifierParams(StageParams):
    model: str = Field(
        default=FINEWEB_EDU_MODEL,
        description="transformers sequence-classification model: hub id OWNER/NAME, "
        "hf://OWNER/NAME[@REVISION], or a local folder (refine train-classifier)",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description="cpu, cuda (only on workers with `resources`), or auto: a GPU where the "
        "worker has one",
    )
    precision: Literal["auto", "fp32", "bf16"] = Field(
        default="auto",
        description="auto: bf16 on a GPU and on CPUs with native bf16 (AMX/AVX512-BF16), else fp32",
    )
    batch_size: int = Field(
        default=16, ge=1, le=4096, description="documents per forward pass (fixed shape)"
    )
    max_length: int | None = Field(
        default=None, ge=8, description="truncate to this many tokens (default: the model's own)"
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="torch threads per worker process (default: the Dask worker's nthreads)",
    )
    resources: dict[str, float] | None = Field(
        default=None,
        description="Dask worker resources its tasks need (default: {GPU: 1} for device: cuda, "
        "none otherwise); only workers started with them run this stage",
    )
    score_column: str = Field(default="model_score", description="the score's column name")
    positive_label: str | None = Field(
        default=None,
        description="classification: the score is this label's probability (default: the top "
        "label's)",
    )
    label_column: str | None = Field(
        default=None, description="classification: write the top label here (e.g. domain)"
    )
    probabilities: bool = Field(
        default=False, description="classification: one <score_column>_<label> column per label"
    )
    int_range: tuple[int, int] | None = Field(
        default=None,
        description="also write <score_column>_int = round(clip(score, lo, hi)) (FineWeb-Edu's "
        "int_score); null: none",
    )
    min_score: float | None = Field(default=None, description="drop below this score")
    min_int_score: int | None = Field(
        default=None, description="drop below this integer score (FineWeb-Edu keeps >= 3)"
    )
    keep_labels: list[str] | None = Field(
        default=None, description="classification: keep only documents whose top label is listed"
    )

    @model_validator(mode="after")
    def _consistent(self) -> ModelClassifierParams:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.score_column):
            raise ValueError(f"score_column {self.score_column!r}: use letters, digits and _")
        if self.min_int_score is not None and self.int_range is None:
            raise ValueError("min_int_score needs int_range (the integer score's bounds)")
        if self.int_range is not None and self.int_range[0] > self.int_range[1]:
            raise ValueError(f"int_range {list(self.int_range)}: low bound above high bound")
        return self


class ModelClassifier(FilterStage):
    """Transformer classifier / regressor score (FineWeb-Edu, Llama 3 quality and domain
    classifiers); drops by score, integer score or label."""

    name = "model_classifier"
    libraries = ("transformers", "torch", "tokenizers")
    Params = ModelClassifierParams
    thresholds = frozenset({"min_score", "min_int_score", "keep_labels"})
    path_params = ("model",)  # a local folder is made absolute on the driver

    def __init__(self, params: ModelClassifierParams | None = None):
        super().__init__(params)
        self._folder: str | None = None

    # -- build time ---------------------------------------------------------------------------
    def folder(self) -> str:
        from refine.encoders import resolve_model_dir

        if self._folder is None:
            self._folder = resolve_model_dir(self.params.model)
        return self._folder

    def check(self) -> None:
        try:
            import torch  # noqa: F401
            import transformers  # noqa: F401
        except ImportError as e:
            raise ConfigError(
                f"model_classifier needs torch and transformers (pip install 'refine[classify]'): "
                f"{e}"
            ) from None
        from refine.encoders import cuda_available, model_labels

        p = self.params
        if p.device == "cuda" and not p.resources and not cuda_available():
            raise ConfigError(
                "model_classifier: device: cuda, but no GPU is visible here (torch.cuda."
                "is_available() is False); use device: cpu or auto, or name the workers that have "
                "one with `resources`"
            )
        labels, regression = model_labels(self.folder())
        if regression:
            for name in ("positive_label", "label_column", "keep_labels"):
                if getattr(p, name):
                    raise ConfigError(
                        f"model_classifier: {name} is set but {p.model!r} is a regression model "
                        "(one output)"
                    )
            if p.probabilities:
                raise ConfigError(
                    f"model_classifier: probabilities: true needs a classification model; "
                    f"{p.model!r} is a regression model"
                )
        for label in [p.positive_label, *(p.keep_labels or [])]:
            if label is not None and label not in labels:
                raise ConfigError(
                    f"model_classifier: label {label!r} is not one of {p.model!r}'s labels {labels}"
                )

    def model_files(self) -> dict[str, str]:
        from refine.encoders import model_dir_identity

        return {"model": model_dir_identity(self.folder())}

    def worker_resources(self) -> dict[str, float]:
        """Dask worker resources every task of this stage needs."""
        if self.params.resources is not None:
            return dict(self.params.resources)
        return {"GPU": 1} if self.params.device == "cuda" else {}

    # -- scoring ------------------------------------------------------------------------------
    def _labels(self) -> tuple[list[str], bool]:
        from refine.encoders import model_labels

        return model_labels(self.folder())

    def signal_names(self, table: pa.Table) -> list[str]:
        p = self.params
        labels, regression = self._labels()
        names = [p.score_column]
        if p.int_range is not None:
            names.append(f"{p.score_column}_int")
        if not regression:
            if p.label_column:
                names.append(p.label_column)
            if p.probabilities:
                names += [f"{p.score_column}_{_column_safe(lab)}" for lab in labels]
        return names

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        from refine.encoders import ScorerKey, cpu_has_bf16, cuda_available, scorer, softmax

        p = self.params
        device = p.device
        if device == "auto":
            device = "cuda" if cuda_available() else "cpu"
        elif device == "cuda" and not cuda_available():
            raise RuntimeError(
                f"model_classifier: device: cuda, but this worker ({_worker_name()}) has no GPU"
            )
        precision = p.precision
        if precision == "auto":
            precision = "bf16" if device == "cuda" or cpu_has_bf16() else "fp32"
        key = ScorerKey(self.folder(), device, precision, p.threads or _worker_threads())
        texts = pc.fill_null(table["text"], "").to_pylist()
        logits = scorer(key).predict(texts, p.batch_size, p.max_length)
        labels, regression = self._labels()
        out: dict[str, pa.Array] = {}
        if regression:
            score = logits[:, 0]
        else:
            probs = softmax(logits)
            top = probs.argmax(axis=1)
            if p.positive_label is not None:
                score = probs[:, labels.index(p.positive_label)]
            else:
                score = probs[np.arange(len(top)), top]
            if p.label_column:
                out[p.label_column] = pa.array(np.array(labels, dtype=object)[top], pa.string())
            if p.probabilities:
                for j, lab in enumerate(labels):
                    out[f"{p.score_column}_{_column_safe(lab)}"] = pa.array(
                        probs[:, j], pa.float32()
                    )
        out = {p.score_column: pa.array(score.astype(np.float32), pa.float32()), **out}
        if p.int_range is not None:
            lo, hi = p.int_range
            ints = np.rint(np.clip(score.astype(np.float64), lo, hi)).astype(np.int8)
            out[f"{p.score_column}_int"] = pa.array(ints, pa.int8())
        return {name: out[name] for name in self.signal_names(table)}

    def decide(self, table: pa.Table) -> pa.Array:
        p = self.params
        reason = pa.nulls(table.num_rows, pa.string())
        if p.keep_labels is not None and p.label_column and p.label_column in table.column_names:
            out = pc.invert(
                pc.fill_null(pc.is_in(table[p.label_column], pa.array(p.keep_labels)), False)
            )
            reason = pc.if_else(out, "model_label_not_kept", reason)
        if p.min_int_score is not None:
            low = pc.fill_null(pc.less(table[f"{p.score_column}_int"], p.min_int_score), True)
            reason = pc.if_else(low, "model_low_int_score", reason)
        if p.min_score is not None:
            low = pc.fill_null(pc.less(table[p.score_column], pa.scalar(p.min_score)), True)
            reason = pc.if_else(low, "model_low_score", reason)
        return reason


def _column_safe(label: str) -> str:
    return re.sub(r"\W+", "_", label).strip("_").lower() or "label"


def _worker_threads() -> int | None:
    """The Dask worker's thread count: workers are one process per core with one thread, so
    torch's own default (every core) would oversubscribe the machine."""
    try:
        from distributed import get_worker

        return int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return None


def _worker_name() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError, AttributeError):
        return "the driver"
