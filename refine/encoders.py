"""Transformer encoders (``transformers`` sequence classification / regression models): where
their folders come from, loading them once per worker process, and batched scoring.

A model is named by a *spec*, resolved to a local folder (``config.json``, weights, tokenizer) by
``resolve_model_dir``:

- a local folder (``refine train-classifier`` writes one);
- a hub model id ``OWNER/NAME`` (e.g. ``HuggingFaceFW/fineweb-edu-classifier``), or
  ``hf://OWNER/NAME`` / ``hf://OWNER/NAME@REVISION``: fetched with huggingface_hub's
  ``snapshot_download`` (the local HF cache first, so a model already downloaded works offline;
  ``HF_ENDPOINT`` and ``HF_TOKEN`` are honoured).

Scoring (``EncoderScorer.predict``) is made for CPU throughput and for scores that do not depend on
how documents are grouped: texts are tokenized once (fast Rust tokenizer, truncated to the model's
length), padded only to their own length rounded up to ``LENGTH_STEP`` tokens, and documents of
one padded length run together in forward passes of exactly ``batch_size`` rows (a short last
batch is filled with copies of its first row, then dropped). With the shapes fixed, a document's
score is bit-identical whatever partition it is in and whichever documents share its batch
(measured: oneDNN's kernels depend on the matrix shapes, not on the neighbouring rows); in fp32
on CPU it is also the same for every ``batch_size`` (``pad_small_linears``), in bf16 it may
differ in the last bits between batch sizes. Most web documents are shorter than 512 tokens,
so the padding saved is much of the work.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from refine.errors import ConfigError

#: Padded lengths are multiples of this (tokens): documents of similar length share a batch.
LENGTH_STEP = 64
#: The files of a model repository that loading needs (weights, config, tokenizer).
_ALLOW = [
    "*.json",
    "*.safetensors",
    "*.txt",
    "*.model",
    "*.tiktoken",
    "merges.txt",
    "vocab.*",
]

_lock = threading.Lock()
_scorers: dict[tuple, EncoderScorer] = {}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")


def resolve_model_dir(spec: str) -> str:
    """The local folder of the encoder named by ``spec``; ``ConfigError`` naming ``spec`` when
    there is none (a folder without ``config.json``, a hub id that is neither cached nor
    reachable)."""
    if not spec or not isinstance(spec, str):
        raise ConfigError(f"model {spec!r}: empty model spec")
    local = Path(spec).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ConfigError(f"model {spec!r}: folder has no config.json")
        return str(local.resolve())
    repo = spec.removeprefix("hf://")
    if "://" in repo or not _HUB_ID.match(repo):
        raise ConfigError(
            f"model {spec!r}: not a folder, and not a hub model id (OWNER/NAME, "
            "hf://OWNER/NAME[@REVISION])"
        )
    repo, _, revision = repo.partition("@")
    return _hub_snapshot(spec, repo, revision or None, os.environ.get("HF_ENDPOINT", ""))


@lru_cache(maxsize=16)
def _hub_snapshot(spec: str, repo: str, revision: str | None, endpoint: str) -> str:
    from huggingface_hub import snapshot_download

    kwargs = {"repo_id": repo, "revision": revision, "allow_patterns": _ALLOW}
    try:
        return snapshot_download(**kwargs, local_files_only=True)
    except Exception:  # not in the local cache: try the hub itself
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(
            f"model {spec!r}: not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        )
    try:
        return snapshot_download(**kwargs)
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(
            f"model {spec!r}: cannot download from the Hugging Face hub ({type(e).__name__}: "
            f"{first})"
        ) from e


def model_dir_identity(folder: str) -> str:
    """A content identity of a model folder for fingerprints: its config and the identity of
    each weights file (``refine.models.file_identity``)."""
    import xxhash

    from refine.models import file_identity

    h = xxhash.xxh3_64()
    root = Path(folder)
    for path in sorted(root.iterdir()):
        if not path.is_file():
            continue
        if path.suffix in (".safetensors", ".bin", ".pt", ".onnx"):
            h.update(f"{path.name}:{file_identity(path)}".encode())
        elif path.suffix == ".json":
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def model_labels(folder: str) -> tuple[list[str], bool]:
    """(labels in output order, regression?) from the folder's ``config.json``, without loading
    the weights: ``refine`` checks thresholds and label names against it at build time."""
    import json

    cfg = json.loads((Path(folder) / "config.json").read_text())
    n = int(cfg.get("num_labels") or len(cfg.get("id2label") or {}) or 2)
    id2label = cfg.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(n)]
    regression = cfg.get("problem_type") == "regression" or n == 1
    return labels, regression


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX): there bf16 autocast
    runs an encoder ~3.6x faster than fp32 (measured, scripts/bench_model_classifier.py);
    elsewhere it is emulated and slower, so ``precision: auto`` stays fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@dataclass(frozen=True)
class ScorerKey:
    folder: str
    device: str  # cpu | cuda
    precision: str  # fp32 | bf16
    threads: int | None


class EncoderScorer:
    """One loaded model + tokenizer; ``predict`` returns the raw outputs (logits), float32."""

    def __init__(self, key: ScorerKey):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if key.threads:
            torch.set_num_threads(key.threads)
        self.key = key
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(key.folder, use_fast=True)
        model = AutoModelForSequenceClassification.from_pretrained(key.folder)
        self.model = model.eval().to(key.device)
        if key.device == "cpu" and key.precision == "fp32":
            pad_small_linears(self.model)
        self.max_length = model_max_length(self.model.config, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.model.config.pad_token_id or 0)

    def predict(
        self, texts: list[str], batch_size: int, max_length: int | None = None
    ) -> np.ndarray:
        """Outputs (documents x labels, float32) for ``texts``, in their order."""
        torch = self.torch
        limit = min(max_length or self.max_length, self.max_length)
        n_out = int(self.model.config.num_labels)
        out = np.zeros((len(texts), n_out), dtype=np.float32)
        if not texts:
            return out
        enc = self.tokenizer(texts, truncation=True, max_length=limit, padding=False)["input_ids"]
        lengths = np.fromiter((len(ids) for ids in enc), dtype=np.int64, count=len(enc))
        padded = np.minimum(-(-lengths // LENGTH_STEP) * LENGTH_STEP, limit)
        use_bf16 = self.key.precision == "bf16"
        with (
            torch.inference_mode(),
            torch.autocast(self.key.device, dtype=torch.bfloat16, enabled=use_bf16),
        ):
            for width in np.unique(padded):
                rows = np.flatnonzero(padded == width)
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    ids = np.full((batch_size, int(width)), self.pad_id, dtype=np.int64)
                    mask = np.zeros((batch_size, int(width)), dtype=np.int64)
                    for r, doc in enumerate(chunk):
                        seq = enc[doc]
                        ids[r, : len(seq)] = seq
                        mask[r, : len(seq)] = 1
                    if len(chunk) < batch_size:  # fixed shapes: fill with the first row
                        ids[len(chunk) :] = ids[0]
                        mask[len(chunk) :] = mask[0]
                    logits = self.model(
                        input_ids=torch.from_numpy(ids).to(self.key.device),
                        attention_mask=torch.from_numpy(mask).to(self.key.device),
                    ).logits
                    out[chunk] = logits[: len(chunk)].float().cpu().numpy()
        return out


#: A linear layer fed fewer rows than this gets them padded with zero rows (then dropped).
MIN_ROWS = 64


def pad_small_linears(model: Any) -> None:
    """Make fp32 CPU scores independent of ``batch_size``: the encoder's linear layers see
    ``batch_size x padded length`` rows (at least ``LENGTH_STEP``), where oneDNN's fp32 kernels
    give each row the same result whatever the row count (measured); the classification head
    sees only ``batch_size`` rows, and there a small row count selects other kernels (a 2e-7
    difference between 1 and 8 rows, measured). Padding every linear input to ``MIN_ROWS`` rows
    fixes the head's shape; the encoder's layers are already past it and unchanged."""
    import torch
    import torch.nn.functional as F

    def padded(linear: Any) -> Any:
        def forward(x: Any) -> Any:
            width = x.shape[-1]
            rows = x.numel() // width if width else 0
            if rows >= MIN_ROWS or rows == 0:
                return F.linear(x, linear.weight, linear.bias)
            flat = x.reshape(rows, width)
            flat = torch.cat([flat, flat.new_zeros(MIN_ROWS - rows, width)])
            out = F.linear(flat, linear.weight, linear.bias)[:rows]
            return out.reshape(*x.shape[:-1], out.shape[-1])

        return forward

    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            module.forward = padded(module)


def model_max_length(config: Any, tokenizer: Any) -> int:
    """The longest input the model takes (tokens): its position table (less RoBERTa's offset of
    2 padding positions) and the tokenizer's own limit, whichever is smaller."""
    positions = int(getattr(config, "max_position_embeddings", 512) or 512)
    if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
        positions -= 2
    tok = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok, int) and 0 < tok < 1_000_000:
        positions = min(positions, tok)
    return positions


def scorer(key: ScorerKey) -> EncoderScorer:
    """The scorer for ``key``, loaded once per worker process (never pickled into the graph)."""
    found = _scorers.get(astuple_key(key))
    if found is None:
        with _lock:
            found = _scorers.get(astuple_key(key))
            if found is None:
                found = _scorers[astuple_key(key)] = EncoderScorer(key)
    return found


def astuple_key(key: ScorerKey) -> tuple:
    return (key.folder, key.device, key.precision, key.threads)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
