"""A reference token distribution: what ``llama3_heuristics`` measures documents against.

Llama 3 (Dubey et al. 2024, section 3.1.1) drops documents whose token distribution diverges from
the training corpus's (Kullback-Leibler divergence). ``build_reference`` counts the tokens of a
corpus the user names and writes the ``top_k`` most frequent with their counts to a small JSON file
(~1 MB for 50k tokens); ``load_reference`` turns it into log-probabilities, once per worker.

Tokens are the shared words of ``refine.filters.words`` (spaCy English rules), lower-cased, so the
reference and the documents are split the same way and the stage reuses the ``_words`` column.

Probabilities (unit: natural log). With ``T`` tokens counted, ``V`` distinct, ``N1`` of them seen
once, and the top ``K`` kept:

- a kept token ``w``: ``q(w) = count(w) / (T + N1)``;
- any other token: ``q = oov_mass / oov_types``, where ``oov_mass = (T - sum(top K) + N1) /
  (T + N1)`` is the mass outside the top K plus a Good-Turing estimate of unseen tokens (``N1/T``),
  spread over ``oov_types = V - K + N1`` types (those seen outside the top K, and as many unseen
  ones as there were singletons). The probabilities sum to 1 and no token gets probability 0.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refine.errors import ConfigError
from refine.filters import words as W

FORMAT = "refine.token_reference.v1"
TOKENIZER = "refine.filters.words.split_words, lower-cased"
_BATCH = 1000  # documents split per batch while counting


def corpus_texts(source: str | os.PathLike | Iterable[str] | Iterable[str | os.PathLike]):
    """The documents of ``source``: an iterable of texts, or paths (files or directories) of
    Parquet (``text`` column), JSON lines (``text`` key; ``.gz`` too) or plain text (one document
    per line; ``.gz`` too)."""
    if isinstance(source, str | os.PathLike):
        yield from _file_texts(Path(source))
        return
    for item in source:
        if isinstance(item, os.PathLike):
            yield from _file_texts(Path(item))
        elif isinstance(item, str):
            yield item
        elif item is not None:
            raise TypeError(f"build_reference: expected texts or paths, got {type(item).__name__}")


def _file_texts(path: Path) -> Iterator[str]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and not child.name.startswith((".", "_")):
                yield from _file_texts(child)
        return
    if not path.is_file():
        raise ConfigError(f"reference corpus {str(path)!r}: no such file or directory")
    name = path.name.lower()
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise ConfigError(f"reference corpus {str(path)!r}: no 'text' column")
        for batch in pf.iter_batches(columns=["text"], batch_size=_BATCH):
            yield from (t for t in batch.column(0).to_pylist() if t)
        return
    opener = gzip.open if name.endswith(".gz") else open
    stem = name.removesuffix(".gz")
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        if stem.endswith((".jsonl", ".json", ".ndjson")):
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    text = json.loads(line).get("text")
                except (json.JSONDecodeError, AttributeError) as e:
                    raise ConfigError(
                        f"reference corpus {str(path)!r} line {lineno}: not a JSON object ({e})"
                    ) from None
                if text:
                    yield text
        else:
            yield from (line for line in f if line.strip())


def build_reference(
    source: str | os.PathLike | Iterable[str] | Iterable[str | os.PathLike],
    out_path: str | os.PathLike,
    *,
    top_k: int = 50_000,
    language: str | None = None,
) -> dict:
    """Count the tokens of ``source`` and write the reference file; returns its summary.

    ``top_k``: how many of the most frequent tokens are kept (the rest share the OOV mass).
    ``language``: recorded in the file, for the user's information.
    """
    if top_k < 1:
        raise ValueError("top_k must be >= 1")
    counts: dict[str, int] = {}
    docs = 0
    batch: list[str] = []

    def flush() -> None:
        if not batch:
            return
        flat = pc.utf8_lower(pc.list_flatten(W.split_texts(batch)))
        if len(flat):
            vc = pc.value_counts(flat)
            for tok, n in zip(
                vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
            ):
                counts[tok] = counts.get(tok, 0) + n
        batch.clear()

    for text in corpus_texts(source):
        batch.append(text)
        docs += 1
        if len(batch) >= _BATCH:
            flush()
    flush()
    if not counts:
        raise ConfigError(f"reference corpus for {str(out_path)!r}: no tokens found")
    total = sum(counts.values())
    singletons = sum(1 for n in counts.values() if n == 1)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
    summary = {
        "format": FORMAT,
        "tokenizer": TOKENIZER,
        "language": language,
        "documents": docs,
        "total_tokens": total,
        "distinct_tokens": len(counts),
        "singletons": singletons,
        "top_k": len(top),
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({**summary, "tokens": top}, f, ensure_ascii=False, separators=(",", ":"))
    os.replace(tmp, out)
    return summary


@dataclass(frozen=True)
class TokenReference:
    """A loaded reference: its kept tokens, their log-probabilities, and the OOV log-probability
    of any other token (natural log)."""

    path: str
    vocab: pa.Array  # large_string, the top-K tokens
    log_probs: np.ndarray  # float64, aligned with vocab
    oov_log_prob: float
    language: str | None

    def log_q(self, tokens: pa.Array) -> np.ndarray:
        """log q(token) for every token of ``tokens`` (lower-cased already)."""
        idx = pc.index_in(tokens, value_set=self.vocab)
        found = W.as_numpy(pc.is_valid(idx)).astype(bool)
        out = np.full(len(tokens), self.oov_log_prob, np.float64)
        if found.any():
            out[found] = self.log_probs[W.as_numpy(idx.filter(pc.is_valid(idx))).astype(np.int64)]
        return out


def _parse(path: str) -> TokenReference:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"token reference {path!r}: file not found") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"token reference {path!r}: not a readable JSON file ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT or not data.get("tokens"):
        raise ConfigError(
            f"token reference {path!r}: not a {FORMAT} file (make one with build_reference / "
            "`refine build-reference`)"
        )
    tokens = [t for t, _ in data["tokens"]]
    counts = np.array([n for _, n in data["tokens"]], np.float64)
    total = float(data["total_tokens"])
    n1 = float(data.get("singletons", 0))
    kept = float(counts.sum())
    z = total + n1
    oov_mass = min(max((total - kept + n1) / z, 1e-9), 0.99)
    oov_types = max(float(data.get("distinct_tokens", len(tokens))) - len(tokens) + n1, 1.0)
    return TokenReference(
        path=path,
        vocab=pa.array(tokens, pa.large_string()),
        log_probs=np.log(counts / z),
        oov_log_prob=float(np.log(oov_mass / oov_types)),
        language=data.get("language"),
    )


_lock = threading.Lock()
_cache: dict[tuple[str, float], TokenReference] = {}


def load_reference(path: str | os.PathLike) -> TokenReference:
    """The reference at ``path``, parsed once per process (and again if the file changes)."""
    path = os.path.expanduser(str(path))
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        raise ConfigError(f"token reference {path!r}: file not found") from None
    key = (path, mtime)
    with _lock:
        ref = _cache.get(key)
        if ref is None:
            ref = _parse(path)
            if len(_cache) >= 16:  # a few references per run (one per language); bound memory
                _cache.clear()
            _cache[key] = ref
    return ref
