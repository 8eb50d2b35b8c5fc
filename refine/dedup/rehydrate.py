"""``rehydrate``: repeat each deduplicated document by a weight that depends on how many copies
it had before deduplication, as FineWeb-2 recommends ("rehydration").

FineWeb-2 found that, after MinHash deduplication, documents whose cluster was of moderate size
are better on average than singletons, and publishes per-language weights keyed by cluster size
(``rehydration_up_to_10_reps.json``: ``{language: {min_cluster_size: weight}}``). A survivor of
``dedup_minhash`` carries its cluster's size (``minhash_cluster_size``, 1 outside any cluster);
this stage writes it ``weight`` times, the weight of the largest key ``<=`` that size in its
language's table.

The copies keep the document's ``id`` (they are the same document: the decision logs, ``refine
inspect`` and dedup lineage still name one document) and get a ``repeat`` column, 0 for the
first copy, 1.. for the others. ``shuffle`` keys a copy by ``(id, repeat)``, so the copies land
at independent places of the shuffled order, and ``tokenize`` writes each as a document of its
own: the trainer sees the repeats, spread apart. The stage runs per part (no shuffle of its own:
``shuffle`` must come after it, which is where DESIGN.md puts it).

Stats: ``docs_out = docs_in + counters.repeats`` (the extra copies written); ``rehydrated_docs``
counts documents written more than once, ``language_not_in_weights`` documents whose language
has no table (written ``default_weight`` times), ``capped_docs`` those whose weight
``max_repeats`` lowered. ``bytes_out`` counts the text bytes of every copy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, TypeAdapter, ValidationError

from refine.dedup.minhash import CLUSTER_SIZE_COLUMN
from refine.errors import ConfigError
from refine.filters.languages import resolve
from refine.pipeline.gather import map_folded
from refine.pipeline.stage import GlobalContext, GlobalStage, StageParams, decision_log, text_bytes
from refine.pipeline.stats import StageStats
from refine.pipeline.storage import list_parts, write_parquet_atomic

#: Column of the copies: 0 for a document's first copy, k for its (k+1)-th.
REPEAT_COLUMN = "repeat"
#: language -> {min_cluster_size: weight}: FineWeb-2's rehydration table
WeightTable = dict[str, dict[int, int]]
_TABLE = TypeAdapter(dict[str, dict[int, int]])


class RehydrateParams(StageParams):
    weights: str | dict[str, dict[Any, Any]]
    """FineWeb-2's rehydration table: a path or fsspec URL (``https://``, ``hf://``, ``s3://``)
    of a JSON file ``{language: {min_cluster_size: weight}}`` (e.g. FineWeb-2's
    ``rehydration_up_to_10_reps.json``), or the same table inline in the config. Read once, on
    the driver, when the pipeline is built; its content (not its name) enters the stage's
    fingerprint. Weights are whole numbers of copies, at least 1."""
    language_column: str = "language"
    """Column whose value picks the language's table (GlotLID labels such as ``deu_Latn`` for
    FineWeb-2's table; a lid.176 code such as ``de`` finds the ``deu_Latn`` table)."""
    default_weight: int = Field(1, ge=1)
    """Copies of a document whose language has no table (or that has no language; counted as
    ``language_not_in_weights``), and of one whose cluster is smaller than its table's
    smallest key: by default written once, as if not rehydrated."""
    max_repeats: int | None = Field(None, ge=1)
    """Cap on the copies of any document (``null``: the table's weights as they are)."""


class Rehydrate(GlobalStage):
    """Writes each document ``weight(language, minhash_cluster_size)`` times, the copies told
    apart by a ``repeat`` column; ``shuffle`` after it spreads them apart."""

    name = "rehydrate"
    Params = RehydrateParams
    path_params = ("weights",)

    def __init__(self, params: StageParams | None = None):
        super().__init__(params)
        self._weights: WeightTable | None = None

    def check(self) -> None:
        self.weight_table()

    def weight_table(self) -> WeightTable:
        """The table, read and validated once (``ConfigError`` naming the file if unusable)."""
        if self._weights is None:
            self._weights = load_weights(self.params.weights)
        return self._weights

    def _identity(self, params: dict) -> dict:
        ident = super()._identity({k: v for k, v in params.items() if k != "weights"})
        ident["weights"] = {
            lang: sorted(table.items()) for lang, table in sorted(self.weight_table().items())
        }
        return ident

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_weights": None}  # workers get the table as an argument

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = [str(p) for p in list_parts(Path(ctx.input_dir))]
        table = self.weight_table()
        total = StageStats(name=self.name)

        def fold(part_stats: dict) -> None:
            nonlocal total
            total = total + StageStats.from_dict(part_stats)

        n = len(parts)
        args = (parts, [table] * n, [ctx.output_dir] * n, [ctx.log_dir] * n)
        map_folded(ctx.client, self._apply, *args, fold=fold)
        total.seconds = time.perf_counter() - t0
        total.cpu_seconds += time.process_time() - c0
        return total

    def _apply(self, part: str, table: WeightTable, output_dir: str, log_dir: str) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        p = self.params
        docs = pq.read_table(part)
        n = docs.num_rows
        if CLUSTER_SIZE_COLUMN not in docs.column_names:
            raise ConfigError(
                f"rehydrate: {part} has no {CLUSTER_SIZE_COLUMN!r} column: put dedup_minhash "
                "before rehydrate (it records each survivor's cluster size)"
            )
        sizes = pc.fill_null(docs[CLUSTER_SIZE_COLUMN], 1).to_numpy().astype(np.int64)
        if p.language_column in docs.column_names:
            langs = docs[p.language_column]
        else:
            langs = pa.nulls(n, pa.string())
        weights, unknown = weights_of(langs, sizes, table, p.default_weight)
        capped = 0
        if p.max_repeats is not None:
            capped = int((weights > p.max_repeats).sum())
            weights = np.minimum(weights, p.max_repeats)
        span = largest_weight(table, p.default_weight, p.max_repeats)
        out = repeat_rows(docs, weights, span)
        name = Path(part).name
        write_parquet_atomic(out, Path(output_dir) / name)
        log = decision_log(
            docs,
            pa.array(np.ones(n, bool)),
            pa.nulls(n, pa.string()),
            None,
            {
                CLUSTER_SIZE_COLUMN: pa.array(sizes, pa.int32()),
                "rehydrate_weight": pa.array(weights, pa.int32()),
            },
        )
        write_parquet_atomic(log, Path(log_dir) / name)
        stats = StageStats(name=self.name, parts=1, docs_in=n, docs_out=out.num_rows)
        stats.bytes_in = text_bytes(docs)
        if "text" in docs.column_names and n:
            lengths = pc.binary_length(docs["text"].cast(pa.large_binary()))
            lengths = pc.fill_null(lengths, 0).to_numpy()
            stats.bytes_out = int((lengths * weights).sum())
        stats.counters["repeats"] = out.num_rows - n
        stats.counters["rehydrated_docs"] = int((weights > 1).sum())
        stats.counters["language_not_in_weights"] = unknown
        stats.counters["capped_docs"] = capped
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return stats.to_dict()


def load_weights(spec: str | WeightTable) -> WeightTable:
    """The rehydration table named by ``spec`` (a path or fsspec URL of JSON, or the table
    itself), validated: integer cluster sizes and weights, both at least 1."""
    where = "weights (inline)"
    raw: Any = spec
    if isinstance(spec, str):
        where = f"weights {spec!r}"
        try:
            import fsspec

            with fsspec.open(spec, "rt", encoding="utf-8") as f:
                raw = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"rehydrate: {where}: file not found") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"rehydrate: {where}: not valid JSON ({e})") from None
        except (OSError, ValueError, ImportError) as e:
            raise ConfigError(
                f"rehydrate: {where}: cannot read it ({type(e).__name__}: {e})"
            ) from None
    try:
        table = _TABLE.validate_python(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first["loc"])
        raise ConfigError(
            f"rehydrate: {where}: expected {{language: {{min_cluster_size: weight}}}} with whole "
            f"numbers; at {loc}: {first['msg']}"
        ) from None
    for lang, sizes in table.items():
        bad = [(k, w) for k, w in sizes.items() if k < 1 or w < 1]
        if bad:
            raise ConfigError(
                f"rehydrate: {where}: language {lang!r}: cluster sizes and weights must be at "
                f"least 1, got {bad[0][0]}: {bad[0][1]}"
            )
    return table


def weights_of(
    langs: pa.Array | pa.ChunkedArray, sizes: np.ndarray, table: WeightTable, default: int
) -> tuple[np.ndarray, int]:
    """Per document, the weight of the largest key ``<=`` its cluster size in its language's
    table (``default`` where there is no such key or no table); and how many documents had no
    table for their language. A lid.176 code finds its GlotLID-labelled table (``de`` ->
    ``deu_Latn``, ``refine.filters.languages.resolve``)."""
    weights = np.full(len(sizes), default, np.int64)
    langs = pc.fill_null(pc.cast(langs, pa.string()), "")
    if isinstance(langs, pa.ChunkedArray):
        langs = langs.combine_chunks()
    encoded = langs.dictionary_encode()
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    unknown = 0
    languages = frozenset(table)
    for code, lang in enumerate(encoded.dictionary.to_pylist()):
        rows = np.flatnonzero(codes == code)
        by_size = table.get(lang) or table.get(resolve(lang, languages))
        if not by_size:
            unknown += rows.size
            continue
        keys = np.array(sorted(by_size), np.int64)
        values = np.array([by_size[k] for k in keys], np.int64)
        at = np.searchsorted(keys, sizes[rows], side="right") - 1
        weights[rows] = np.where(at >= 0, values[np.maximum(at, 0)], default)
    return weights, unknown


def repeat_rows(table: pa.Table, weights: np.ndarray, span: int = 1) -> pa.Table:
    """Each row of ``table`` ``weights[i]`` times, its copies next to each other, with the
    ``repeat`` column set: 0, 1, .. for the copies of a row. A row that already was a copy
    (``repeat`` r > 0, from an earlier stage) gives ``r * span + k``: with ``span`` at least
    the largest weight, ``(id, repeat)`` stays unique, so ``shuffle`` keys every copy apart."""
    total = int(weights.sum())
    starts = np.cumsum(weights) - weights
    rows = np.repeat(np.arange(table.num_rows), weights)
    out = table.take(pa.array(rows))
    repeat = np.arange(total) - np.repeat(starts, weights)
    if REPEAT_COLUMN in out.column_names:
        old = pc.fill_null(table[REPEAT_COLUMN], 0).to_numpy().astype(np.int64)
        repeat = old[rows] * max(span, int(weights.max(initial=1))) + repeat
        column = pa.array(repeat, pa.int32())
        return out.set_column(out.column_names.index(REPEAT_COLUMN), REPEAT_COLUMN, column)
    return out.append_column(REPEAT_COLUMN, pa.array(repeat, pa.int32()))


def largest_weight(table: WeightTable, default: int, cap: int | None) -> int:
    """The most copies any document can get: ``repeat_rows``' ``span``."""
    largest = max([default, *(w for sizes in table.values() for w in sizes.values())])
    return min(largest, cap) if cap is not None else largest
