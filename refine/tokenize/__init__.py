"""Output for trainers: a seeded global ``shuffle`` and the ``tokenize`` stage that writes
token shards (Parquet, Megatron ``.bin``/``.idx``, a flat token stream) plus ``manifest.json``.

``train_tokenizer`` trains a byte-level BPE; ``verify`` re-reads a finished ``OUTPUT/tokens``.
Imports are lazy so that the stage registry does not load ``tokenizers`` or NumPy.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "GPT2_SPEC": "refine.tokenize.tokenizer",
    "train_tokenizer": "refine.tokenize.tokenizer",
    "verify": "refine.tokenize.verification",
    "VerifyReport": "refine.tokenize.verification",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
