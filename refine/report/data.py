"""What the HTML report reads besides report.json: samples of the signal columns of each decision
log, language counts, and dedup clusters. Only the needed columns are read (pyarrow), batch by
batch, so a log of any size costs bounded memory."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from refine.inspect import CORE, _texts

#: Histograms are drawn from at most this many rows of a decision log (uniform sample).
MAX_SAMPLE_ROWS = 200_000
#: Dedup example pairs shown per dedup stage.
DEDUP_EXAMPLES = 3


@dataclass
class SignalSample:
    """Numeric signal columns of one decision log, for ``rows`` sampled of ``total`` rows."""

    total: int
    rows: int
    kept: np.ndarray
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    integer: set[str] = field(default_factory=set)

    @property
    def sampled(self) -> bool:
        return self.rows < self.total


def log_dataset(output: Path, folder: str) -> ds.Dataset | None:
    path = output / "stages" / folder
    if not path.is_dir() or not any(path.glob("*.parquet")):
        return None
    return ds.dataset(path, format="parquet", exclude_invalid_files=True)


def numeric_signals(schema: pa.Schema) -> list[str]:
    """Signal columns (not the core log columns) with an integer or floating type."""
    out = []
    for f in schema:
        if f.name in CORE or f.name.startswith("_"):
            continue
        if pa.types.is_integer(f.type) or pa.types.is_floating(f.type):
            out.append(f.name)
    return out


def sample_signals(
    dataset: ds.Dataset, columns: list[str], max_rows: int = MAX_SAMPLE_ROWS, seed: int = 0
) -> SignalSample:
    """A uniform sample (fixed seed) of ``kept`` and ``columns``; nulls become NaN."""
    total = dataset.count_rows()
    share = 1.0 if total <= max_rows else max_rows / total
    rng = np.random.default_rng(seed)
    kept: list[np.ndarray] = []
    values: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for batch in dataset.to_batches(columns=["kept", *columns]):
        n = batch.num_rows
        if n == 0:
            continue
        take = np.ones(n, bool) if share >= 1 else rng.random(n) < share
        if not take.any():
            continue
        batch = batch.filter(pa.array(take))
        kept.append(batch["kept"].fill_null(False).to_numpy(zero_copy_only=False).astype(bool))
        for c in columns:
            col = batch[c].cast(pa.float64())
            values[c].append(col.to_numpy(zero_copy_only=False).astype(np.float64))
    kept_all = np.concatenate(kept) if kept else np.zeros(0, bool)
    return SignalSample(
        total=total,
        rows=len(kept_all),
        kept=kept_all,
        columns={c: np.concatenate(v) if v else np.zeros(0) for c, v in values.items()},
        integer={c for c in columns if pa.types.is_integer(dataset.schema.field(c).type)},
    )


def language_counts(dataset: ds.Dataset) -> tuple[Counter, Counter]:
    """(every document's top language, the kept documents' languages), over the whole log."""
    before: Counter = Counter()
    after: Counter = Counter()
    for batch in dataset.to_batches(columns=["language", "kept"]):
        table = pa.table(
            {
                "language": pc.fill_null(batch["language"].cast(pa.string()), "(none)"),
                "kept": pc.fill_null(batch["kept"], False),
            }
        )
        for row in table.group_by(["language", "kept"]).aggregate([([], "count_all")]).to_pylist():
            before[row["language"]] += row["count_all"]
            if row["kept"]:
                after[row["language"]] += row["count_all"]
    return before, after


@dataclass
class DedupSummary:
    """Clusters of one dedup stage: a survivor and the documents removed as its duplicates."""

    cluster_sizes: Counter  # documents per cluster (survivor included) -> number of clusters
    examples: list[dict]  # removed id/url/text beside its survivor's id/url/text


def dedup_summary(output: Path, folder: str, dataset: ds.Dataset) -> DedupSummary:
    removed: Counter = Counter()
    first: list[dict] = []
    for batch in dataset.to_batches(
        columns=["id", "url", "duplicate_of"], filter=pc.field("duplicate_of").is_valid()
    ):
        if batch.num_rows == 0:
            continue
        counts = pa.table({"d": batch["duplicate_of"]}).group_by("d").aggregate([([], "count_all")])
        for survivor, n in zip(
            counts["d"].to_pylist(), counts["count_all"].to_pylist(), strict=True
        ):
            removed[survivor] += n
        if len(first) < DEDUP_EXAMPLES * 4:
            first.extend(batch.slice(0, DEDUP_EXAMPLES * 4).to_pylist())
    sizes = Counter(n + 1 for n in removed.values())
    examples = _examples(output, folder, dataset, first)
    return DedupSummary(sizes, examples)


def _examples(output: Path, folder: str, dataset: ds.Dataset, rows: list[dict]) -> list[dict]:
    """Up to DEDUP_EXAMPLES pairs, one per survivor, with the texts that entered the stage."""
    picked, seen = [], set()
    for r in rows:
        if r["duplicate_of"] not in seen:
            seen.add(r["duplicate_of"])
            picked.append(r)
        if len(picked) == DEDUP_EXAMPLES:
            break
    if not picked:
        return []
    survivors = [r["duplicate_of"] for r in picked]
    urls = dataset.to_table(columns=["id", "url"], filter=pc.field("id").isin(survivors))
    survivor_url = dict(zip(urls["id"].to_pylist(), urls["url"].to_pylist(), strict=True))
    texts = _texts(output, folder, [r["id"] for r in picked] + survivors)
    return [
        {
            "id": r["id"],
            "url": r["url"],
            "text": texts.get(r["id"]),
            "survivor_id": r["duplicate_of"],
            "survivor_url": survivor_url.get(r["duplicate_of"]),
            "survivor_text": texts.get(r["duplicate_of"]),
        }
        for r in picked
    ]


def contamination(output: Path, folder: str) -> list[dict[str, Any]]:
    """Per benchmark, from a ``decontaminate`` stage's decision log: the distinct items that
    matched a document, and the documents dropped and cut for it (most first)."""
    dataset = log_dataset(output, folder)
    if dataset is None or "decont_benchmark" not in dataset.schema.names:
        return []
    cols = ["kept", "decont_hits", "decont_benchmark", "decont_item"]
    cut = "decont_cut_words" in dataset.schema.names
    table = dataset.to_table(
        columns=cols + (["decont_cut_words"] if cut else []),
        filter=pc.field("decont_hits") > 0,
    )
    rows: dict[str, dict[str, Any]] = {}
    items: dict[str, set] = {}
    cut_words = table["decont_cut_words"].to_pylist() if cut else [0] * table.num_rows
    for kept, bench, item, words in zip(
        table["kept"].to_pylist(),
        table["decont_benchmark"].to_pylist(),
        table["decont_item"].to_pylist(),
        cut_words,
        strict=True,
    ):
        name = bench or "?"
        r = rows.setdefault(name, {"benchmark": name, "items_hit": 0, "dropped": 0, "cut": 0})
        items.setdefault(name, set()).add(item)
        if not kept:
            r["dropped"] += 1
        elif words:
            r["cut"] += 1
    for name, r in rows.items():
        r["items_hit"] = len(items[name])
    return sorted(rows.values(), key=lambda r: (-(r["dropped"] + r["cut"]), r["benchmark"]))
