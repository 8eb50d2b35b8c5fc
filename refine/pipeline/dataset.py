"""The published dataset: the final documents as shards people load without refine.

```
OUTPUT/dataset/part-ID.parquet    output_format: parquet (default)
OUTPUT/dataset/part-ID.jsonl.gz   output_format: jsonl.gz
```

One shard per documents part, named after it, so the shards' name order is the parts' order.
Both load with ``datasets.load_dataset("parquet" | "json", data_files=".../dataset/*.<ext>")``
and with pandas. What that takes:

- A map column is written as a list of ``{key, value}`` structs: ``datasets`` has no map type
  (huggingface/datasets#5612), and a JSON object's keys would become struct fields fixed by the
  first shard, so a later shard with other keys would fail to load.
- An empty part gives a Parquet shard with the schema and no row groups (``datasets`` refuses a
  0-row row group: "BatchSize must be greater than 0"), or an empty gzip file.
- JSON Lines: timestamps are ISO 8601 in UTC ending in ``Z`` (a timestamp without a time zone
  is taken as UTC); float32 values are written as their shortest decimal (``0.97``, not
  ``0.9700000286102295``); NaN and infinities as ``null``; decimals as strings; binary and
  duration columns are refused. ``datasets`` fixes a JSON dataset's column types from the first
  ~10 MB of the first non-empty shard: a column that is null all through it is typed ``null`` and
  a later value fails to load; pass ``features=`` then, or use Parquet, which carries its types.
- Columns whose name starts with ``_`` are scratch and are not published.
- ``pandas.read_parquet(OUTPUT/dataset)`` reads every file there whose name does not start with
  ``.`` or ``_``: a user's ``README.md`` beside the shards breaks it (a glob does not).
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from refine.errors import RefineError
from refine.pipeline.gather import map_list
from refine.pipeline.storage import TMP_PREFIX, safe_component

DATASET_FORMATS = ("parquet", "jsonl.gz")

#: Documents per batch read from a part: bounds a task's memory (about this many times the mean
#: document size) and is the Parquet row group size (datatrove's ParquetWriter writes 1000 too).
BATCH_ROWS = 1000

_SHARD = re.compile(r"part-.+\.(parquet|jsonl\.gz)")
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_APPEND_NEWLINE


def write_dataset(
    parts: list[Path], out_dir: Path, fmt: str, *, client: Any = None
) -> dict[str, Any]:
    """Write one ``fmt`` shard per part into ``out_dir`` (on the Dask cluster when ``client`` is
    given), then remove the shards and temporaries of earlier calls that this one did not write.
    Other files in ``out_dir`` are left alone. Returns the report's summary; ``bytes`` is the
    shards' size on disk."""
    if fmt not in DATASET_FORMATS:
        raise RefineError(f"output_format {fmt!r} is not one of {', '.join(DATASET_FORMATS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [shard_name(p, fmt) for p in parts]
    seen: dict[str, Path] = {}
    for part, name in zip(parts, names, strict=True):
        if name in seen:
            raise RefineError(f"{seen[name]} and {part} would both be published as {name}")
        seen[name] = part
    args = ([str(p) for p in parts], [str(out_dir)] * len(parts), [fmt] * len(parts))
    if client is None:
        shards = [write_shard(*a) for a in zip(*args, strict=True)]
    else:
        shards = map_list(client, write_shard, *args)
    _remove_stale(out_dir, keep=set(names))
    columns = shards[0]["columns"] if shards else []
    for part, shard in zip(parts, shards, strict=True):
        if shard["columns"] != columns:
            raise RefineError(
                f"{part} has columns {shard['columns']} but {parts[0]} has {columns}: the "
                f"shards of {out_dir} would not load as one dataset"
            )
    return {
        "format": fmt,
        "shards": len(shards),
        "documents": sum(s["documents"] for s in shards),
        "bytes": sum(s["bytes"] for s in shards),
        "columns": columns,
    }


def shard_name(part: str | os.PathLike, fmt: str) -> str:
    """``part-ID.parquet`` -> ``part-ID.<fmt>``."""
    name = Path(part).name
    if not (name.startswith("part-") and name.endswith(".parquet")):
        raise RefineError(f"{part} is not a documents part (part-ID.parquet)")
    return safe_component(f"{name[: -len('.parquet')]}.{fmt}")


def write_shard(part: str, out_dir: str, fmt: str) -> dict[str, Any]:
    """Publish one part as ``out_dir/part-ID.<fmt>``, batch by batch, under a temporary name
    renamed when complete. The unit of work ``write_dataset`` maps over the cluster."""
    dest = Path(out_dir) / shard_name(part, fmt)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetFile(part) as pf:
        rows, columns = _write(pf, part, dest, fmt)
    return {
        "shard": dest.name,
        "documents": rows,
        "bytes": dest.stat().st_size,
        "columns": columns,
    }


def _write(pf: pq.ParquetFile, part: str, dest: Path, fmt: str) -> tuple[int, list[str]]:
    """Write ``pf``'s public columns to ``dest`` as ``fmt``: the documents written, the columns."""
    keep = [i for i, f in enumerate(pf.schema_arrow) if not f.name.startswith("_")]
    fields = [pf.schema_arrow.field(i) for i in keep]
    batches = (b for b in pf.iter_batches(batch_size=BATCH_ROWS) if b.num_rows)
    rows = 0
    with _atomic_path(dest) as tmp:
        if fmt == "parquet":
            schema = pa.schema([_convert_field(f, _same) for f in fields])
            with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
                for batch in batches:
                    writer.write_batch(_conform(batch, keep, schema))
                    rows += batch.num_rows
        else:
            as_text = pa.schema([_json_field(f, part, pa.string()) for f in fields])
            as_json = pa.schema([_json_field(f, part, pa.float64()) for f in fields])
            every = range(len(fields))
            with (
                open(tmp, "wb") as raw,
                gzip.GzipFile(dest.name, "wb", compresslevel=6, fileobj=raw, mtime=0) as gz,
            ):
                for batch in batches:
                    batch = _conform(_conform(batch, keep, as_text), every, as_json)
                    try:
                        lines = [
                            orjson.dumps(r, default=_json_default, option=_JSON_OPTIONS)
                            for r in batch.to_pylist()
                        ]
                    except orjson.JSONEncodeError as e:
                        raise RefineError(f"{part}: cannot write as JSON Lines: {e}") from None
                    gz.write(b"".join(lines))
                    rows += batch.num_rows
    return rows, [f.name for f in fields]


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """A temporary name beside ``path``, renamed to it when the block ends without error."""
    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_stale(out_dir: Path, keep: set[str]) -> None:
    """Remove refine's shards (any format) and temporaries that are not in ``keep``."""
    for entry in os.scandir(out_dir):
        looks_ours = _SHARD.fullmatch(entry.name) or entry.name.startswith(TMP_PREFIX)
        if looks_ours and entry.name not in keep and not entry.is_dir(follow_symlinks=False):
            os.unlink(entry.path)


def _conform(batch: pa.RecordBatch, columns: Any, schema: pa.Schema) -> pa.RecordBatch:
    """``batch``'s ``columns`` (indices) cast to ``schema``'s types."""
    arrays = [batch.column(i) for i in columns]
    arrays = [
        a if a.type == f.type else a.cast(f.type) for a, f in zip(arrays, schema, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _convert_field(field: pa.Field, leaf: Callable[[pa.DataType], pa.DataType]) -> pa.Field:
    """``field`` with maps made lists of ``{key, value}`` and every leaf type passed to ``leaf``,
    at any depth."""
    t = field.type
    if pa.types.is_map(t):
        kv = pa.struct([_convert_field(t.key_field, leaf), _convert_field(t.item_field, leaf)])
        return field.with_type(pa.list_(kv))
    if pa.types.is_struct(t):
        return field.with_type(pa.struct([_convert_field(f, leaf) for f in t]))
    if pa.types.is_list(t):
        return field.with_type(pa.list_(_convert_field(t.value_field, leaf)))
    if pa.types.is_large_list(t):
        return field.with_type(pa.large_list(_convert_field(t.value_field, leaf)))
    if pa.types.is_fixed_size_list(t):
        return field.with_type(pa.list_(_convert_field(t.value_field, leaf), t.list_size))
    return field.with_type(leaf(t))


def _same(t: pa.DataType) -> pa.DataType:
    return t


class _NotJSON(Exception):
    pass


def _json_field(field: pa.Field, part: str, float_as: pa.DataType) -> pa.Field:
    """``field`` as written to JSON, in two casts: float32 (and float16) through ``string``
    (Arrow's shortest round-trip text) then ``float64``, so orjson prints ``0.97``."""

    def leaf(t: pa.DataType) -> pa.DataType:
        if pa.types.is_timestamp(t):
            return pa.timestamp(t.unit, tz="UTC")
        if pa.types.is_float32(t) or pa.types.is_float16(t):
            return float_as
        if pa.types.is_decimal(t):
            return pa.string()
        if any(
            check(t)
            for check in (
                pa.types.is_binary,
                pa.types.is_large_binary,
                pa.types.is_fixed_size_binary,
                pa.types.is_duration,
                pa.types.is_interval,
            )
        ):
            raise _NotJSON(t)
        return t

    try:
        return _convert_field(field, leaf)
    except _NotJSON as e:
        raise RefineError(
            f"{part}: column {field.name!r} holds {e.args[0]} values, which JSON Lines cannot "
            f"hold: set output_format: parquet, or drop the column"
        ) from None


def _json_default(value: Any) -> Any:
    # nanosecond timestamps come out of Arrow as pandas.Timestamp, which orjson does not know
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    raise TypeError(f"Type is not JSON serializable: {type(value).__name__}")
