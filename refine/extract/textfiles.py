"""Read documents that are already text: JSON Lines and Parquet, local or remote.

A text input skips extraction: each record becomes one row of the documents schema (``id``,
``url``, ``date``, ``text``, ``source``) plus the record's other fields as metadata columns.

Work is split so that one big file spreads over every worker, like WARC slices:
- an uncompressed JSONL file is cut into byte ranges; a range owns the lines that *start* in it
  (a reader of range k skips to the first line start at or after its start), so every line is
  read exactly once whatever the slice size;
- a Parquet file is cut into runs of row groups of about ``slice_bytes`` compressed bytes;
- a compressed JSONL file (gzip, zstd) cannot be entered in the middle: it is one part.

Positions are stable whatever the slicing: a JSONL record's position is the byte offset of its
line in the decompressed file, a Parquet record's is its row number in the file. ``source`` is
``file#position`` and, when the input has no id field, the id is made from the file and the
position, so a re-run (at any slice size, on any number of workers) gives the same ids.

Bad input never stops a run: a line that is not a JSON object, a record without text or with a
text that is not a string, invalid UTF-8, a truncated gzip/zstd stream, a Parquet file or row
group that cannot be read each become one dropped record with a reason and its ``file#position``
(``file#row_group=K`` for a row group), and reading goes on.
"""

from __future__ import annotations

import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from refine.errors import ConfigError, InputError

__all__ = [
    "CORE_COLUMNS",
    "TEXT_REASONS",
    "TextFields",
    "TextSlice",
    "plan_text_slices",
    "read_text_slice",
    "resolve_fields",
]

#: Columns refine itself gives every document; a carried field of the same name (or one starting
#: with ``_``, refine's scratch prefix) is renamed ``meta_<name>``.
CORE_COLUMNS = ("id", "url", "date", "text", "source")

#: Why a text-input record is dropped by ``read``.
TEXT_REASONS = (
    "not_json",  # the line does not parse as a JSON object
    "invalid_utf8",  # the line (or a Parquet text value) is not valid UTF-8
    "missing_text",  # no text field, or null
    "text_not_string",  # the text field holds a number, a list, an object...
    "empty_text",  # only white space
    "truncated",  # the gzip/zstd stream ends early (the records before it are kept)
    "unreadable_file",  # the file (or its compressed stream) cannot be opened or read
    "corrupt_row_group",  # a Parquet row group that does not decode
)
#: Reasons that are problems with the input: their location goes into the report's examples.
ERROR_REASONS = frozenset(TEXT_REASONS) - {"empty_text"}

_CHUNK = 8 << 20  # bytes of (decompressed) JSONL parsed per batch
_SAMPLE_RECORDS = 1000  # records of the first file that decide the metadata columns' types


@dataclass(frozen=True)
class TextFields:
    """Which input fields become which columns; resolved on the driver from the first file.

    ``metadata`` pairs a source field with the column it is carried into; ``metadata_schema``
    holds those columns' types (the first file's), so every part has the same schema.
    """

    text: str = "text"
    id: str | None = None  # None: an id from the file and the record's position
    url: str | None = None
    date: str | None = None
    metadata: tuple[tuple[str, str], ...] = ()
    metadata_schema: pa.Schema = field(default_factory=lambda: pa.schema([]))
    #: the first file's types of the id, url and date fields (what Arrow's JSON reader expects)
    source_types: dict[str, pa.DataType] = field(default_factory=dict)

    @property
    def wanted(self) -> list[str]:
        """The source fields read from each record."""
        names = [self.text, self.id, self.url, self.date, *(src for src, _ in self.metadata)]
        return list(dict.fromkeys(n for n in names if n))


@dataclass(frozen=True)
class TextSlice:
    """One part of one text file.

    JSONL: the lines that start in the byte range [start, end) (end None: to the end).
    Parquet: row groups [start, end) (end None: all of them), the first being row ``first_row``.
    """

    url: str
    format: str  # "jsonl" | "parquet"
    fields: TextFields
    start: int = 0
    end: int | None = None
    first_row: int = 0
    max_records: int | None = None


def compression(url: str) -> str | None:
    name = url.split("?", 1)[0].lower()
    if name.endswith(".gz"):
        return "gzip"
    if name.endswith((".zst", ".zstd")):
        return "zstd"
    return None


def output_name(field_name: str) -> str:
    """The column a carried field becomes: its own name unless refine uses that name."""
    if field_name in CORE_COLUMNS or field_name.startswith("_"):
        return f"meta_{field_name}"
    return field_name


# -- planning (driver) ---------------------------------------------------------------------------


def plan_text_slices(
    url: str,
    fmt: str,
    size: int | None,
    slice_bytes: int,
    fields: TextFields,
    max_records: int | None = None,
) -> list[TextSlice]:
    """Split one text file into parts of about ``slice_bytes`` (see the module docstring)."""
    one = [TextSlice(url, fmt, fields, max_records=max_records)]
    if max_records is not None or size is None or size <= slice_bytes:
        return one
    if fmt == "jsonl":
        if compression(url) is not None:
            return one
        n = math.ceil(size / slice_bytes)
        return [
            TextSlice(
                url, fmt, fields, i * slice_bytes, (i + 1) * slice_bytes if i < n - 1 else None
            )
            for i in range(n)
        ]
    try:
        meta = _parquet_file(url).metadata
    except Exception:  # noqa: BLE001 - the part that reads it reports why it does not open
        return one
    slices: list[TextSlice] = []
    first_group = first_row = rows = 0
    group_bytes = 0
    for g in range(meta.num_row_groups):
        rg = meta.row_group(g)
        group_bytes += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
        rows += rg.num_rows
        if group_bytes >= slice_bytes or g == meta.num_row_groups - 1:
            end = g + 1 if g < meta.num_row_groups - 1 else None
            slices.append(TextSlice(url, fmt, fields, first_group, end, first_row))
            first_group, first_row, group_bytes = g + 1, rows, 0
    return slices or one


def resolve_fields(
    url: str,
    fmt: str,
    *,
    text_field: str,
    id_field: str,
    url_field: str,
    date_field: str,
    metadata_fields: list[str] | str,
    explicit: set[str],
) -> TextFields:
    """Check the field mapping against the first file and fix the metadata columns' types.

    A field named explicitly in the config (or the text field) that the file lacks raises
    ``ConfigError`` naming the file and the field. The default id/url/date fields are used
    when the file has them."""
    available = _sample_schema(url, fmt)

    def pick(param: str, name: str) -> str | None:
        if name in available.names:
            return name
        if param in explicit:
            raise ConfigError(
                f"input {url}: field {name!r} ({param}) not found; its fields are: "
                f"{', '.join(available.names) or '(none)'}"
            )
        return None

    if text_field not in available.names:
        raise ConfigError(
            f"input {url}: field {text_field!r} (text_field) not found; its fields are: "
            f"{', '.join(available.names) or '(none)'}"
        )
    mapped = {
        "id": pick("id_field", id_field),
        "url": pick("url_field", url_field),
        "date": pick("date_field", date_field),
    }
    taken = {text_field, *(v for v in mapped.values() if v)}
    if metadata_fields == "all":
        carried = [n for n in available.names if n not in taken]
    else:
        carried = [n for n in metadata_fields if n not in taken]
        for name in carried:
            if name not in available.names:
                raise ConfigError(
                    f"input {url}: field {name!r} (metadata_fields) not found; its fields are: "
                    f"{', '.join(available.names)}"
                )
    pairs = tuple((n, output_name(n)) for n in carried)
    schema = pa.schema([(out, available.field(src).type) for src, out in pairs])
    types = {name: available.field(name).type for name in mapped.values() if name}
    return TextFields(text_field, mapped["id"], mapped["url"], mapped["date"], pairs, schema, types)


def _sample_schema(url: str, fmt: str) -> pa.Schema:
    """The fields of a file and their Arrow types: Parquet's schema, or inferred from the
    first records of a JSONL file (a field null in all of them, or of mixed types, is a string:
    other values are carried as their JSON text)."""
    if fmt == "parquet":
        try:
            return _parquet_file(url).schema_arrow
        except Exception as e:  # noqa: BLE001 - pyarrow, fsspec and HTTP errors all end here
            raise InputError(f"input {url}: cannot read it as Parquet: {e}") from None
    values: dict[str, list] = {}
    seen = 0
    try:
        for _, line in _iter_lines(url, 0, None):
            if seen >= _SAMPLE_RECORDS:
                break
            try:
                rec = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(rec, dict):
                continue
            for k in values.keys() - rec.keys():
                values[k].append(None)
            for k, v in rec.items():
                values.setdefault(k, [None] * seen).append(v)
            seen += 1
    except _StreamError as e:
        if not seen:  # the part that reads it reports the damage
            raise InputError(f"input {url}: cannot read it: {e.detail}") from None
    except OSError as e:
        raise InputError(f"input {url}: cannot read it: {e}") from None
    if not seen:
        raise InputError(f"input {url}: no JSON record to learn its fields from")
    fields = []
    for name, vals in values.items():
        try:
            t = pa.array(vals).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            t = pa.string()
        if pa.types.is_null(t):
            t = pa.string()
        fields.append((name, t))
    return pa.schema(fields)


def _parquet_file(url: str) -> pq.ParquetFile:
    if "://" not in url:
        return pq.ParquetFile(url)
    from refine.pipeline.inputs import open_url

    return pq.ParquetFile(open_url(url).open())


# -- reading (worker) ----------------------------------------------------------------------------


class _StreamError(Exception):
    def __init__(self, reason: str, offset: int, detail: str):
        super().__init__(detail)
        self.reason, self.offset, self.detail = reason, offset, detail


@dataclass
class TextBatch:
    """What one part read: the documents, and one row per dropped record."""

    table: pa.Table
    problems: list[tuple[str, str, str | None]]  # (reason, source, detail)
    positions: int  # records seen (kept + dropped)
    bytes_in: int  # bytes of input records (decompressed lines; Parquet: text bytes)
    counters: dict[str, int]


def read_text_slice(sl: TextSlice) -> TextBatch:
    if sl.format == "jsonl":
        return _read_jsonl(sl)
    if sl.format == "parquet":
        return _read_parquet(sl)
    raise ValueError(f"{sl.url}: unknown text format {sl.format!r}")


class _Columns:
    """Columns of kept records, built batch by batch into the documents schema."""

    def __init__(self, sl: TextSlice):
        self.sl = sl
        self.f = sl.fields
        self.tables: list[pa.Table] = []
        self.problems: list[tuple[str, str, str | None]] = []
        self.counters: dict[str, int] = {}
        self.file_key = xxhash.xxh3_64_hexdigest(sl.url.encode("utf-8"))

    def count(self, name: str, n: int = 1) -> None:
        if n:
            self.counters[name] = self.counters.get(name, 0) + n

    def problem(self, reason: str, position: int | str, detail: str | None) -> None:
        self.problems.append((reason, f"{self.sl.url}#{position}", detail))

    def add(
        self,
        positions: np.ndarray,
        texts: pa.Array,
        ids: pa.Array | None,
        urls: pa.Array | None,
        dates: pa.Array | None,
        metadata: dict[str, pa.Array | None],
    ) -> None:
        """Records whose text is a string (``texts`` without nulls): those that are blank are
        dropped as ``empty_text`` (one rule for every reader and path), the rest become rows of
        the documents schema. ``ids`` may hold nulls (position ids then); ``metadata`` columns
        are fitted to the run's metadata schema (None: the field is absent)."""
        positions = np.asarray(positions, dtype=np.int64)
        n = len(positions)
        if n == 0:
            return
        texts = _one_chunk(texts)
        if not pa.types.is_large_string(texts.type):
            texts = texts.cast(pa.large_string())
        blank_np = _blank(texts)
        if blank_np.any():
            for p in positions[blank_np].tolist():
                self.problem("empty_text", p, None)
            positions = positions[~blank_np]
            n = len(positions)
            if n == 0:
                return
            # the kept rows as zero-copy slices between the blank ones (a filter would copy
            # every text of the block to drop a few)
            cuts = np.flatnonzero(blank_np).tolist()
            runs = [(a + 1, b) for a, b in zip([-1, *cuts], [*cuts, len(blank_np)], strict=True)]

            def kept(values: Any) -> Any:
                if values is None:
                    return None
                pieces = [values.slice(a, b - a) for a, b in runs if b > a]
                return pa.chunked_array(pieces, type=values.type)

            texts, ids, urls, dates = (kept(_maybe_one(a)) for a in (texts, ids, urls, dates))
            metadata = {k: kept(_maybe_one(v)) for k, v in metadata.items()}
        pos = positions.tolist()
        url = self.sl.url
        key = self.file_key
        if ids is None:
            ids = pa.array([f"{key}-{p:012d}" for p in pos], pa.string())
        else:
            ids = _one_chunk(ids)
            if not pa.types.is_string(ids.type):
                ids = ids.cast(pa.string())
            if ids.null_count:
                self.count("id_missing", ids.null_count)
                filled = [
                    f"{key}-{p:012d}" if v is None else v
                    for v, p in zip(ids.to_pylist(), pos, strict=True)
                ]
                ids = pa.array(filled, pa.string())
        if urls is not None and not pa.types.is_string(urls.type):
            urls = _one_chunk(urls).cast(pa.string())
        sources = pa.array([f"{url}#{p}" for p in pos], pa.string())
        cols: dict[str, Any] = {
            "id": ids,
            "url": urls if urls is not None else pa.nulls(n, pa.string()),
            "date": self._dates(dates, n),
            "text": texts,
            "source": sources,
        }
        for _, out in self.f.metadata:
            cols[out] = self._fit(metadata.get(out), self.f.metadata_schema.field(out).type, n)
        self.tables.append(pa.table(cols, schema=self.schema))

    def _fit(
        self, values: pa.Array | pa.ChunkedArray | None, t: pa.DataType, n: int
    ) -> pa.Array | pa.ChunkedArray:
        """A metadata column of the run's type: absent is null (``metadata_missing``); a
        column of another type is cast, or null when it cannot be (``metadata_mismatch``)."""
        if values is None:
            self.count("metadata_missing", n)
            return pa.nulls(n, t)
        # kept as chunks: the pieces between blank texts, combined, would copy every nested
        # value (~a quarter of reading dolma's 145-field attributes)
        if values.type == t:
            return values
        try:
            return values.cast(t)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            self.count("metadata_mismatch", n - values.null_count)
            return pa.nulls(n, t)

    @property
    def schema(self) -> pa.Schema:
        from refine.extract.schema import DOC_SCHEMA

        return pa.schema(list(DOC_SCHEMA) + list(self.f.metadata_schema))

    def _dates(self, dates: pa.Array | None, n: int) -> pa.Array:
        target = pa.timestamp("us", tz="UTC")
        if dates is None:
            return pa.nulls(n, target)
        if pa.types.is_timestamp(dates.type):
            if dates.type.tz is None:
                return pc.assume_timezone(dates, "UTC").cast(target)
            return dates.cast(target)
        if pa.types.is_date(dates.type):
            return dates.cast(pa.timestamp("us")).cast(target)
        if not pa.types.is_string(dates.type) and not pa.types.is_large_string(dates.type):
            self.count("date_unparsed", n - dates.null_count)
            return pa.nulls(n, target)
        try:
            return dates.cast(target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
        from datetime import UTC, datetime

        out = []
        for s in dates.to_pylist():
            d = None
            if s:
                try:
                    d = datetime.fromisoformat(s.strip())
                    d = d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
                except ValueError:
                    self.count("date_unparsed")
            out.append(d)
        return pa.array(out, target)

    def finish(self, positions: int, bytes_in: int) -> TextBatch:
        table = pa.concat_tables(self.tables) if self.tables else self.schema.empty_table()
        return TextBatch(table, self.problems, positions, bytes_in, self.counters)


def _to_array(values: list, t: pa.DataType, cols: _Columns) -> pa.Array:
    """``values`` as an Arrow array of type ``t``; a value that does not fit is null (counted as
    ``metadata_mismatch``), except in a string column, which takes other values' JSON text."""
    try:
        return pa.array(values, t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, ValueError):
        pass
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return pa.array(
            [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
            t,
        )
    out = []
    for v in values:
        try:
            pa.array([v], t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError, ValueError):
            cols.count("metadata_mismatch")
            v = None
        out.append(v)
    return pa.array(out, t)


def _read_jsonl(sl: TextSlice) -> TextBatch:
    cols = _Columns(sl)
    seen = 0
    bytes_in = 0
    limit = sl.max_records
    json_schema = _json_schema(sl.fields)
    try:
        for base, block in _iter_blocks(sl.url, sl.start, sl.end):
            bytes_in += len(block)
            if limit is None:
                n = _arrow_block(base, block, json_schema, cols)
                if n is not None:
                    seen += n
                    continue
            seen += _python_block(base, block, cols, None if limit is None else limit - seen)
            if limit is not None and seen >= limit:
                break
    except _StreamError as e:
        seen += 1
        cols.problem(e.reason, e.offset, e.detail)
    return cols.finish(seen, bytes_in)


def _json_schema(f: TextFields) -> pa.Schema:
    """The fields read from each JSON record, by their names in the input, with the types of
    the run (the text a string)."""
    fields = [(f.text, pa.large_string())]
    for name in (f.id, f.url, f.date):
        if name is not None and name not in dict(fields):
            fields.append((name, f.source_types.get(name, pa.string())))
    for src, out in f.metadata:
        if src not in dict(fields):
            fields.append((src, f.metadata_schema.field(out).type))
    return pa.schema(fields)


def _arrow_block(base: int, block: bytes, schema: pa.Schema, cols: _Columns) -> int | None:
    """Parse a block of whole lines with Arrow's JSON reader (C++, no Python object per record).
    None when the block needs the per-line path: a line that is not a JSON object, a value of
    another type than the run's, invalid UTF-8, a record without text (the per-line path says
    which); otherwise the number of records."""
    import pyarrow.json as pj

    try:
        table = pj.read_json(
            pa.BufferReader(block),
            read_options=pj.ReadOptions(use_threads=False, block_size=len(block) + 1),
            parse_options=pj.ParseOptions(
                explicit_schema=schema, unexpected_field_behavior="ignore"
            ),
        )
    except (pa.ArrowException, ValueError):
        return None
    starts = _line_starts(block)
    f = cols.f
    text = table[f.text]
    if len(starts) != table.num_rows or text.null_count:
        return None
    positions = starts + base

    def col(name: str | None) -> pa.Array | None:
        return None if name is None else table[name]

    metadata = {out: table[src] for src, out in f.metadata}
    cols.add(positions, text, col(f.id), col(f.url), col(f.date), metadata)
    return table.num_rows


def _line_starts(block: bytes | memoryview) -> np.ndarray:
    """Offsets of the non-blank lines of a block (blank: empty or only JSON white space, which
    Arrow's reader skips). memchr per line (``bytes.find``): lines are long, so this beats a
    vectorised scan of every byte."""
    data = block.obj if isinstance(block, memoryview) else block  # blocks start at offset 0
    size = len(block)
    find = data.find
    starts = []
    start = 0
    while start < size:
        end = find(b"\n", start, size)
        if end < 0:
            end = size
        if end > start and (data[start] > 32 or data[start:end].strip(b" \t\r")):
            starts.append(start)
        start = end + 1
    return np.array(starts, dtype=np.int64)


def _python_block(base: int, block: bytes, cols: _Columns, limit: int | None) -> int:
    """The per-line path: every record judged on its own (bad lines become problems)."""
    f = cols.f
    text_key, id_key, url_key, date_key = f.text, f.id, f.url, f.date
    meta = [(src, out, f.metadata_schema.field(out).type) for src, out in f.metadata]
    loads = orjson.loads
    JSONDecodeError = orjson.JSONDecodeError
    seen = 0
    positions: list[int] = []
    texts: list[str] = []
    ids: list = []
    urls: list = []
    dates: list = []
    metas: list[list] = [[] for _ in meta]
    for off, line in _split_lines(base, block):
        if limit is not None and seen >= limit:
            break
        seen += 1
        try:
            rec = loads(line)
        except JSONDecodeError as e:
            reason = "invalid_utf8" if _bad_utf8(line) else "not_json"
            cols.problem(reason, off, f"line is not JSON: {e}")
            continue
        if type(rec) is not dict:
            cols.problem("not_json", off, f"line is a JSON {type(rec).__name__}")
            continue
        text = rec.get(text_key)
        if type(text) is not str:
            if text is None:
                cols.problem("missing_text", off, f"no {text_key!r} field (or null)")
            else:
                what = type(text).__name__
                cols.problem("text_not_string", off, f"{text_key!r} is a {what}")
            continue
        positions.append(off)
        texts.append(text)
        if id_key is not None:
            ids.append(rec.get(id_key))
        if url_key is not None:
            urls.append(rec.get(url_key))
        if date_key is not None:
            dates.append(rec.get(date_key))
        for k, (src, _, _) in enumerate(meta):
            metas[k].append(rec.get(src))
    if positions:
        cols.add(
            np.array(positions, dtype=np.int64),
            pa.array(texts, pa.large_string()),
            _ids(ids) if id_key is not None else None,
            _to_array(urls, pa.string(), cols) if url_key is not None else None,
            _dates_array(dates) if date_key is not None else None,
            {out: _to_array(metas[k], t, cols) for k, (_, out, t) in enumerate(meta)},
        )
    return seen


def _ids(ids: list) -> pa.Array:
    """The id field as strings (an integer id as its decimal digits); null stays null."""
    out = []
    for v in ids:
        if v is not None and type(v) is not str:
            v = str(v) if isinstance(v, int | float) else orjson.dumps(v).decode()
        out.append(v)
    return pa.array(out, pa.string())


def _blank(texts: pa.Array) -> np.ndarray:
    """Which texts are empty or only white space (Arrow's Unicode ``utf8_is_space``). Only the
    texts whose first character is white space are scanned whole: blank ones are rare and a
    full scan of every text costs ~10% of reading JSON."""
    first = pc.utf8_slice_codeunits(texts, 0, 1)
    candidates = pc.or_(pc.equal(pc.binary_length(texts), 0), pc.utf8_is_space(first))
    idx = np.flatnonzero(candidates.to_numpy(zero_copy_only=False))
    out = np.zeros(len(texts), dtype=bool)
    if len(idx):
        some = texts.take(pa.array(idx))
        full = pc.or_(pc.equal(pc.binary_length(some), 0), pc.utf8_is_space(some))
        out[idx] = full.to_numpy(zero_copy_only=False)
    return out


def _maybe_one(values: Any) -> Any:
    return None if values is None else _one_chunk(values)


def _one_chunk(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(values, pa.ChunkedArray):
        return values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    return values


def _dates_array(values: list) -> pa.Array:
    if all(v is None or type(v) is str for v in values):
        return pa.array(values, pa.string())
    return pa.array([v if type(v) is str else None for v in values], pa.string())


def _bad_utf8(line: bytes | memoryview) -> bool:
    try:
        bytes(line).decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _split_lines(base: int, block: bytes | memoryview) -> Iterator[tuple[int, bytes | memoryview]]:
    """(offset, line) for each non-blank line of a block of whole lines starting at ``base``."""
    arr = np.frombuffer(block, np.uint8)
    ends = np.flatnonzero(arr == 10)
    if len(block) and block[-1] != 10:
        ends = np.append(ends, len(block))
    start = 0
    for end in ends.tolist():
        line = block[start:end]  # a memoryview slice: not copied (orjson reads it as it is)
        if end > start and (block[start] > 32 or bytes(line).strip()):
            yield base + start, line
        start = end + 1


def _iter_blocks(url: str, start: int, end: int | None) -> Iterator[tuple[int, memoryview]]:
    """Blocks of whole lines (offset of the block, bytes) for the lines starting in [start, end).

    The decompressed bytes go straight into one buffer that is reused (no copy to join pieces,
    no fresh memory per block): a block is only valid until the next one is asked for, so
    every caller parses a block (or copies what it keeps) before it moves on. A line longer
    than the buffer grows it. After a damaged stream the whole lines decoded before the damage
    are yielded, then its ``_StreamError`` is raised."""
    src = _Decoded(url, start)
    try:
        buf = bytearray(_CHUNK)
        have = 0  # bytes at the start of buf: the unfinished line of the previous block
        base = src.pos
        while True:
            if end is not None and base >= end:
                return
            if have == len(buf):  # one line fills the buffer: a bigger one for the rest of it
                bigger = bytearray(2 * len(buf))
                bigger[:have] = buf
                buf = bigger
            view = memoryview(buf)
            size = have + src.fill(view[have:])
            if src.done and src.error is None:
                cut = size  # the stream ended: its last line needs no newline
            else:
                cut = buf.rfind(b"\n", have, size) + 1  # (the first `have` bytes hold none)
            if cut:
                if end is not None and base + cut > end:
                    # the lines starting before end: up to the end of the line holding byte end - 1
                    keep = buf.find(b"\n", end - base - 1, cut) + 1 or cut
                    yield base, view[:keep]
                    return
                yield base, view[:cut]
                base += cut
            if src.done:
                if src.error is not None:
                    raise src.error
                return
            buf[: size - cut] = buf[cut:size]  # the unfinished line moves to the front
            have = size - cut
    finally:
        src.close()


class _Decoded:
    """The decompressed bytes of a file, from the first line that starts at or after ``start``,
    read straight into the caller's memory (``fill``); ``pos`` is the offset of the next byte.

    gzip is decoded by python-isal when it is installed; when that fails (a cut or corrupt
    stream), the rest is decoded again by the standard ``gzip`` from where isal stopped, since
    isal drops the last bytes it decoded before the damage and ``gzip`` keeps them all. A
    failure ends the stream: ``fill`` returns the bytes decoded before it and ``error`` holds
    the ``_StreamError`` (``truncated`` or ``unreadable_file``, at the offset it happened)."""

    def __init__(self, url: str, start: int):
        self.url = url
        self.comp = compression(url)
        self.pos = 0
        self.done = False
        self.error: _StreamError | None = None
        self._gz: Any = _gzip_module() if self.comp == "gzip" else None
        self._raw: Any = None
        self._stream: Any = None  # what decodes raw (kept: closing it closes what it reads through)
        self._into: Any = None
        self._open(start)

    def _open(self, start: int) -> None:
        from refine.pipeline.inputs import open_url

        try:
            raw = open_url(self.url).open()
        except Exception as e:  # noqa: BLE001 - fsspec, HTTP, S3 errors all end here
            raise _StreamError("unreadable_file", 0, f"cannot open: {e!r}") from None
        self._raw, self.pos = raw, 0
        into: Any = None
        if self.comp == "gzip":
            stream: Any = self._gz.GzipFile(fileobj=raw, mode="rb")
            # GzipFile's own readinto is BufferedIOBase's (read, then copy); the BufferedReader
            # it reads through fills the caller's memory from the decompressor directly
            inner = getattr(stream, "_buffer", None)
            if isinstance(inner, io.BufferedReader):
                into = inner.readinto1
        elif self.comp == "zstd":
            stream = _ZstdStream(raw)
        else:
            stream = raw
            if start > 0 and not self._skip_to_line(start):
                self.done = True
        self._stream = stream
        self._into = into or (
            getattr(stream, "readinto1", None)
            or getattr(stream, "readinto", None)
            or _readinto_from(stream.read)
        )

    def _skip_to_line(self, start: int) -> bool:
        """Seek an uncompressed file to the first line start at or after ``start`` (False: there
        is none)."""
        raw = self._raw
        raw.seek(start - 1)
        prev = raw.read(1)
        self.pos = start
        if prev == b"\n":
            return True
        while True:  # start is inside a line: it belongs to the previous part
            chunk = raw.read(1 << 16)
            if not chunk:
                return False
            i = chunk.find(b"\n")
            if i >= 0:
                self.pos += i + 1
                raw.seek(self.pos)
                return True
            self.pos += len(chunk)

    def fill(self, out: memoryview) -> int:
        """Decoded bytes into ``out`` until it is full or the stream ends (``done``)."""
        got = 0
        while got < len(out) and not self.done:
            try:
                k = self._into(out[got:])
            except Exception as e:  # noqa: BLE001 - see _stream_error
                if self._gz is not None and self._gz is not gzip:
                    self._again_with_gzip()
                    continue
                self.error = _stream_error(e, self.comp, self.pos)
                self.done = True
                break
            if not k:
                self.done = True
                break
            got += k
            self.pos += k
        return got

    def _again_with_gzip(self) -> None:
        """Decode again with the standard ``gzip``, skipping the ``pos`` bytes already given."""
        skip = self.pos
        self.close()
        self._gz = gzip
        try:
            self._open(0)
        except _StreamError as e:
            self.error, self.done, self.pos = e, True, skip
            return
        scratch = memoryview(bytearray(min(skip, 1 << 20) or 1))
        while self.pos < skip:
            try:
                k = self._into(scratch[: skip - self.pos])
            except Exception as e:  # noqa: BLE001 - see _stream_error
                self.error, self.done = _stream_error(e, self.comp, skip), True
                self.pos = skip
                return
            if not k:  # gzip ends before where isal got to: nothing more to give
                self.done, self.pos = True, skip
                return
            self.pos += k

    def close(self) -> None:
        stream, raw = self._stream, self._raw
        self._stream = self._raw = self._into = None
        try:
            if stream is not None and stream is not raw and hasattr(stream, "close"):
                stream.close()
        finally:
            if raw is not None:
                raw.close()


def _readinto_from(read: Any) -> Any:
    """``readinto`` for a file object that only has ``read``."""

    def readinto(out: memoryview) -> int:
        data = read(len(out))
        out[: len(data)] = data
        return len(data)

    return readinto


def _stream_error(e: BaseException, comp: str | None, pos: int) -> _StreamError:
    """What a failed read means: a compressed stream that ends early is ``truncated``; anything
    else (corrupt data; a gzip, zstandard, fsspec or HTTP error) is ``unreadable_file``."""
    if isinstance(e, EOFError):
        return _StreamError("truncated", pos, f"compressed stream ends early: {e}")
    if comp is None:
        return _StreamError("unreadable_file", pos, f"read failed: {e!r}")
    return _StreamError("unreadable_file", pos, f"cannot decompress: {type(e).__name__}: {e}")


def _gzip_module() -> Any:
    """python-isal's ``igzip`` (Intel's ISA-L: the same bytes ~2.8x faster than zlib, measured
    on the sample text), else the standard ``gzip``."""
    try:
        from isal import igzip

        return igzip
    except ImportError:
        return gzip


class _ZstdStream:
    """Decompressed bytes of a zstd file of one or more frames. zstandard's own stream reader
    ends silently at a cut-off frame; here a stream that ends inside a frame is ``EOFError``."""

    def __init__(self, raw: Any):
        import zstandard

        self._raw = raw
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj()
        self._pending = b""
        self._in_frame = False
        self._out = memoryview(b"")  # decompressed bytes not yet given

    def readinto(self, out: memoryview) -> int:
        if not self._out:
            self._out = memoryview(self._next())
        k = min(len(out), len(self._out))
        out[:k] = self._out[:k]
        self._out = self._out[k:]
        return k

    def _next(self) -> bytes:
        """The next decompressed piece (of any size; empty at the end)."""
        while True:
            comp, self._pending = self._pending or self._raw.read(1 << 20), b""
            if not comp:
                if self._in_frame:
                    raise EOFError("zstd stream ends inside a frame")
                return b""
            self._in_frame = True
            out = self._d.decompress(comp)
            if self._d.eof:
                self._pending = self._d.unused_data
                self._d = self._dctx.decompressobj()
                self._in_frame = False
            if out:
                return out


def _iter_lines(url: str, start: int, end: int | None) -> Iterator[tuple[int, bytes]]:
    for base, block in _iter_blocks(url, start, end):
        yield from _split_lines(base, block)


def _read_parquet(sl: TextSlice) -> TextBatch:
    cols = _Columns(sl)
    f = sl.fields
    try:
        pf = _parquet_file(sl.url)
    except Exception as e:  # noqa: BLE001 - pyarrow, fsspec and HTTP errors all end here
        cols.problem("unreadable_file", 0, f"cannot open as Parquet: {e}")
        return cols.finish(1, 0)
    names = set(pf.schema_arrow.names)
    wanted = [n for n in f.wanted if n in names]
    if f.text not in names:
        cols.problem("missing_text", 0, f"no {f.text!r} column in this file")
        return cols.finish(1, 0)
    last = pf.metadata.num_row_groups if sl.end is None else sl.end
    row0 = sl.first_row
    seen = 0
    bytes_in = 0
    limit = sl.max_records
    for g in range(sl.start, last):
        n_rows = pf.metadata.row_group(g).num_rows
        try:
            t = pf.read_row_group(g, columns=wanted)
        except Exception as e:  # noqa: BLE001 - a corrupt page, a failed remote read
            seen += 1
            cols.problem("corrupt_row_group", f"row_group={g}", f"{type(e).__name__}: {e}")
            row0 += n_rows
            continue
        if limit is not None and seen + t.num_rows > limit:
            t = t.slice(0, limit - seen)
        seen += t.num_rows
        bytes_in += _parquet_rows(t, row0, cols)
        row0 += n_rows
        if limit is not None and seen >= limit:
            break
    return cols.finish(seen, bytes_in)


def _parquet_rows(t: pa.Table, row0: int, cols: _Columns) -> int:
    """Add one row group's records; return its text bytes."""
    f = cols.f
    n = t.num_rows
    rows = np.arange(row0, row0 + n, dtype=np.int64)
    text = _one_chunk(t[f.text])
    bad = np.zeros(n, dtype=bool)
    if pa.types.is_binary(text.type) or pa.types.is_large_binary(text.type):
        try:
            text = text.cast(pa.large_string())
        except pa.ArrowInvalid:
            decoded = []
            for i, b in enumerate(text.to_pylist()):
                try:
                    decoded.append(None if b is None else b.decode("utf-8"))
                except UnicodeDecodeError:
                    cols.problem("invalid_utf8", int(rows[i]), "text is not UTF-8")
                    bad[i] = True
                    decoded.append(None)
            text = pa.array(decoded, pa.large_string())
    elif not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        for i in range(n):
            cols.problem("text_not_string", int(rows[i]), f"{f.text!r} is {text.type}")
        return 0
    nbytes = int(pc.sum(pc.binary_length(text)).as_py() or 0)
    if text.null_count:
        nulls = text.is_null().to_numpy(zero_copy_only=False)
        for i in np.flatnonzero(nulls & ~bad).tolist():
            cols.problem("missing_text", int(rows[i]), f"{f.text!r} is null")
        keep = pa.array(~nulls)
        t, text, rows = t.filter(keep), text.filter(keep), rows[~nulls]

    def col(name: str | None) -> pa.Array | None:
        return None if name is None or name not in t.column_names else t[name]

    metadata = {out: col(src) for src, out in f.metadata}
    cols.add(rows, text, col(f.id), col(f.url), col(f.date), metadata)
    return nbytes
