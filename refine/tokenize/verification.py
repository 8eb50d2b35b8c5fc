"""``verify(OUTPUT)``: re-read every token shard and check it against ``manifest.json``.

Checks, per shard: every file's size and sha256; documents and tokens per format; the formats
hold the same token ids; every document ends with EOS (and starts with BOS when the manifest
says so); every id is below the vocabulary size. Then a sample of documents is decoded back to
text and compared with the pre-tokenization documents (``source_documents`` in the manifest),
looked up by id. Memory: one shard at a time plus the sample.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from refine.errors import RefineError
from refine.tokenize.writers import file_facts, read_shard_tokens


@dataclass
class VerifyReport:
    shards: int = 0
    documents: int = 0
    tokens: int = 0
    files: int = 0
    sampled: int = 0  # documents decoded and compared with their text
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "shards": self.shards,
            "documents": self.documents,
            "tokens": self.tokens,
            "files": self.files,
            "sampled": self.sampled,
            "problems": self.problems,
        }


def verify(output_dir: str | Path, sample: int = 200, seed: int = 0) -> VerifyReport:
    """Check ``OUTPUT/tokens`` (or a tokens folder given directly); ``sample`` documents are
    decoded and compared with their text (all of them when ``sample`` is negative)."""
    out = Path(output_dir)
    root = out / "tokens" if (out / "tokens" / "manifest.json").is_file() else out
    manifest_path = root / "manifest.json"
    if not manifest_path.is_file():
        raise RefineError(f"{out}: no tokens/manifest.json (did the run include `tokenize`?)")
    manifest = json.loads(manifest_path.read_text())
    rep = VerifyReport()
    tok_info = manifest["tokenizer"]
    flat_dtype = np.dtype(manifest["dtype"].get("flat", "uint32")).newbyteorder("<")
    formats = manifest["formats"]
    eos, bos, vocab = tok_info["eos_id"], tok_info["bos_id"], tok_info["vocab_size"]
    rng = random.Random(seed)
    total_docs = manifest["documents"]
    keep_p = 1.0 if sample < 0 or sample >= total_docs else sample / max(1, total_docs)
    picked: dict[str, list[int]] = {}  # document id -> its tokens (without BOS/EOS)
    for shard in manifest["shards"]:
        name = shard["name"]
        rep.shards += 1
        for rel, facts in shard["files"].items():
            rep.files += 1
            path = root / rel
            if not path.is_file():
                rep.problems.append(f"{rel}: missing")
                continue
            got = file_facts(path)
            if got != facts:
                rep.problems.append(f"{rel}: {got} != manifest {facts}")
        reference = None
        for fmt in formats:
            try:
                tokens, offsets = read_shard_tokens(root, fmt, name, flat_dtype)
            except (OSError, ValueError, pa.ArrowException) as e:
                rep.problems.append(f"{fmt}/{name}: unreadable: {e}")
                continue
            docs, n_tok = len(offsets) - 1, int(offsets[-1])
            if docs != shard["documents"] or n_tok != shard["tokens"] or len(tokens) != n_tok:
                rep.problems.append(
                    f"{fmt}/{name}: {docs} documents / {len(tokens)} tokens, manifest says "
                    f"{shard['documents']} / {shard['tokens']}"
                )
                continue
            if reference is None:
                reference = (tokens, offsets)
                _check_structure(rep, f"{fmt}/{name}", tokens, offsets, eos, bos, vocab)
            elif not (
                np.array_equal(reference[0], tokens) and np.array_equal(reference[1], offsets)
            ):
                rep.problems.append(f"{fmt}/{name}: token ids differ from {formats[0]}/{name}")
        rep.documents += shard["documents"]
        rep.tokens += shard["tokens"]
        if reference is not None:
            ids = pq.read_table(root / "docs" / f"{name}.parquet", columns=["id"])["id"]
            tokens, offsets = reference
            skip = 1 if bos is not None else 0
            for i, doc_id in enumerate(ids.to_pylist()):
                if rng.random() < keep_p:
                    picked[doc_id] = tokens[offsets[i] + skip : offsets[i + 1] - 1].tolist()
    if manifest["documents"] != rep.documents or manifest["tokens"] != rep.tokens:
        rep.problems.append("manifest totals differ from the sum of its shards")
    if picked:
        _compare_texts(rep, root, manifest, picked)
    return rep


def _check_structure(rep, where, tokens, offsets, eos, bos, vocab) -> None:
    if len(tokens) == 0:
        return
    if int(tokens.max()) >= vocab:
        rep.problems.append(f"{where}: token id {int(tokens.max())} >= vocab size {vocab}")
    if not np.all(tokens[offsets[1:] - 1] == eos):
        rep.problems.append(f"{where}: a document does not end with EOS {eos}")
    if bos is not None and not np.all(tokens[offsets[:-1]] == bos):
        rep.problems.append(f"{where}: a document does not start with BOS {bos}")


def _compare_texts(rep: VerifyReport, root: Path, manifest: dict, picked: dict) -> None:
    from refine.tokenize.tokenizer import load_tokenizer, tokenizer_hash

    spec = manifest["tokenizer"]["spec"]
    tok = load_tokenizer(spec)
    if tokenizer_hash(spec) != manifest["tokenizer"]["sha256"]:
        rep.problems.append(f"tokenizer {spec!r} changed since the shards were written")
        return
    docs_dir = root.parent / manifest["source_documents"]
    if not docs_dir.is_dir():
        rep.problems.append(f"{docs_dir}: pre-tokenization documents not found")
        return
    dataset = ds.dataset(str(docs_dir), format="parquet")
    wanted = pa.array(list(picked), pa.string())
    table = dataset.to_table(columns=["id", "text"], filter=pc.field("id").isin(wanted))
    texts = dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))
    for doc_id, ids in picked.items():
        rep.sampled += 1
        if doc_id not in texts:
            rep.problems.append(f"document {doc_id}: not among the pre-tokenization documents")
        elif tok.decode(ids, skip_special_tokens=False) != texts[doc_id]:
            rep.problems.append(f"document {doc_id}: decoded tokens differ from its text")
