"""The stage protocol: what a stage implements, and what the base classes do for it.

Three kinds of stage:

- ``SourceStage`` (``read``): plans partitions from the inputs and turns one partition into an
  Arrow table. Runs first, fused with the map stages that follow it.
- ``MapStage``: ``pa.Table -> pa.Table`` per partition (extraction, annotators, filters). The base
  class owns the bookkeeping (stats, decision log); a concrete stage owns only its rule.
- ``GlobalStage`` (dedup, shuffle): needs every partition; runs over the materialised Parquet
  dataset of the previous checkpoint with Dask's own shuffle/groupby.

Every stage has a pydantic ``Params`` model: the YAML schema, the defaults and the validation
in one place. Params are validated and ``check()`` is called when the pipeline is built, before
any work starts. Heavy resources (models, child processes) load lazily inside the worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from refine.pipeline.params import StageParams
from refine.pipeline.stats import StageStats


@dataclass
class StageResult:
    """What a stage returns for one partition."""

    table: pa.Table  # the documents that go on
    log: pa.Table  # the decision log: id, url, kept, reason, detail, source, signals...
    stats: StageStats


class Stage:
    name: ClassVar[str]
    kind: ClassVar[str]
    Params: ClassVar[type[StageParams]] = StageParams
    #: Write the documents after this stage even in the middle of a fused chain (e.g. after the
    #: expensive extraction, so filters can be re-tuned without redoing it).
    checkpoint: ClassVar[bool] = False

    def __init__(self, params: StageParams | None = None):
        self.params = params if params is not None else self.Params()

    def check(self) -> None:
        """Fail at build time (``ConfigError``) when a model file or import is missing."""

    #: Params that only decide (thresholds): changing them re-applies the decision to the saved
    #: signals instead of recomputing them (see ``FilterStage``).
    thresholds: ClassVar[frozenset[str]] = frozenset()

    #: Params that name model files (``refine.models`` specs): the files' content identity
    #: enters the fingerprints, so a model retrained or replaced under the same name recomputes
    #: what it decided instead of resuming from the old model's outputs.
    model_params: ClassVar[tuple[str, ...]] = ()

    #: Params that name local files workers read besides models (lists of them too): like
    #: ``model_params``, a relative path is made absolute on the driver (``absolute_paths``), so
    #: workers that run in another folder find the same file.
    path_params: ClassVar[tuple[str, ...]] = ()

    def absolute_paths(self) -> None:
        """Make every relative local path in ``model_params`` / ``path_params`` that exists here
        absolute (a hub id, ``pkg://`` or ``hf://`` spec, or a name that is no file, stays)."""
        update = {}
        for name in dict.fromkeys((*self.model_params, *self.path_params)):
            value = getattr(self.params, name, None)
            if isinstance(value, str):
                fixed: Any = _absolute(value)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                fixed = [_absolute(v) for v in value]
            elif isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
                fixed = {k: _absolute(v) for k, v in value.items()}  # e.g. language -> file
            else:
                continue
            if fixed != value:
                update[name] = fixed
        if update:
            self.params = self.params.model_copy(update=update)

    def model_files(self) -> dict[str, str]:
        """param name -> identity of the model file it names (``model_params``)."""
        from refine.models import model_identity

        specs = {name: getattr(self.params, name, None) for name in self.model_params}
        return {name: model_identity(spec) for name, spec in specs.items() if spec}

    #: Libraries whose version can change what the stage outputs (``refine.pipeline.versions``):
    #: their versions enter the fingerprints, so a resume under other versions recomputes it.
    libraries: ClassVar[tuple[str, ...]] = ()

    def worker_resources(self) -> dict[str, float]:
        """Dask worker resources (e.g. ``{"GPU": 1}``) each task of this stage needs: the runner
        gives such a stage a segment of its own, submitted with them, so the rest of the
        pipeline keeps running on workers without them."""
        return {}

    def worker_files(self) -> list[str]:
        """Code files the workers must import that an installed package does not give them (a
        ``.py`` module or a ``.zip`` of a package, e.g. a custom extraction engine from the
        driver's folder): the runner uploads them to every worker before the run (Dask's
        ``upload_file``), so workers that start in another folder or machine import them too."""
        return []

    def library_versions(self) -> dict[str, str | None]:
        """library -> installed version, for the libraries this stage's output depends on."""
        from refine.pipeline.versions import library_version

        return {name: library_version(name) for name in self.libraries}

    def _identity(self, params: dict) -> dict:
        ident = {"name": self.name, "params": params}
        models = self.model_files()
        if models:  # stages without models keep the fingerprints earlier versions wrote
            ident["models"] = models
        libraries = self.library_versions()
        if libraries:
            ident["libraries"] = libraries
        return ident

    def fingerprint(self) -> str:
        """Identifies the stage's behaviour; a change invalidates its outputs on re-run."""
        return _digest(self._identity(self.params.model_dump(mode="json")))

    def score_fingerprint(self) -> str:
        """Identifies how the stage scores: its params without the thresholds, its model files,
        and the text hash its saved signals are tied to (signals saved under another one are not
        reused)."""
        params = self.params.model_dump(mode="json")
        ident = self._identity({k: v for k, v in params.items() if k not in self.thresholds})
        return _digest({**ident, "text_hash": TEXT_HASH})


def _absolute(value: str) -> str:
    if "://" in value or os.path.isabs(value):
        return value
    path = os.path.expanduser(value)
    return os.path.abspath(path) if os.path.exists(path) else value


class StageFailed(Exception):
    """A stage raised while running a part: names the stage (``NN_name``), since a fused
    segment is named after its last stage."""

    def __init__(self, folder: str, error: str):
        super().__init__(folder, error)
        self.folder, self.error = folder, error

    def __str__(self) -> str:
        return f"in {self.folder}: {self.error}"


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Partition:
    """One unit of work: a stable id (names the part files) and what to read."""

    id: str
    spec: Any
    size_hint: int | None = None  # bytes, for progress only


class SourceStage(Stage):
    kind = "source"

    def resolve_inputs(self, patterns: list[str]) -> list[Any]:
        """Turn the config's ``input`` into a list of inputs; raise ``InputError`` if unusable."""
        raise NotImplementedError

    def plan(self, inputs: list[Any]) -> list[Partition]:
        raise NotImplementedError

    def read(self, partition: Partition) -> StageResult:
        raise NotImplementedError


class MapStage(Stage):
    kind = "map"
    #: The stage changes ``text`` without updating the ``_`` scratch derived from it (e.g. the
    #: shared ``_words``): the runner drops the scratch after it, so no later stage uses stale
    #: words. A stage that rewrites text and refreshes the scratch itself leaves this False.
    rewrites_text: ClassVar[bool] = False

    def process(self, table: pa.Table) -> StageResult:
        raise NotImplementedError


class FilterStage(MapStage):
    """A scoring filter: ``score`` computes signal columns, ``decide`` applies thresholds.

    Scores are kept as columns on the documents and in the decision log (with a hash of the text
    they were computed on), so a re-run whose only change is a threshold (a param named in
    ``thresholds``) takes the signals from the previous decision log instead of recomputing them.
    For that, ``decide`` may read only the columns ``signal_names`` lists (and the core columns),
    never ``_`` scratch.
    """

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        """Signal columns for every row of ``table`` (same length, same order)."""
        raise NotImplementedError

    def decide(self, table: pa.Table) -> pa.Array:
        """A string array: null where the document is kept, else the drop reason."""
        raise NotImplementedError

    def signal_names(self, table: pa.Table) -> list[str]:
        """The columns ``score`` adds that go into the decision log (not ``_`` scratch)."""
        return []

    def process(self, table: pa.Table, previous: pa.Table | None = None) -> StageResult:
        """``previous``: this part's decision log from an earlier run with the same scoring."""
        t0, c0 = time.perf_counter(), time.process_time()
        stats = StageStats(name=self.name, parts=1)
        hashes = text_hashes(table)
        signals, reused = self._signals(table, hashes, previous)
        stats.counters["signals_reused"] += reused
        for col, values in signals.items():
            if col in table.column_names:
                table = table.set_column(table.column_names.index(col), col, values)
            else:
                table = table.append_column(col, values)
        reasons = self.decide(table)
        kept = pc.is_null(reasons)
        out = table.filter(kept)
        stats.docs_in, stats.docs_out = table.num_rows, out.num_rows
        stats.bytes_in = text_bytes(table)
        stats.bytes_out = text_bytes(out)
        for reason, n in _value_counts(reasons.filter(pc.invert(kept))):
            stats.drop(reason, n)
        signal_cols = {c: table[c] for c in self.signal_names(table)}
        signal_cols["text_hash"] = hashes
        log = decision_log(table, kept, reasons, None, signal_cols)
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return StageResult(out, log, stats)

    def _signals(
        self, table: pa.Table, hashes: pa.Array, previous: pa.Table | None
    ) -> tuple[dict[str, pa.Array], int]:
        """Saved signals where the same document with the same text was scored before; the
        rest scored now. Returns the columns and how many rows were reused."""
        n = table.num_rows
        if previous is None or "text_hash" not in previous.column_names or n == 0:
            return self.score(table), 0
        names = [c for c in previous.column_names if c not in LOG_SCHEMA.names and c != "text_hash"]
        where = {doc_id: j for j, doc_id in enumerate(previous["id"].to_pylist())}
        prev_hash = previous["text_hash"].to_pylist()
        reuse_rows, reuse_from, missing = [], [], []
        for row, (doc_id, h) in enumerate(
            zip(table["id"].to_pylist(), hashes.to_pylist(), strict=True)
        ):
            j = where.get(doc_id)
            if j is not None and prev_hash[j] == h:
                reuse_rows.append(row)
                reuse_from.append(j)
            else:
                missing.append(row)
        if not reuse_rows or not names:
            return self.score(table), 0
        taken = {c: previous[c].combine_chunks().take(pa.array(reuse_from)) for c in names}
        if not missing:
            return taken, n
        fresh = self.score(table.take(pa.array(missing)))
        order = pa.array(reuse_rows + missing)
        inverse = pc.sort_indices(order)  # position of each row in reused-then-fresh order
        merged = {c: pa.concat_arrays([taken[c], _as_array(fresh[c])]).take(inverse) for c in names}
        # scratch columns (``_words``) of the fresh rows are dropped: a later stage recomputes
        # what it needs when they are absent
        return merged, len(reuse_rows)


def _as_array(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


#: The hash in the ``text_hash`` column of decision logs (see ``text_hashes``). Part of the
#: scoring identity: signals saved under another hash are recomputed, never compared across hashes.
TEXT_HASH = "xxh3_64"


def text_hashes(table: pa.Table, column: str = "text") -> pa.Array:
    """xxHash3 64-bit (``xxh3_64``, seed 0) of each document's UTF-8 text, as int64 (the digest's
    bits): ties saved signals to the text they scored. It hashes the Arrow bytes as they are:
    decoding them to Python strings first would cost several times the hashing."""
    if column not in table.column_names:
        return pa.nulls(table.num_rows, pa.int64())
    digest = xxhash.xxh3_64_intdigest
    raw = table[column].cast(pa.large_binary()).to_pylist()  # bytes objects: no UTF-8 decoding
    return pa.array([None if b is None else digest(b) for b in raw], pa.uint64()).cast(
        pa.int64(), safe=False
    )


class GlobalStage(Stage):
    kind = "global"

    def run(self, ctx: GlobalContext) -> StageStats:
        raise NotImplementedError


@dataclass
class GlobalContext:
    """What a global stage gets: the input dataset, where to write, and the Dask client."""

    input_dir: str
    output_dir: str
    log_dir: str
    work_dir: str  # scratch for intermediate phases (keys, flags); removed when done
    client: Any
    output_root: str = ""  # the run's OUTPUT folder, for stages that write beside documents/
    extra: dict[str, Any] = field(default_factory=dict)


def text_bytes(table: pa.Table, column: str = "text") -> int:
    if column not in table.column_names or table.num_rows == 0:
        return 0
    lengths = pc.binary_length(table[column].cast(pa.large_binary()))
    return int(pc.sum(lengths).as_py() or 0)


def _value_counts(arr: pa.Array | pa.ChunkedArray) -> list[tuple[str, int]]:
    if len(arr) == 0:
        return []
    vc = pc.value_counts(arr)
    return [(v["values"].as_py(), v["counts"].as_py()) for v in vc]


LOG_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("kept", pa.bool_()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source", pa.string()),
    ]
)


def decision_log(
    table: pa.Table,
    kept: pa.Array,
    reasons: pa.Array,
    details: pa.Array | None,
    signals: dict[str, pa.Array] | None = None,
) -> pa.Table:
    """The per-stage decision log: one row per input document."""
    n = table.num_rows

    def col(name: str) -> pa.Array:
        if name in table.column_names:
            return table[name]
        return pa.nulls(n, pa.string())

    cols = {
        "id": col("id"),
        "url": col("url"),
        "kept": kept,
        "reason": reasons,
        "detail": details if details is not None else pa.nulls(n, pa.string()),
        "source": col("source"),
    }
    for k, v in (signals or {}).items():
        cols[k] = v
    return pa.table(cols)
