"""Training the models the ``perplexity`` and ``quality_classifier`` stages use.

- ``train_lm``: a SentencePiece model and a KenLM n-gram model on cc_net-normalised text, the
  pair the ``perplexity`` stage loads (``model``, ``sp_model``). KenLM's trainer is the
  ``lmplz`` / ``build_binary`` programs (not part of the ``kenlm`` Python module):
  ``scripts/build_kenlm.sh`` builds them from the kenlm PyPI sdist.
- ``train_quality``: a fastText supervised classifier (word bigrams) of positive vs negative
  documents, with precision / recall on a held-out split, for ``quality_classifier``.

Inputs are documents: ``.jsonl`` / ``.jsonl.gz`` (a ``text`` field, or ``field``), ``.parquet``
(a ``text`` column), or plain text (``.txt``, ``.txt.gz``...: one document per line); any
fsspec URL.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from refine.errors import ConfigError, InputError, RefineError
from refine.filters.perplexity import normalized_lines, tokenize_lines

#: KenLM reserves these words; a corpus that contains one as a token makes lmplz abort.
_KENLM_RESERVED = frozenset({"<s>", "</s>", "<unk>"})


def iter_documents(paths: Iterable[str], field: str = "text") -> Iterator[str]:
    """The text of every document in ``paths`` (see the module doc for the formats)."""
    import fsspec

    for path in paths:
        name = str(path).lower()
        for suffix in (".gz", ".bz2", ".xz", ".zst"):
            name = name.removesuffix(suffix)
        try:
            if name.endswith(".parquet"):
                import pyarrow.parquet as pq

                with fsspec.open(str(path), "rb") as f:
                    pf = pq.ParquetFile(f)
                    for batch in pf.iter_batches(columns=[field]):
                        yield from (t for t in batch.column(0).to_pylist() if t)
                continue
            with fsspec.open(str(path), "rt", compression="infer", encoding="utf-8") as f:
                if name.endswith((".jsonl", ".json", ".ndjson")):
                    for n, line in enumerate(f, 1):
                        if line.strip():
                            try:
                                text = json.loads(line).get(field)
                            except (json.JSONDecodeError, AttributeError) as e:
                                raise InputError(
                                    f"{path}: line {n}: not a JSON object ({e})"
                                ) from e
                            if text:
                                yield text
                else:
                    yield from (line.rstrip("\n") for line in f if line.strip())
        except FileNotFoundError as e:
            raise InputError(f"{path}: file not found") from e


def find_kenlm_tool(name: str, kenlm_bin: str | None = None) -> str:
    """``lmplz`` or ``build_binary``: in ``kenlm_bin``, ``$REFINE_KENLM_BIN``, beside the running
    Python (a venv's ``bin``) or on ``PATH``; ``ConfigError`` saying how to build it otherwise."""
    for folder in (kenlm_bin, os.environ.get("REFINE_KENLM_BIN"), str(Path(sys.executable).parent)):
        if folder and (Path(folder) / name).is_file() and os.access(Path(folder) / name, os.X_OK):
            return str(Path(folder) / name)
    found = shutil.which(name)
    if found:
        return found
    raise ConfigError(
        f"KenLM's {name} not found (looked in kenlm_bin, $REFINE_KENLM_BIN, "
        f"{Path(sys.executable).parent} and PATH): build it with scripts/build_kenlm.sh [PREFIX]"
    )


def train_lm(
    text_files: Iterable[str],
    order: int,
    out_binary: str,
    *,
    sp_model_out: str | None = None,
    vocab_size: int = 32000,
    field: str = "text",
    memory: str = "20%",
    prune: list[int] | None = None,
    max_sp_lines: int = 2_000_000,
    kenlm_bin: str | None = None,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Train a SentencePiece unigram model and an ``order``-gram KenLM model, cc_net's way.

    Every line of every document is normalised (``normalize_line``); SentencePiece is trained
    on up to ``max_sp_lines`` of them (``vocab_size`` is a soft limit: a small corpus gets a
    smaller vocabulary); KenLM (``lmplz --discount_fallback``, then ``build_binary``) on all of
    them tokenised. ``memory``: lmplz's ``-S`` (e.g. ``20%``, ``2G``); ``prune``: lmplz's
    ``--prune`` counts per order. Writes ``out_binary`` and ``sp_model_out`` (default: beside it,
    ``NAME.sp.model``). Returns the paths, line / token counts and seconds per step.
    """
    import sentencepiece

    files = _as_list(text_files)
    if order < 1:
        raise ConfigError(f"train_lm: order must be >= 1, got {order}")
    lmplz = find_kenlm_tool("lmplz", kenlm_bin)
    build_binary = find_kenlm_tool("build_binary", kenlm_bin)
    out = Path(out_binary)
    out.parent.mkdir(parents=True, exist_ok=True)
    sp_out = Path(sp_model_out) if sp_model_out else out.with_name(out.stem + ".sp.model")
    threads = threads or max(1, min(8, os.cpu_count() or 1))
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="refine-train-lm-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        normalized = tmpdir / "normalized.txt"
        n_docs = n_lines = 0
        with open(normalized, "w", encoding="utf-8") as f:
            for text in iter_documents(files, field):
                n_docs += 1
                for line in normalized_lines(text):
                    f.write(line + "\n")
                    n_lines += 1
        if n_lines == 0:
            raise InputError(f"train_lm: no text in {files}")
        times["normalize"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        prefix = tmpdir / "sp"
        sentencepiece.SentencePieceTrainer.train(
            input=str(normalized),
            model_prefix=str(prefix),
            vocab_size=vocab_size,
            model_type="unigram",
            character_coverage=0.9999,
            hard_vocab_limit=False,
            input_sentence_size=max_sp_lines,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            num_threads=threads,
            seed_sentencepiece_size=1_000_000,
            minloglevel=2,
        )
        shutil.copyfile(f"{prefix}.model", sp_out)
        sp = sentencepiece.SentencePieceProcessor(model_file=str(sp_out))
        times["sentencepiece"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        tokenized = tmpdir / "tokenized.txt"
        n_tokens = 0
        with open(normalized, encoding="utf-8") as src, open(tokenized, "w", encoding="utf-8") as f:
            batch: list[str] = []
            for line in src:
                batch.append(line.rstrip("\n"))
                if len(batch) == 10_000:
                    n_tokens += _write_tokenized(sp, batch, f)
                    batch = []
            n_tokens += _write_tokenized(sp, batch, f)
        times["tokenize"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        arpa = tmpdir / "lm.arpa"
        cmd = [lmplz, "-o", str(order), "-S", memory, "-T", str(tmpdir), "--discount_fallback"]
        if prune:
            cmd += ["--prune", *map(str, prune)]
        cmd += ["--text", str(tokenized), "--arpa", str(arpa)]
        _run(cmd)
        times["lmplz"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        _run([build_binary, str(arpa), str(out)])
        times["build_binary"] = time.perf_counter() - t0
    return {
        "model": str(out),
        "sp_model": str(sp_out),
        "order": order,
        "documents": n_docs,
        "lines": n_lines,
        "tokens": n_tokens,
        "vocab_size": sp.get_piece_size(),
        "bytes": out.stat().st_size,
        "seconds": {k: round(v, 3) for k, v in times.items()},
    }


def _write_tokenized(sp: Any, lines: list[str], f) -> int:
    n = 0
    for line in tokenize_lines(sp, lines):
        words = line.split()
        if _KENLM_RESERVED.intersection(words):
            words = [w for w in words if w not in _KENLM_RESERVED]
        if words:
            f.write(" ".join(words) + "\n")
            n += len(words)
    return n


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise RefineError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}): {tail}")


#: Characters that may follow a sentence's final punctuation (closing quotes and brackets).
_CLOSERS = "\"'”’)]"


def is_prose_line(line: str, min_words: int = 12) -> bool:
    """A line that reads as running prose: ``min_words`` or more words and it ends a sentence
    (``.``, ``!`` or ``?``, maybe followed by closing quotes or brackets)."""
    line = line.strip().rstrip(_CLOSERS)
    return line[-1:] in (".", "!", "?") and len(line.split()) >= min_words


def split_prose(texts: Iterable[str], min_words: int = 12) -> tuple[list[str], list[str]]:
    """Each document split in two: its prose lines (``is_prose_line``) and its other non-empty
    lines (titles, dates, menus, list items, captions...), each kept as a document of its own
    (lines joined by ``\\n``; a document without lines of one kind adds none to that side).

    What ``scripts/train_sample_models.sh`` trains the sample models on: the only text in the
    offline sample is crawl text, with no Wikipedia-like reference, so "prose vs fragments of
    the same pages" is the contrast available. It is a stand-in that exercises the stages, not
    a quality model (DCLM's hub model is the ``quality_classifier`` default for real runs)."""
    prose: list[str] = []
    rest: list[str] = []
    for text in texts:
        lines = [line.strip() for line in text.split("\n") if line.strip()]
        good = [line for line in lines if is_prose_line(line, min_words)]
        other = [line for line in lines if not is_prose_line(line, min_words)]
        if good:
            prose.append("\n".join(good))
        if other:
            rest.append("\n".join(other))
    return prose, rest


def fasttext_line(text: str) -> str:
    """A document as one fastText input line, exactly as the stage scores it (DCLM's way)."""
    from refine.filters.classifier import one_line

    return one_line(text)


def train_quality(
    positive: Iterable[str],
    negative: Iterable[str],
    out_bin: str,
    *,
    positive_label: str = "__label__hq",
    negative_label: str = "__label__cc",
    field: str = "text",
    valid_fraction: float = 0.1,
    epoch: int = 5,
    lr: float = 0.1,
    dim: int = 100,
    word_ngrams: int = 2,
    min_count: int = 1,
    bucket: int = 500_000,
    threads: int | None = None,
    max_docs_per_class: int | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> dict[str, Any]:
    """Train a fastText supervised classifier (word bigrams by default), DCLM-style.

    ``positive`` / ``negative``: document files (see the module doc). Documents are shuffled
    with ``seed`` and ``valid_fraction`` of each class is held out; the saved model is the one
    trained on the rest, and the returned ``precision`` / ``recall`` / ``accuracy`` are on the
    held-out documents with the positive label predicted when its probability is >= 0.5. The
    model file is about ``(vocabulary + bucket) * dim * 4`` bytes.
    """
    from refine.filters.classifier import label_probability

    rng = random.Random(seed)
    classes = {}
    for label, files in ((positive_label, positive), (negative_label, negative)):
        docs = [fasttext_line(t) for t in iter_documents(_as_list(files), field)]
        docs = [d for d in docs if d]
        rng.shuffle(docs)
        if max_docs_per_class:
            docs = docs[:max_docs_per_class]
        if len(docs) < 2:
            raise InputError(f"train_quality: fewer than 2 documents for {label} in {files}")
        classes[label] = docs
    t0 = time.perf_counter()
    train, valid = [], []
    for label, docs in classes.items():
        n_valid = int(len(docs) * valid_fraction) if valid_fraction > 0 else 0
        valid += [(label, d) for d in docs[:n_valid]]
        train += [(label, d) for d in docs[n_valid:]]
    rng.shuffle(train)
    out = Path(out_bin)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="refine-train-quality-") as tmp:
        train_file = Path(tmp) / "train.txt"
        with open(train_file, "w", encoding="utf-8") as f:
            for label, doc in train:
                f.write(f"{label} {doc}\n")
        fit = {
            "input": str(train_file),
            "epoch": epoch,
            "lr": lr,
            "dim": dim,
            "wordNgrams": word_ngrams,
            "minCount": min_count,
            "bucket": bucket,
            "thread": threads or max(1, min(8, os.cpu_count() or 1)),
            "seed": seed,
            "verbose": 0,
        }
        # In a fresh interpreter: fastText's training result depends on the state of the heap
        # it starts from (it changes with MALLOC_PERTURB_; after other native libraries ran in
        # the same process it diverged to NaN), so a clean process makes it repeatable.
        proc = subprocess.run(
            [sys.executable, "-c", _FIT_FASTTEXT, json.dumps({"fit": fit, "out": str(out)})],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no message"])[-1]
            raise RefineError(f"fastText training failed: {last} (a lower lr may help)")
    from fasttext.FastText import _FastText

    model = _FastText(model_path=str(out))
    seconds = time.perf_counter() - t0
    result: dict[str, Any] = {
        "model": str(out),
        "positive_label": positive_label,
        "train": {lab: sum(1 for x, _ in train if x == lab) for lab in classes},
        "valid": {lab: sum(1 for x, _ in valid if x == lab) for lab in classes},
        "bytes": out.stat().st_size,
        "seconds": round(seconds, 3),
    }
    if valid:
        probs = label_probability(model, [d for _, d in valid], positive_label)
        truth = [lab == positive_label for lab, _ in valid]
        pred = [p >= 0.5 for p in probs]
        tp = sum(t and p for t, p in zip(truth, pred, strict=True))
        fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
        fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
        result["precision"] = tp / (tp + fp) if tp + fp else 0.0
        result["recall"] = tp / (tp + fn) if tp + fn else 0.0
        result["accuracy"] = sum(t == p for t, p in zip(truth, pred, strict=True)) / len(valid)
    if verbose:
        print(json.dumps(result, indent=2))
    return result


_FIT_FASTTEXT = """
import json, sys
from fasttext import train_supervised
args = json.loads(sys.argv[1])
train_supervised(**args["fit"]).save_model(args["out"])
"""


def _as_list(files: Iterable[str] | str) -> list[str]:
    return [files] if isinstance(files, str | os.PathLike) else list(files)
