"""Token shard formats: writers (one shard = one call) and the readers ``verify`` uses.

Every shard also gets ``docs/shard-K.parquet`` (``id``, ``source``, ``offset``, ``num_tokens``).
A shard is given as flat token ids (uint32) plus document offsets (int64, n+1 entries), and
the ``id``/``source`` of its documents. Each writer returns ``{relative path: file}`` for the
files it wrote, each written under a temporary name and renamed when complete.

- ``parquet``: ``parquet/shard-K.parquet`` with ``input_ids`` list<uint32>, ``id``, ``source``,
  ``num_tokens`` (one row per document, one row group, zstd).
- ``megatron``: ``megatron/shard-K.bin`` + ``.idx``, Megatron-LM's ``MMIDIDX`` indexed dataset:
  one sequence per document (``[BOS] tokens EOS``), ``document_indices`` 0..n; dtype as Megatron's
  ``DType.optimal_dtype`` (uint16 below 65,500 ids, else int32). Pass the prefix
  ``.../megatron/shard-K`` to ``IndexedDataset`` or ``--data-path``.
- ``flat``: ``flat/shard-K.bin``, the tokens back to back, little-endian uint16 when the
  vocabulary fits else uint32 (``np.memmap(path, dtype)`` as nanoGPT does), and
  ``flat/shard-K.offsets.bin``: little-endian int64 document start offsets, n+1 entries.
"""

from __future__ import annotations

import hashlib
import os
import struct
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refine.pipeline.storage import write_parquet_atomic
from refine.tokenize.tokenizer import TokenizerInfo

FORMATS = ("parquet", "megatron", "flat")
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_CODES = {np.dtype("<u2"): 8, np.dtype("<i4"): 4, np.dtype("<u1"): 1, np.dtype("<i8"): 5}
MEGATRON_DTYPES = {v: k for k, v in MEGATRON_CODES.items()}
PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("source", pa.string()),
        ("num_tokens", pa.int64()),
        ("input_ids", pa.list_(pa.uint32())),
    ]
)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def _atomic_bytes(path: Path, chunks: list[bytes | memoryview]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            for c in chunks:
                f.write(c)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_facts(path: Path) -> dict[str, Any]:
    """Size in bytes and sha256 of a file, read in 8 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


def write_parquet_shard(
    root: Path,
    index: int,
    tokens: np.ndarray,
    offsets: np.ndarray,
    ids: pa.Array,
    sources: pa.Array,
) -> list[str]:
    rel = f"parquet/{shard_name(index)}.parquet"
    table = pa.table(
        [
            ids,
            sources,
            pa.array(np.diff(offsets)),
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(tokens)),
        ],
        schema=PARQUET_SCHEMA,
    )
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=max(1, table.num_rows))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return [rel]


def write_docs_index(
    root: Path, index: int, offsets: np.ndarray, ids: pa.Array, sources: pa.Array
) -> list[str]:
    """``docs/shard-K.parquet``: ``id``, ``source``, ``offset``, ``num_tokens`` of every document
    of the shard, whatever the formats: lineage (which page is at which token offset) and what
    ``verify`` uses to find a document's text."""
    rel = f"docs/{shard_name(index)}.parquet"
    table = pa.table(
        {
            "id": ids,
            "source": sources,
            "offset": pa.array(offsets[:-1].astype(np.int64)),
            "num_tokens": pa.array(np.diff(offsets).astype(np.int64)),
        }
    )
    write_parquet_atomic(table, root / rel)
    return [rel]


def write_megatron_shard(
    root: Path, index: int, tokens: np.ndarray, offsets: np.ndarray, info: TokenizerInfo
) -> list[str]:
    dtype = info.megatron_dtype
    lengths = np.diff(offsets)
    if len(lengths) and lengths.max() > np.iinfo(np.int32).max:
        raise ValueError("a document longer than 2**31 tokens cannot go into a Megatron index")
    n = len(lengths)
    idx = [
        MEGATRON_HEADER,
        struct.pack("<Q", 1),
        struct.pack("<B", MEGATRON_CODES[dtype]),
        struct.pack("<Q", n),  # sequences: one per document
        struct.pack("<Q", n + 1),  # document_indices entries
        lengths.astype("<i4").tobytes(),
        (offsets[:-1] * dtype.itemsize).astype("<i8").tobytes(),  # byte pointers
        np.arange(n + 1, dtype="<i8").tobytes(),
    ]
    stem = f"megatron/{shard_name(index)}"
    _atomic_bytes(root / f"{stem}.bin", [tokens.astype(dtype).tobytes()])
    _atomic_bytes(root / f"{stem}.idx", idx)
    return [f"{stem}.bin", f"{stem}.idx"]


def write_flat_shard(
    root: Path, index: int, tokens: np.ndarray, offsets: np.ndarray, info: TokenizerInfo
) -> list[str]:
    stem = f"flat/{shard_name(index)}"
    _atomic_bytes(root / f"{stem}.bin", [tokens.astype(info.token_dtype).tobytes()])
    _atomic_bytes(root / f"{stem}.offsets.bin", [offsets.astype("<i8").tobytes()])
    return [f"{stem}.bin", f"{stem}.offsets.bin"]


def write_shard(
    root: Path,
    index: int,
    formats: list[str],
    tokens: np.ndarray,
    offsets: np.ndarray,
    ids: pa.Array,
    sources: pa.Array,
    info: TokenizerInfo,
) -> dict[str, Any]:
    """Write one shard in every format; its manifest entry (documents, tokens, files)."""
    written = write_docs_index(root, index, offsets, ids, sources)
    if "parquet" in formats:
        written += write_parquet_shard(root, index, tokens, offsets, ids, sources)
    if "megatron" in formats:
        written += write_megatron_shard(root, index, tokens, offsets, info)
    if "flat" in formats:
        written += write_flat_shard(root, index, tokens, offsets, info)
    return {
        "name": shard_name(index),
        "documents": len(offsets) - 1,
        "tokens": int(offsets[-1]),
        "files": {rel: file_facts(root / rel) for rel in written},
    }


# -- readers (verify, tests) -----------------------------------------------------------------
def read_megatron_index(idx_path: Path) -> tuple[np.dtype, np.ndarray, np.ndarray, np.ndarray]:
    """(dtype, sequence lengths, byte pointers, document indices) of a ``.idx`` file."""
    buf = Path(idx_path).read_bytes()
    if buf[:9] != MEGATRON_HEADER:
        raise ValueError(f"{idx_path}: not a Megatron MMIDIDX index")
    (version,) = struct.unpack_from("<Q", buf, 9)
    (code,) = struct.unpack_from("<B", buf, 17)
    n_seq, n_doc = struct.unpack_from("<QQ", buf, 18)
    if version != 1:
        raise ValueError(f"{idx_path}: index version {version}")
    pos = 34
    lengths = np.frombuffer(buf, "<i4", n_seq, pos)
    pos += lengths.nbytes
    pointers = np.frombuffer(buf, "<i8", n_seq, pos)
    pos += pointers.nbytes
    docs = np.frombuffer(buf, "<i8", n_doc, pos)
    return MEGATRON_DTYPES[code], lengths, pointers, docs


def read_shard_tokens(root: Path, fmt: str, name: str, dtype: np.dtype) -> tuple[Any, Any]:
    """(flat tokens as uint32, int64 offsets) of one shard in one format."""
    if fmt == "parquet":
        t = pq.read_table(root / "parquet" / f"{name}.parquet", columns=["input_ids"])
        ids = t["input_ids"].combine_chunks()
        offsets = ids.offsets.to_numpy().astype(np.int64)
        tokens = ids.values.to_numpy(zero_copy_only=False).astype(np.uint32)
        return tokens, offsets - offsets[0]
    if fmt == "megatron":
        mdtype, lengths, pointers, _ = read_megatron_index(root / "megatron" / f"{name}.idx")
        tokens = np.fromfile(root / "megatron" / f"{name}.bin", dtype=mdtype).astype(np.uint32)
        offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        if len(pointers) and not np.array_equal(pointers, offsets[:-1] * mdtype.itemsize):
            raise ValueError(f"megatron/{name}.idx: sequence pointers do not match the lengths")
        return tokens, offsets
    if fmt == "flat":
        tokens = np.memmap(root / "flat" / f"{name}.bin", dtype=dtype, mode="r")
        offsets = np.fromfile(root / "flat" / f"{name}.offsets.bin", dtype="<i8")
        return np.asarray(tokens, dtype=np.uint32), offsets
    raise ValueError(f"unknown format {fmt!r}")
