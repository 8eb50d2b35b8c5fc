"""Distributed connected components by iterative min-label propagation on Dask.

The graph is a Parquet dataset of undirected edges ``(a, b)`` between string node names. Every
node starts with the smallest name among itself and its neighbours; each round, every node takes
the smallest label among its own and its neighbours' labels, until no label changes (or
``max_iterations``). The label of a component is then its smallest node name, whatever the
partitioning. Each round is two Dask shuffles (edges + labels on the edge's source, then the
messages on their target) and writes the labels as Parquet, so memory per worker is bounded by
partition size and no process ever holds the graph (unlike a single-task union-find).

A join is done as "concatenate both sides with a key column, shuffle on the key, join each
shuffled partition in pandas": the rows of both sides with the same key meet in one partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from refine.pipeline.storage import remove_tree

_STR = "string"


@dataclass
class ComponentsResult:
    iterations: int  # propagation rounds run after the initial labels
    converged: bool
    nodes: int  # nodes with at least one edge


def _frame(**cols: Any) -> pd.DataFrame:
    return pd.DataFrame({k: pd.array(v, dtype=_STR) for k, v in cols.items()})


def _both_directions(edges: Any) -> Any:
    """(src, dst) rows for each undirected edge ``(a, b)``, both ways."""

    def flip(df: pd.DataFrame) -> pd.DataFrame:
        return _frame(
            src=pd.concat([df["a"], df["b"]], ignore_index=True),
            dst=pd.concat([df["b"], df["a"]], ignore_index=True),
        )

    return edges.map_partitions(flip, meta={"src": _STR, "dst": _STR})


def _initial_labels(df: pd.DataFrame) -> pd.DataFrame:
    """One shuffled partition of (src, dst): each src's label is min(src, its neighbours)."""
    if df.empty:
        return _frame(node=[], label=[])
    m = df.groupby("src", sort=False)["dst"].min()
    idx = m.index.to_series(index=m.index)
    return _frame(node=m.index, label=m.where(m < idx, idx).to_numpy())


def _send_labels(df: pd.DataFrame) -> pd.DataFrame:
    """One partition shuffled on ``key``: edges (key=src, other=dst) meet labels (key=node,
    label). Emits each neighbour's candidate label and each node's own label (``old``)."""
    own = df[df["label"].notna()]
    edges = df[df["other"].notna()]
    sent = edges[["key", "other"]].merge(own[["key", "label"]], on="key", how="inner")
    return pd.DataFrame(
        {
            "node": pd.concat([sent["other"], own["key"]], ignore_index=True),
            "cand": pd.concat([sent["label"], own["label"]], ignore_index=True),
            "old": pd.concat(
                [pd.Series(pd.NA, index=range(len(sent)), dtype=_STR), own["label"]],
                ignore_index=True,
            ),
        }
    ).astype(_STR)


def _take_min(df: pd.DataFrame) -> pd.DataFrame:
    """One partition shuffled on ``node``: the new label is the smallest candidate."""
    if df.empty:
        return pd.DataFrame({"node": pd.array([], _STR), "label": pd.array([], _STR)}).assign(
            changed=pd.Series([], dtype=bool)
        )
    g = df.groupby("node", sort=False)
    new = g["cand"].min()
    old = g["old"].first()
    return pd.DataFrame(
        {
            "node": pd.array(new.index, dtype=_STR),
            "label": pd.array(new.to_numpy(), dtype=_STR),
            "changed": (new != old.reindex(new.index)).fillna(True).to_numpy(dtype=bool),
        }
    )


def connected_components(
    edges_dir: Path, work: Path, npartitions: int, max_iterations: int
) -> tuple[Path, ComponentsResult]:
    """Label every node of the edge list with the smallest node of its component.

    Returns the Parquet dataset of ``(node, label)`` and how the propagation went.
    """
    import dask.dataframe as dd

    edges = dd.read_parquet(str(edges_dir), columns=["a", "b"])
    both = _both_directions(edges)
    labels_dir = work / "labels-0"
    both.shuffle(on="src", npartitions=npartitions).map_partitions(
        _initial_labels, meta={"node": _STR, "label": _STR}
    ).to_parquet(str(labels_dir), write_index=False)
    nodes = len(dd.read_parquet(str(labels_dir), columns=["node"]))
    iterations, converged = 0, False
    while iterations < max_iterations:
        labels = dd.read_parquet(str(labels_dir), columns=["node", "label"])
        union = dd.concat(
            [
                both.map_partitions(
                    lambda d: _frame(key=d["src"], other=d["dst"], label=[pd.NA] * len(d)),
                    meta={"key": _STR, "other": _STR, "label": _STR},
                ),
                labels.map_partitions(
                    lambda d: _frame(key=d["node"], other=[pd.NA] * len(d), label=d["label"]),
                    meta={"key": _STR, "other": _STR, "label": _STR},
                ),
            ]
        )
        messages = union.shuffle(on="key", npartitions=npartitions).map_partitions(
            _send_labels, meta={"node": _STR, "cand": _STR, "old": _STR}
        )
        new = messages.shuffle(on="node", npartitions=npartitions).map_partitions(
            _take_min, meta={"node": _STR, "label": _STR, "changed": bool}
        )
        iterations += 1
        next_dir = work / f"labels-{iterations}"
        new.to_parquet(str(next_dir), write_index=False)
        changed = int(
            dd.read_parquet(str(next_dir), columns=["changed"])["changed"].sum().compute()
        )
        remove_tree(labels_dir)
        labels_dir = next_dir
        if changed == 0:
            converged = True
            break
    if not converged:
        labels_dir = settle_labels(labels_dir, work / "labels-settled", npartitions)
    return labels_dir, ComponentsResult(iterations, converged, nodes)


def _keep_fixed_points(df: pd.DataFrame) -> pd.DataFrame:
    """A partition shuffled on ``key``: rows (key=label, node) meet the label's own row
    (key=node, own). A node keeps its label only when that label is its own label (a survivor);
    otherwise it becomes its own label, i.e. it is kept."""
    own = df[df["own"].notna()].set_index("key")["own"]
    asks = df[df["node"].notna()]
    label_of_label = asks["key"].map(own)
    resolved = label_of_label == asks["key"]
    return _frame(
        node=asks["node"].to_numpy(),
        label=asks["key"].where(resolved.fillna(False), asks["node"]).to_numpy(),
    )


def settle_labels(labels_dir: Path, out_dir: Path, npartitions: int) -> Path:
    """After ``max_iterations`` without convergence some labels point at nodes that are not
    survivors themselves; those nodes keep themselves (more survivors, never fewer)."""
    import dask.dataframe as dd

    labels = dd.read_parquet(str(labels_dir), columns=["node", "label"])
    meta = {"key": _STR, "node": _STR, "own": _STR}
    union = dd.concat(
        [
            labels.map_partitions(
                lambda d: _frame(key=d["label"], node=d["node"], own=[pd.NA] * len(d)), meta=meta
            ),
            labels.map_partitions(
                lambda d: _frame(key=d["node"], node=[pd.NA] * len(d), own=d["label"]), meta=meta
            ),
        ]
    )
    union.shuffle(on="key", npartitions=npartitions).map_partitions(
        _keep_fixed_points, meta={"node": _STR, "label": _STR}
    ).to_parquet(str(out_dir), write_index=False)
    return out_dir
