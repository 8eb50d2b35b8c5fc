"""StageParams, the base of every stage's parameters, in a module without Arrow.

The extraction child (``python -m refine.extract.engines``) validates its ``ExtractConfig`` with
it; importing ``refine.pipeline.stage`` there would load pyarrow for nothing (~0.3 CPU-s per
child start).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StageParams"]


class StageParams(BaseModel):
    """Base of every stage's parameters: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
