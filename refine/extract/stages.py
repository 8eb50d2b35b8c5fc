"""The ``read`` and ``extract`` stages: WARC records to HTML pages to main text, or text files
(JSON Lines, Parquet) straight to documents."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import pyarrow as pa
from pydantic import Field

from refine.errors import InputError
from refine.extract.charset import decode_html, looks_binary
from refine.extract.engines import (
    BUILTIN_ENGINES,
    ExtractConfig,
    check_engine,
    engine_code_files,
    get_extractor,
)
from refine.extract.schema import DOC_SCHEMA, PAGE_SCHEMA
from refine.extract.textfiles import (
    ERROR_REASONS as TEXT_ERROR_REASONS,
)
from refine.extract.textfiles import (
    TextFields,
    TextSlice,
    plan_text_slices,
    read_text_slice,
    resolve_fields,
)
from refine.extract.warc import iter_slice, plan_slices
from refine.pipeline.inputs import COMMONCRAWL_BASE_URL, InputFile, expand_inputs, input_format
from refine.pipeline.stage import (
    MapStage,
    Partition,
    SourceStage,
    StageParams,
    StageResult,
    decision_log,
    text_bytes,
)
from refine.pipeline.stats import StageStats

MiB = 2**20

#: Reasons that are problems with the input (their file#offset goes into the report's examples).
#: extract reasons that are decisions, not errors (no error sample is kept for them)
_EXTRACT_DROPS = {"no_text", "language_prefilter"}
_ERROR_REASONS = {"corrupt_record", "truncated", "not_warc", "content_encoding", "page_too_large"}


class ReadParams(StageParams):
    slice_mb: float = Field(
        default=16,
        gt=0,
        description="compressed MiB per partition (WARC, uncompressed JSONL, Parquet row groups)",
    )
    max_files: int | None = Field(default=None, ge=1, description="read at most this many files")
    max_records_per_file: int | None = Field(
        default=None, ge=1, description="at most this many records per file (sampling)"
    )
    max_page_mb: float = Field(default=8, gt=0, description="larger HTTP bodies are dropped")
    commoncrawl_base_url: str = COMMONCRAWL_BASE_URL
    http_timeout: float = Field(
        default=60,
        gt=0,
        description="seconds an http(s) server may stay silent before a read fails",
    )
    format: Literal["auto", "warc", "jsonl", "parquet"] = Field(
        default="auto",
        description="auto: by file suffix (.warc.gz / .jsonl[.gz|.zst] / .json.gz / .parquet)",
    )
    # text inputs (JSONL, Parquet): which fields hold what; checked against the first file
    text_field: str = Field(default="text", min_length=1)
    id_field: str = Field(
        default="id", min_length=1, description="absent: an id from the file and the position"
    )
    url_field: str = Field(default="url", min_length=1)
    date_field: str = Field(default="date", min_length=1)
    metadata_fields: list[str] | Literal["all"] = Field(
        default="all",
        description="other fields carried to the output as columns: all, or a list ([] = none)",
    )


TEXT_FORMATS = ("jsonl", "parquet")


class ReadWarc(SourceStage):
    """Input files to rows: WARC files (local, https, s3; WARC/1.x and 0.17/0.18) to HTML pages
    for ``extract``, or text files (JSON Lines, Parquet; local, https, s3, hf://datasets) straight
    to documents. The format is chosen by file suffix, or by ``format:``."""

    name = "read"
    Params = ReadParams

    def __init__(self, params: StageParams | None = None):
        super().__init__(params)
        self._fields: TextFields | None = None

    def declared_output(self) -> str | None:
        """``documents`` or ``pages`` when ``format:`` says which; None when inputs decide."""
        fmt = self.params.format
        return None if fmt == "auto" else ("documents" if fmt in TEXT_FORMATS else "pages")

    def output_kind(self, inputs: list[InputFile]) -> str:
        """``documents`` (text inputs: no extraction) or ``pages`` (WARC: HTML for extract)."""
        formats = {self._format(f.url) for f in inputs}
        return "documents" if formats & set(TEXT_FORMATS) else "pages"

    def _format(self, url: str) -> str:
        if self.params.format != "auto":
            return self.params.format
        return input_format(url) or "warc"

    def resolve_inputs(self, patterns: list[str]) -> list[InputFile]:
        p = self.params
        files = expand_inputs(
            patterns,
            max_files=p.max_files,
            commoncrawl_base_url=p.commoncrawl_base_url,
            timeout=p.http_timeout,
        )
        by_kind: dict[str, str] = {}
        for f in files:
            by_kind.setdefault("text" if self._format(f.url) in TEXT_FORMATS else "warc", f.url)
        if len(by_kind) > 1:
            raise InputError(
                f"inputs mix WARC files ({by_kind['warc']}) and text files ({by_kind['text']}): "
                f"WARC needs 'extract', text must not have it; run them as two pipelines"
            )
        formats = {self._format(f.url) for f in files}
        if len(formats & set(TEXT_FORMATS)) > 1:
            raise InputError(
                "inputs mix JSONL and Parquet files: their metadata columns would differ; "
                "run them as two pipelines (or convert one)"
            )
        if "text" in by_kind:
            self._fields = self._resolve_fields(files)
        return files

    def _resolve_fields(self, inputs: list[InputFile]) -> TextFields:
        """The field mapping, checked against the first input that can be read."""
        p = self.params
        for f in inputs:
            if f.error:
                continue
            try:
                return resolve_fields(
                    f.url,
                    self._format(f.url),
                    text_field=p.text_field,
                    id_field=p.id_field,
                    url_field=p.url_field,
                    date_field=p.date_field,
                    metadata_fields=p.metadata_fields,
                    explicit=set(p.model_fields_set),
                )
            except InputError:
                continue  # a file that does not open is counted when read; try the next
        # nothing can be read: every part will count its file as unreadable; no metadata
        return TextFields(text=p.text_field)

    def plan(self, inputs: list[InputFile]) -> list[Partition]:
        slice_bytes = max(1, int(self.params.slice_mb * MiB))
        parts = []
        # part ids sort as strings in input order, then slice order (the order later stages
        # read documents in): the numbers are zero-padded to the widest of the run
        width = max(5, len(str(len(inputs) - 1)))
        max_records = self.params.max_records_per_file
        formats = [self._format(f.url) for f in inputs]
        text_slices: list[list] = []
        if set(formats) & set(TEXT_FORMATS):
            fields = self._fields = self._fields or self._resolve_fields(inputs)

            def plan_text(i: int) -> list:
                f = inputs[i]
                if f.error:  # not read: one placeholder part keeps the other parts' ids
                    return [TextSlice(f.url, formats[i], fields)]
                return plan_text_slices(f.url, formats[i], f.size, slice_bytes, fields, max_records)

            # a big Parquet file is planned from its footer: one request per file, in parallel
            with ThreadPoolExecutor(max_workers=16) as pool:
                text_slices = list(pool.map(plan_text, range(len(inputs))))
        for i, f in enumerate(inputs):
            fmt = formats[i]
            if fmt in TEXT_FORMATS:
                slices: list = text_slices[i]
            else:
                slices = plan_slices(f.url, f.size, slice_bytes, max_records)
            k_width = max(4, len(str(len(slices) - 1)))
            for k, sl in enumerate(slices):
                hint = None if sl.end is None or fmt == "parquet" else sl.end - sl.start
                part_id = f"{i:0{width}d}-{k:0{k_width}d}"
                parts.append(Partition(id=part_id, spec=sl, size_hint=hint))
        return parts

    def read(self, partition: Partition) -> StageResult:
        if isinstance(partition.spec, TextSlice):
            return self._read_text(partition.spec)
        t0, c0 = time.perf_counter(), time.process_time()
        stats = StageStats(name=self.name, parts=1)
        cols: dict[str, list] = {n: [] for n in PAGE_SCHEMA.names}
        log_rows: dict[str, list] = {"id": [], "url": [], "reason": [], "detail": [], "source": []}
        reader = iter_slice(
            partition.spec,
            max_payload_bytes=int(self.params.max_page_mb * MiB),
            timeout=self.params.http_timeout,
        )
        for rec in reader:
            stats.docs_in += 1
            log_rows["id"].append(rec.id)
            log_rows["url"].append(rec.url)
            log_rows["reason"].append(rec.reason)
            log_rows["detail"].append(rec.detail)
            log_rows["source"].append(rec.source)
            if rec.reason is not None:
                stats.drop(rec.reason)
                if rec.reason in _ERROR_REASONS:
                    stats.error(rec.reason, rec.source, rec.detail)
                continue
            stats.docs_out += 1
            stats.bytes_out += len(rec.payload)
            cols["id"].append(rec.id)
            cols["url"].append(rec.url)
            cols["date"].append(rec.date)
            cols["source"].append(rec.source)
            cols["html"].append(rec.payload)
            cols["charset"].append(rec.charset)
        stats.bytes_in = stats.bytes_out
        stats.counters.update(getattr(reader, "counts", {}) or {})
        table = pa.table(cols, schema=PAGE_SCHEMA)
        reasons = pa.array(log_rows["reason"], pa.string())
        kept = pa.array([r is None for r in log_rows["reason"]], pa.bool_())
        log_table = pa.table(
            {
                "id": pa.array(log_rows["id"], pa.string()),
                "url": pa.array(log_rows["url"], pa.string()),
                "kept": kept,
                "reason": reasons,
                "detail": pa.array(log_rows["detail"], pa.string()),
                "source": pa.array(log_rows["source"], pa.string()),
            }
        )
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return StageResult(table, log_table, stats)

    def _read_text(self, sl: TextSlice) -> StageResult:
        t0, c0 = time.perf_counter(), time.process_time()
        batch = read_text_slice(sl)
        table = batch.table
        stats = StageStats(name=self.name, parts=1)
        stats.docs_in = table.num_rows + len(batch.problems)
        stats.docs_out = table.num_rows
        stats.bytes_in = batch.bytes_in
        stats.bytes_out = text_bytes(table)
        stats.counters.update(batch.counters)
        stats.counters["records"] += stats.docs_in
        for reason, source, detail in batch.problems:
            stats.drop(reason)
            if reason in TEXT_ERROR_REASONS:
                stats.error(reason, source, detail)
        n_bad = len(batch.problems)
        log = pa.table(
            {
                "id": pa.concat_arrays(
                    [table["id"].combine_chunks(), pa.nulls(n_bad, pa.string())]
                ),
                "url": pa.concat_arrays(
                    [table["url"].combine_chunks(), pa.nulls(n_bad, pa.string())]
                ),
                "kept": pa.array([True] * table.num_rows + [False] * n_bad, pa.bool_()),
                "reason": pa.array(
                    [None] * table.num_rows + [p[0] for p in batch.problems], pa.string()
                ),
                "detail": pa.array(
                    [None] * table.num_rows + [p[2] for p in batch.problems], pa.string()
                ),
                "source": pa.concat_arrays(
                    [
                        table["source"].combine_chunks(),
                        pa.array([p[1] for p in batch.problems], pa.string()),
                    ]
                ),
            }
        )
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return StageResult(table, log, stats)


#: The registry's name for the one reader of every input format.
Read = ReadWarc


class Extract(MapStage):
    """HTML pages to main text, each page with a time limit (a child process per worker).

    With trafilatura, report.json's entry says what it ran with (``summary``, from the extraction
    child): ``trafilatura_speedups`` ("on", "forced", "skipped_untested_version" or "off"),
    ``trafilatura_speedups_applied`` (which of the five changes of
    ``refine.extract.trafilatura_speedups`` were installed), ``trafilatura_version`` and
    ``lxml_version``; ``counters.trafilatura_speedups_parts`` counts the parts extracted with the
    speedups installed (all parts that reached the engine, unless workers differ).
    """

    name = "extract"
    Params = ExtractConfig
    checkpoint = True

    def check(self) -> None:
        check_engine(self.params)

    def worker_files(self) -> list[str]:
        if self.params.engine in BUILTIN_ENGINES:
            return []
        shipped = getattr(self, "_shipped", None)
        if shipped is None:
            shipped = self._shipped = engine_code_files(self.params.engine)
        return shipped

    def library_versions(self) -> dict[str, str | None]:
        from refine.pipeline.versions import library_version

        names = {"trafilatura": ["trafilatura", "lxml"], "resiliparse": ["resiliparse"]}.get(
            self.params.engine, []
        )
        if self.params.prefilter_languages:
            names += ["resiliparse", "fasttext"]
        versions = {name: library_version(name) for name in dict.fromkeys(names)}
        if self.params.engine == "trafilatura":
            from refine.extract.trafilatura_speedups import planned_status

            # Only when the speedups are not simply on or off as configured (an untested
            # version skips them, or they are forced): fingerprints of normal runs stay as
            # earlier versions wrote them, and a resume where the speedups' state changed
            # (e.g. TESTED_VERSIONS now lists the installed version) recomputes.
            status = planned_status(self.params.speedups)
            if status in ("forced", "skipped_untested_version"):
                versions["trafilatura_speedups"] = status
        return versions

    model_params = ("prefilter_model",)

    def model_files(self) -> dict[str, str]:
        # the model decides nothing while the pre-filter is off
        return super().model_files() if self.params.prefilter_languages else {}

    def process(self, table: pa.Table) -> StageResult:
        t0, c0 = time.perf_counter(), time.process_time()
        n = table.num_rows
        stats = StageStats(name=self.name, parts=1, docs_in=n)
        html = table["html"].to_pylist()
        charsets = table["charset"].to_pylist()
        urls = table["url"].to_pylist()
        sources = table["source"].to_pylist()
        stats.bytes_in = sum(len(h) for h in html)
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        seconds = [0.0] * n
        encodings: list[str | None] = [None] * n
        todo: list[int] = []
        pages: list[tuple[str, str | None]] = []
        for i, (payload, charset) in enumerate(zip(html, charsets, strict=True)):
            if looks_binary(payload):
                reasons[i] = "binary_content"
                continue
            decoded, encodings[i] = decode_html(payload, charset)
            todo.append(i)
            pages.append((decoded, urls[i]))
        texts: list[str | None] = [None] * n
        child_cpu = 0.0  # extraction runs in a child process: count its CPU too
        if pages:
            extractor = get_extractor(self.params)
            results = extractor.extract_many(pages)
            facts = extractor.engine_facts
            if facts:
                stats.summary = dict(facts)
                if facts.get("trafilatura_speedups") in ("on", "forced"):
                    stats.counters["trafilatura_speedups_parts"] += 1
            for i, res in zip(todo, results, strict=True):
                seconds[i] = res.seconds
                child_cpu += res.cpu_seconds
                if res.reason is not None:
                    reasons[i], details[i] = res.reason, res.detail
                    if res.reason not in _EXTRACT_DROPS:
                        stats.error(res.reason, sources[i], res.detail)
                else:
                    texts[i] = res.text
        keep_idx = [i for i in range(n) if reasons[i] is None]
        for r in reasons:
            if r is not None:
                stats.drop(r)
        kept_texts = [texts[i] for i in keep_idx]
        stats.docs_out = len(keep_idx)
        stats.bytes_out = sum(len(t.encode("utf-8")) for t in kept_texts)
        idx = pa.array(keep_idx, pa.int64())
        out = pa.table(
            {
                "id": table["id"].take(idx),
                "url": table["url"].take(idx),
                "date": table["date"].take(idx),
                "text": pa.array(kept_texts, pa.large_string()),
                "source": table["source"].take(idx),
            },
            schema=DOC_SCHEMA,
        )
        log = decision_log(
            table,
            pa.array([r is None for r in reasons], pa.bool_()),
            pa.array(reasons, pa.string()),
            pa.array(details, pa.string()),
            {
                "html_bytes": pa.array([len(h) for h in html], pa.int64()),
                "encoding": pa.array(encodings, pa.string()),
                "extract_seconds": pa.array(seconds, pa.float32()),
                "text_chars": pa.array(
                    [len(t) if t is not None else None for t in texts], pa.int64()
                ),
            },
        )
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0 + child_cpu
        return StageResult(out, log, stats)
