"""A trainer learns from what we write: ``scripts/train_smoke.py`` in a small configuration.

The script builds shards from the real text sample (shuffle -> tokenize, flat format, a 512-id
BPE trained on the same text) and trains a tiny causal transformer on them for 150 steps on CPU
(about a minute of CPU on 2 cores). The test then reads the shards itself, as nanoGPT does, and
checks the model's held-out loss against the unigram entropy of those tokens: a model that
learned only token frequencies cannot go below it.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from support import REPO, require_shared_data

pytestmark = pytest.mark.integration

pytest.importorskip(
    "torch", reason="scripts/train_smoke.py needs torch (the [train] extra: torch==2.13.0)"
)

SMALL = [
    "--vocab-size", "512", "--steps", "150", "--d-model", "64", "--layers", "2",
    "--context", "64", "--batch", "32", "--eval-windows", "512", "--threads", "2",
]  # fmt: skip
MARGIN = 0.5  # nats per token: the model must beat unigram perplexity by e**0.5 = 1.65x


def unigram_entropy(tokens: np.ndarray) -> float:
    """Plug-in entropy (nats) of the token distribution of the whole stream: by Gibbs'
    inequality no unigram model scores a lower cross-entropy on it, and the held-out windows
    the script scores are a seeded random 10% of it."""
    p = np.bincount(tokens) / len(tokens)
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def test_tiny_transformer_learns_from_our_shards(tmp_path):
    data = require_shared_data()
    out, result = tmp_path / "run", tmp_path / "result.json"
    cmd = [sys.executable, str(REPO / "scripts" / "train_smoke.py"), "--data", str(data)]
    cmd += ["--out", str(out), "--json", str(result), "--margin", str(MARGIN), *SMALL]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(result.read_text())

    # the shards, read independently of the script: np.memmap of every flat shard
    root = out / "tokens"
    manifest = json.loads((root / "manifest.json").read_text())
    dtype = np.dtype(manifest["dtype"]["flat"])
    tokens = np.concatenate(
        [
            np.memmap(root / "flat" / f"{s['name']}.bin", dtype=dtype, mode="r")
            for s in manifest["shards"]
        ]
    )
    assert len(tokens) == manifest["tokens"] == res["tokens"] > 1_000_000
    assert int(tokens.max()) < manifest["tokenizer"]["vocab_size"] == 512
    entropy = unigram_entropy(tokens)
    assert 4.0 < entropy < np.log(512)  # a real distribution, not a degenerate stream
    assert res["initial_loss"] > entropy  # untrained: no better than frequencies
    assert res["final_loss"] < entropy - MARGIN, (res, entropy)
