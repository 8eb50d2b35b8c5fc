"""Token shard formats: writers (one shard = one call) and the readers ``verify`` uses.

Every shard also gets ``docs/shard-K.parquet`` (``id``, ``source``, ``offset``, ``num_tokens``).
A shard is given as flat token ids (uint32) plus document offsets (int64, n+1 entries), and
the ``id``/``source`` of its documents. Each writer returns ``{relative path: facts}`` (size
in bytes, sha256) for the files it wrote, each written under a temporary name, hashed while it
is written and renamed when complete.

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


Facts = dict[str, Any]  # {"bytes": size in bytes, "sha256": hex digest}


class HashedFile:
    """A binary file written under a temporary name and hashed as it is written, so the
    manifest's sha256 costs no second read of the shard; ``commit`` renames it into place.
    Also a file object that ``pyarrow.parquet.write_table`` accepts (it does not close it)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
        self._f = open(self.tmp, "wb")  # noqa: SIM115 (closed by commit/abort)
        self._hash = hashlib.sha256()
        self.size = 0
        self.closed = False

    def write(self, data: Any) -> int:
        if isinstance(data, np.ndarray):
            data = np.ascontiguousarray(data).view(np.uint8)
        view = memoryview(data).cast("B")
        self._hash.update(view)
        self.size += len(view)
        return self._f.write(view)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def close(self) -> None:  # pyarrow may call it; the file stays open until commit
        pass

    def commit(self) -> Facts:
        self._f.close()
        os.replace(self.tmp, self.path)
        self.closed = True
        return {"bytes": self.size, "sha256": self._hash.hexdigest()}

    def abort(self) -> None:
        self._f.close()
        self.tmp.unlink(missing_ok=True)
        self.closed = True


def write_hashed(path: Path, write: Any) -> Facts:
    """``write(file)`` into a ``HashedFile`` at ``path``; nothing is left behind on error."""
    f = HashedFile(path)
    try:
        write(f)
    except BaseException:
        f.abort()
        raise
    return f.commit()


def write_chunks(path: Path, chunks: list[Any]) -> Facts:
    def write(f: HashedFile) -> None:
        for c in chunks:
            f.write(c)

    return write_hashed(path, write)


def file_facts(path: Path) -> Facts:
    """Size in bytes and sha256 of a file, read in 8 MiB blocks (``verify``)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 23):
            h.update(block)
    return {"bytes": path.stat().st_size, "sha256": h.hexdigest()}


class TokenBytes:
    """The shard's tokens in each on-disk width, cast and hashed once: the Megatron and flat
    ``.bin`` hold the same bytes whenever their widths agree (uint16 below 65,500 ids; int32 and
    uint32 above, identical bytes since every id is below the vocabulary size < 2**31)."""

    def __init__(self, tokens: np.ndarray) -> None:
        self.tokens = tokens
        self._cache: dict[int, tuple[memoryview, str]] = {}

    def write(self, path: Path, dtype: np.dtype) -> Facts:
        dtype = np.dtype(dtype)
        if dtype.itemsize not in self._cache:
            arr = np.ascontiguousarray(self.tokens.astype(dtype.newbyteorder("<"), copy=False))
            view = memoryview(arr.view(np.uint8))
            self._cache[dtype.itemsize] = (view, hashlib.sha256(view).hexdigest())
        view, digest = self._cache[dtype.itemsize]
        _write_atomic(path, view)
        return {"bytes": len(view), "sha256": digest}


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_parquet(path: Path, table: pa.Table, **options: Any) -> Facts:
    return write_hashed(path, lambda f: pq.write_table(table, f, **options))


def write_parquet_shard(
    root: Path,
    index: int,
    tokens: np.ndarray,
    offsets: np.ndarray,
    ids: pa.Array,
    sources: pa.Array,
) -> dict[str, Facts]:
    rel = f"parquet/{shard_name(index)}.parquet"
    if len(tokens) and offsets[-1] > np.iinfo(np.int32).max:
        raise ValueError(f"{rel}: more than 2**31 tokens in one shard (lower shard_tokens)")
    table = pa.table(
        [
            ids,
            sources,
            pa.array(np.diff(offsets)),
            pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(tokens)),
        ],
        schema=PARQUET_SCHEMA,
    )
    # no dictionary: on token ids it makes the file bigger (1.34x on GPT-2 web text) and slower
    facts = _write_parquet(
        root / rel,
        table,
        compression="zstd",
        use_dictionary=False,
        row_group_size=max(1, table.num_rows),
    )
    return {rel: facts}


def write_docs_index(
    root: Path, index: int, offsets: np.ndarray, ids: pa.Array, sources: pa.Array
) -> dict[str, Facts]:
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
    return {rel: _write_parquet(root / rel, table, compression="zstd")}


def write_megatron_shard(
    root: Path, index: int, body: TokenBytes, offsets: np.ndarray, info: TokenizerInfo
) -> dict[str, Facts]:
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
        lengths.astype("<i4"),
        (offsets[:-1] * dtype.itemsize).astype("<i8"),  # byte pointers
        np.arange(n + 1, dtype="<i8"),
    ]
    stem = f"megatron/{shard_name(index)}"
    return {
        f"{stem}.bin": body.write(root / f"{stem}.bin", dtype),
        f"{stem}.idx": write_chunks(root / f"{stem}.idx", idx),
    }


def write_flat_shard(
    root: Path, index: int, body: TokenBytes, offsets: np.ndarray, info: TokenizerInfo
) -> dict[str, Facts]:
    stem = f"flat/{shard_name(index)}"
    return {
        f"{stem}.bin": body.write(root / f"{stem}.bin", info.token_dtype),
        f"{stem}.offsets.bin": write_chunks(root / f"{stem}.offsets.bin", [offsets.astype("<i8")]),
    }


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
    """Write one shard in every format, in one pass: each file is hashed as it is written and
    each on-disk dtype of the tokens is cast once. Returns its manifest entry (documents,
    tokens, files)."""
    files = write_docs_index(root, index, offsets, ids, sources)
    body = TokenBytes(tokens)
    if "parquet" in formats:
        files |= write_parquet_shard(root, index, tokens, offsets, ids, sources)
    if "megatron" in formats:
        files |= write_megatron_shard(root, index, body, offsets, info)
    if "flat" in formats:
        files |= write_flat_shard(root, index, body, offsets, info)
    return {
        "name": shard_name(index),
        "documents": len(offsets) - 1,
        "tokens": int(offsets[-1]),
        "files": files,
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
