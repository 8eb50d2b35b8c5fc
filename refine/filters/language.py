"""Language identification with a fastText model (lid.176 by default), as FineWeb / datatrove do.

The label and score are kept as the ``language`` / ``language_score`` columns (DESIGN.md), so a
later run can re-select languages or re-tune ``min_score`` on the saved signals. The decision is
datatrove's ``LanguageFilter``: keep a document when one of the wanted languages has a probability
above ``min_score`` (strictly), or, with no language list, when the top language does.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refine.models import DEFAULT_LID_MODEL, check_fasttext_model, fasttext_model
from refine.pipeline.stage import FilterStage, StageParams

_LABEL_PREFIX = "__label__"
#: Documents predicted per call into fastText (one call per batch, not one per document).
_BATCH = 1024


class LanguageParams(StageParams):
    languages: list[str] | None = Field(
        default=["en"],
        description="labels to keep (lid.176: ISO 639 codes such as en, de, zh; GlotLID: eng_Latn);"
        " empty or null: any language, still subject to min_score",
    )
    min_score: float = Field(
        default=0.65,
        ge=0,
        le=1,
        description="a wanted language's probability must be above this to keep the document",
    )
    model: str = Field(
        default=DEFAULT_LID_MODEL,
        description="fastText model: local path, pkg://PACKAGE/FILE or hf://OWNER/REPO/FILE",
    )


class LanguageFilter(FilterStage):
    """Drops documents not in ``languages`` (``language_not_wanted``) or identified with too little
    confidence (``language_low_score``)."""

    name = "language"
    Params = LanguageParams

    def check(self) -> None:
        check_fasttext_model(self.params.model)

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        model = fasttext_model(self.params.model)
        # fastText predicts one line: newlines become spaces, as datatrove does.
        texts = pc.replace_substring(pc.fill_null(table["text"], ""), "\n", " ").to_pylist()
        labels: list[str] = []
        scores = np.zeros(len(texts), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            got_labels, got_scores = model.predict(texts[start : start + _BATCH], k=1)
            for j, (lab, sc) in enumerate(zip(got_labels, got_scores, strict=True)):
                labels.append(lab[0].removeprefix(_LABEL_PREFIX) if len(lab) else "")
                scores[start + j] = sc[0] if len(sc) else 0.0
        out = {
            "language": pa.array(labels, pa.string()),
            "language_score": pa.array(scores, pa.float32()),
        }
        wanted = self._wanted()
        k = self._k_needed()
        if wanted and k != 1:
            # A wanted language that is not the top one can still pass a low min_score.
            out["_wanted_score"] = self._best_wanted_score(model, texts, wanted, k)
        return out

    def decide(self, table: pa.Table) -> pa.Array:
        wanted = self._wanted()
        lang, score = table["language"], table["language_score"]
        min_score = self.params.min_score
        if not wanted:
            passes = pc.greater(score, pa.scalar(min_score, pa.float32()))
            reason = pa.scalar("language_low_score")
        else:
            is_wanted = pc.is_in(lang, value_set=pa.array(sorted(wanted), pa.string()))
            best = (
                table["_wanted_score"]
                if "_wanted_score" in table.column_names
                else pc.if_else(is_wanted, score, pa.scalar(0.0, pa.float32()))
            )
            passes = pc.greater(best, pa.scalar(min_score, pa.float32()))
            reason = pc.if_else(is_wanted, "language_low_score", "language_not_wanted")
        return pc.if_else(passes, pa.scalar(None, pa.string()), reason)

    def process(self, table: pa.Table):
        result = super().process(table)
        if "_wanted_score" in result.table.column_names:  # a helper column, not a signal
            result.table = result.table.drop_columns(["_wanted_score"])
        return result

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["language", "language_score"]

    def _wanted(self) -> set[str]:
        return set(self.params.languages or [])

    def _k_needed(self) -> int:
        """How many top labels can pass ``min_score``: r labels above t need r * t < 1."""
        t = self.params.min_score
        if t <= 0:
            return -1
        return max(1, math.ceil(1 / t) - 1)

    def _best_wanted_score(self, model, texts: list[str], wanted: set[str], k: int) -> pa.Array:
        best = np.zeros(len(texts), dtype=np.float32)
        for start in range(0, len(texts), _BATCH):
            got_labels, got_scores = model.predict(texts[start : start + _BATCH], k=k)
            for j, (labs, scs) in enumerate(zip(got_labels, got_scores, strict=True)):
                for lab, sc in zip(labs, scs, strict=True):
                    if lab.removeprefix(_LABEL_PREFIX) in wanted:
                        best[start + j] = max(best[start + j], sc)
        return pa.array(best, pa.float32())
