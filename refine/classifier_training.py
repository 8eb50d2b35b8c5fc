"""``refine train-classifier``: fine-tune a small encoder on labelled documents, for
``model_classifier`` (Llama 3 trained DistilRoBERTa on Llama 2's quality labels; FineWeb-Edu a
BERT regressor on Llama 3 70B's 0-5 scores).

Labels are strings (a classifier: one output per label) or numbers (a regressor: one output).
They come from a field of the document records (``--labels FIELD``) or from a text file with one
label per line, in document order (``--labels FILE``). A held-out share of the documents
(``holdout``) measures the result: accuracy for a classifier, mean absolute error for a
regressor, written to ``training.json`` in the output folder beside the model, tokenizer and
config that ``model_classifier`` loads.

``--base`` is a hub id or a local folder of a pretrained encoder (weights and tokenizer), a
folder or ``config.json`` of a model *configuration* (random weights), or ``tiny``: a 2-layer
BERT created from a config with a BPE tokenizer trained on the training texts. ``tiny`` is what
the offline sample uses: a stand-in, not a good classifier.

The same documents, labels, seed and threads give the same model files: the weights follow
``torch.manual_seed`` and the tokenizer is trained by HF tokenizers' BPE trainer without a
continuing-subword prefix (its WordPiece trainer numbers the ``##`` pieces in hash-map order, so
its vocabulary changed from run to run: huggingface/tokenizers#1794).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from refine.errors import ConfigError, InputError

#: The built-in stand-in encoder (``--base tiny``): BERT, 2 layers of width 128.
TINY_ENCODER = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 256,
    "max_position_embeddings": 512,
}
TINY_VOCAB = 8000


def read_records(paths: list[str], text_field: str, label_field: str | None) -> list[dict]:
    """``{"text", "label"}`` records from JSONL (``.gz``/``.zst``) or Parquet files; a record
    without text is skipped, one without its label is an ``InputError`` naming file and line."""
    import fsspec

    out: list[dict] = []
    for path in paths:
        name = str(path).lower().removesuffix(".gz").removesuffix(".zst")
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            with fsspec.open(path, "rb") as f:
                cols = [text_field] + ([label_field] if label_field else [])
                table = pq.read_table(f, columns=cols)
            rows = table.to_pylist()
            items = ((f"{path}#row={i}", r) for i, r in enumerate(rows))
        else:
            items = _json_lines(path)
        for where, rec in items:
            text = rec.get(text_field)
            if not isinstance(text, str) or not text.strip():
                continue
            item = {"text": text}
            if label_field:
                if rec.get(label_field) is None:
                    raise InputError(f"{where}: no {label_field!r} field (the label)")
                item["label"] = rec[label_field]
            out.append(item)
    return out


def _json_lines(path: str):
    import fsspec

    with fsspec.open(path, "rt", compression="infer", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield f"{path}#line={n}", json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}#line={n}: not JSON ({e.msg})") from None


def label_kind(labels: list[Any]) -> str:
    """``regression`` when every label is a number (not a bool), else ``classification``."""
    numeric = all(isinstance(x, int | float) and not isinstance(x, bool) for x in labels)
    return "regression" if numeric else "classification"


def train_classifier(
    texts: list[str],
    labels: list[Any],
    base: str,
    out: str | Path,
    *,
    epochs: int = 3,
    batch_size: int = 16,
    max_length: int = 256,
    learning_rate: float | None = None,
    holdout: float = 0.1,
    seed: int = 0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Fine-tune ``base`` on ``texts`` / ``labels``; save model + tokenizer into ``out``; return
    the metrics (also in ``out/training.json``)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    if len(texts) != len(labels):
        raise InputError(f"{len(texts)} documents but {len(labels)} labels")
    if len(texts) < 4:
        raise InputError(f"{len(texts)} labelled documents: too few to train and hold some out")
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    kind = label_kind(labels)
    names = sorted({str(x) for x in labels}) if kind == "classification" else []
    if kind == "classification" and len(names) < 2:
        raise InputError(f"one label ({names}) only: a classifier needs at least two")
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    n_test = max(1, int(round(len(order) * holdout))) if holdout > 0 else 0
    test, train = order[:n_test], order[n_test:]
    target = [names.index(str(x)) for x in labels] if names else [float(x) for x in labels]
    tokenizer, model = _base_model(base, names, kind, [texts[i] for i in train])
    model.train()
    lr = learning_rate or (1e-3 if base == "tiny" else 3e-5)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    t0 = time.perf_counter()
    rng = random.Random(seed + 1)
    steps = 0
    for _ in range(epochs):
        batch_order = train[:]
        rng.shuffle(batch_order)
        for start in range(0, len(batch_order), batch_size):
            idx = batch_order[start : start + batch_size]
            enc = tokenizer(
                [texts[i] for i in idx],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            y = torch.tensor([target[i] for i in idx])
            if kind == "regression":
                y = y.float()
            loss = model(**enc, labels=y).loss
            loss.backward()
            opt.step()
            opt.zero_grad()
            steps += 1
    seconds = time.perf_counter() - t0
    model.eval()
    metrics: dict[str, Any] = {
        "kind": kind,
        "labels": names,
        "base": base,
        "documents": len(texts),
        "train_documents": len(train),
        "holdout_documents": len(test),
        "epochs": epochs,
        "steps": steps,
        "train_seconds": round(seconds, 2),
    }
    if test:
        pred = _predict(tokenizer, model, [texts[i] for i in test], max_length)
        truth = np.array([target[i] for i in test])
        if kind == "classification":
            metrics["holdout_accuracy"] = float((pred.argmax(axis=1) == truth).mean())
            counts = np.bincount(truth.astype(int), minlength=len(names))
            metrics["majority_baseline"] = float(counts.max() / counts.sum())
        else:
            metrics["holdout_mae"] = float(np.abs(pred[:, 0] - truth).mean())
            metrics["mean_baseline_mae"] = float(np.abs(truth - truth.mean()).mean())
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _predict(tokenizer: Any, model: Any, texts: list[str], max_length: int) -> np.ndarray:
    import torch

    outs = []
    with torch.inference_mode():
        for start in range(0, len(texts), 32):
            enc = tokenizer(
                texts[start : start + 32],
                truncation=True,
                max_length=max_length,
                padding=True,
                return_tensors="pt",
            )
            outs.append(model(**enc).logits.float().numpy())
    return np.concatenate(outs)


def _base_model(base: str, names: list[str], kind: str, texts: list[str]) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    head = {
        "num_labels": len(names) if names else 1,
        "problem_type": "single_label_classification" if names else "regression",
    }
    if names:
        head["id2label"] = dict(enumerate(names))
        head["label2id"] = {n: i for i, n in enumerate(names)}
    if base == "tiny":
        from transformers import BertConfig

        tokenizer = train_tokenizer(texts, TINY_VOCAB)
        config = BertConfig(
            vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **TINY_ENCODER, **head
        )
        return tokenizer, AutoModelForSequenceClassification.from_config(config)
    path = Path(base).expanduser()
    if path.suffix == ".json" and path.is_file():  # a configuration: random weights
        config = AutoConfig.from_pretrained(str(path), **head)
        tokenizer = train_tokenizer(texts, int(getattr(config, "vocab_size", TINY_VOCAB)))
        config.vocab_size = len(tokenizer)
        config.pad_token_id = tokenizer.pad_token_id
        return tokenizer, AutoModelForSequenceClassification.from_config(config)
    from refine.encoders import resolve_model_dir

    folder = resolve_model_dir(base)
    has_weights = any(Path(folder).glob("*.safetensors")) or any(Path(folder).glob("*.bin"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, use_fast=True)
    except (OSError, ValueError):
        if has_weights:
            raise ConfigError(f"--base {base!r}: has weights but no tokenizer") from None
        tokenizer = None
    if not has_weights:
        config = AutoConfig.from_pretrained(folder, **head)
        if tokenizer is None:
            tokenizer = train_tokenizer(texts, int(getattr(config, "vocab_size", TINY_VOCAB)))
            config.vocab_size = len(tokenizer)
            config.pad_token_id = tokenizer.pad_token_id
        return tokenizer, AutoModelForSequenceClassification.from_config(config)
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, ignore_mismatched_sizes=True, **head
    )
    return tokenizer, model


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A BERT-style tokenizer (lower case, BERT's pre-tokenizer, ``[CLS] text [SEP]``) with a BPE
    vocabulary trained on ``texts`` by HF tokenizers, wrapped as a transformers fast tokenizer.

    BPE with SentencePiece's word-start marker and no continuing-subword prefix, because that
    trainer is deterministic: the same texts give the same vocabulary in every process (on the
    sample's prose/lists labels the tiny classifier is as accurate as with WordPiece: 78% held
    out against 79%; plain BPE without the marker: 69%). With a ``##`` prefix (WordPiece) the
    prefixed pieces are numbered in hash-map order and break ties between equally frequent
    merges differently from run to run (huggingface/tokenizers#1794, tokenizers 0.23)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    # each word's first piece starts with "▁" (SentencePiece's marker, part of the word itself,
    # so the trainer stays deterministic): word starts stay visible to the model
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.BertPreTokenizer(), pre_tokenizers.Metaspace(prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(prepend_scheme="always")
    tok.train_from_iterator(texts, BpeTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=TINY_ENCODER["max_position_embeddings"],
    )
