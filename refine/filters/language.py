"""Language identification with a fastText model (lid.176 by default), as FineWeb / datatrove do.

The top label and its probability are kept as the ``language`` / ``language_score`` columns
(DESIGN.md), so a later run can re-select languages or re-tune ``min_score`` on the saved signals
(both are ``thresholds``: changing them does not re-run the model). A document is kept when its top
language is wanted and scores above ``min_score`` (strictly). That is datatrove's ``LanguageFilter``
decision whenever ``min_score >= 0.5``; below that datatrove also keeps a document whose *second*
language is wanted and above the threshold (e.g. mostly German, 30% English, kept as English),
which we do not.
"""

from __future__ import annotations

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
    libraries = ("fasttext",)
    Params = LanguageParams
    model_params = ("model",)
    thresholds = frozenset({"languages", "min_score"})

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
            for j, (labs, scs) in enumerate(zip(got_labels, got_scores, strict=True)):
                labels.append(labs[0].removeprefix(_LABEL_PREFIX) if len(labs) else "")
                scores[start + j] = scs[0] if len(scs) else 0.0
        return {
            "language": pa.array(labels, pa.string()),
            "language_score": pa.array(scores, pa.float32()),
        }

    def decide(self, table: pa.Table) -> pa.Array:
        lang, score = table["language"], table["language_score"]
        passes = pc.greater(score, pa.scalar(self.params.min_score, pa.float32()))
        if not self.params.languages:
            reason = pa.scalar("language_low_score")
        else:
            wanted = pc.is_in(lang, value_set=pa.array(sorted(self.params.languages), pa.string()))
            passes = pc.and_(passes, wanted)
            reason = pc.if_else(wanted, "language_low_score", "language_not_wanted")
        return pc.if_else(passes, pa.scalar(None, pa.string()), reason)

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["language", "language_score"]
