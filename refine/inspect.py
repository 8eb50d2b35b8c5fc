"""Look inside a finished run: which documents a stage dropped (or kept) and why, and the fate of
one document through every stage. Reads only the decision logs and the document checkpoints."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from refine.errors import RefineError

#: Decision-log columns that are not signals.
CORE = ("id", "url", "kept", "reason", "detail", "source", "text_hash")


@dataclass
class StageDecision:
    folder: str
    name: str
    kept: bool
    reason: str | None
    detail: str | None
    signals: dict[str, Any] = field(default_factory=dict)


def _report(output: Path) -> dict:
    path = output / "report.json"
    if not path.is_file():
        raise RefineError(f"{path}: no report here (has `refine run` finished on this output?)")
    return json.loads(path.read_text(encoding="utf-8"))


def stage_folders(output: Path) -> list[tuple[str, str]]:
    """(folder, stage name) in pipeline order, from the run's report."""
    return [(s["folder"], s["name"]) for s in _report(output)["stages"]]


def _folder_of(output: Path, stage: str) -> str:
    for folder, name in stage_folders(output):
        if stage in (name, folder):
            return folder
    known = ", ".join(name for _, name in stage_folders(output))
    raise RefineError(f"no stage {stage!r} in {output} (stages: {known})")


def _log(output: Path, folder: str) -> ds.Dataset:
    path = output / "stages" / folder
    if not path.is_dir():
        raise RefineError(f"{path}: no decision log (the stage wrote none, or the run was cut)")
    return ds.dataset(path, format="parquet")


def _texts(output: Path, folder: str, ids: list[str]) -> dict[str, str]:
    """The text of ``ids`` as they entered the stage in ``folder``: from the latest document
    checkpoint before it (its documents are not kept when it dropped them)."""
    folders = [f for f, _ in stage_folders(output)]
    before = folders[: folders.index(folder)]
    for candidate in reversed(before):
        docs = output / "documents" / candidate
        if docs.is_dir() and ids:
            dataset = ds.dataset(docs, format="parquet")
            if "text" not in dataset.schema.names:
                continue
            table = dataset.to_table(columns=["id", "text"], filter=pc.field("id").isin(ids))
            return dict(zip(table["id"].to_pylist(), table["text"].to_pylist(), strict=True))
    return {}


def inspect(
    output: str | Path,
    stage: str,
    *,
    reason: str | None = None,
    kept: bool = False,
    n: int = 10,
) -> list[dict[str, Any]]:
    """Up to ``n`` documents the stage dropped (``kept=False``, optionally for one ``reason``)
    or kept, in part order, each with its signals and the text it was judged on."""
    output = Path(output)
    folder = _folder_of(output, stage)
    dataset = _log(output, folder)
    condition = _condition(dataset, stage, reason, kept)
    table = dataset.head(n, filter=condition) if n > 0 else dataset.to_table(filter=condition)
    rows = table.to_pylist()
    texts = _texts(output, folder, [r["id"] for r in rows if r.get("id")])
    out = []
    for r in rows:
        signals = {k: v for k, v in r.items() if k not in CORE}
        out.append(
            {
                "id": r.get("id"),
                "url": r.get("url"),
                "reason": r.get("reason"),
                "detail": r.get("detail"),
                "source": r.get("source"),
                "signals": signals,
                "text": texts.get(r.get("id")),
            }
        )
    return out


def _condition(dataset: ds.Dataset, stage: str, reason: str | None, kept: bool) -> Any:
    """The filter for kept / dropped (as ``reason``) rows; a reason the stage never gave is a
    ``RefineError`` listing the ones it gave."""
    condition = pc.field("kept") == kept
    if reason is None:
        return condition
    given = drop_reasons(dataset)
    if reason not in given:
        listed = ", ".join(f"{r} ({n})" for r, n in given.items()) or "none: it dropped nothing"
        raise RefineError(f"stage {stage!r} dropped nothing as {reason!r}; its reasons: {listed}")
    return condition & (pc.field("reason") == reason)


def drop_reasons(dataset: ds.Dataset) -> dict[str, int]:
    """reason -> documents the stage dropped for it, most first."""
    reasons = dataset.to_table(columns=["reason"], filter=pc.field("kept") == False)  # noqa: E712
    counts = pc.value_counts(reasons["reason"]) if reasons.num_rows else []
    pairs = [(c["values"].as_py(), c["counts"].as_py()) for c in counts]
    return dict(sorted(((r, n) for r, n in pairs if r is not None), key=lambda x: -x[1]))


def count_matching(
    output: str | Path, stage: str, *, reason: str | None = None, kept: bool = False
) -> int:
    """How many documents ``inspect`` could show: all the stage dropped (as ``reason``) or kept."""
    output = Path(output)
    dataset = _log(output, _folder_of(output, stage))
    return dataset.count_rows(filter=_condition(dataset, stage, reason, kept))


def explain(
    output: str | Path,
    *,
    doc_id: str | None = None,
    url: str | None = None,
    _retry: bool = False,
) -> dict:
    """The decision of every stage about one document (by id, or every capture of a URL), in
    pipeline order, up to the stage that dropped it."""
    if (doc_id is None) == (url is None):
        raise RefineError("give exactly one of --id or --url")
    output = Path(output)
    field_name, value = ("id", doc_id) if doc_id is not None else ("url", url)
    fates: dict[str, list[StageDecision]] = {}
    for folder, name in stage_folders(output):
        path = output / "stages" / folder
        if not path.is_dir():
            continue
        table: pa.Table = ds.dataset(path, format="parquet").to_table(
            filter=pc.field(field_name) == value
        )
        for r in table.to_pylist():
            key = r.get("id") or r.get("source") or "?"
            if key in fates and not fates[key][-1].kept:
                continue  # already dropped by an earlier stage
            fates.setdefault(key, []).append(
                StageDecision(
                    folder,
                    name,
                    bool(r["kept"]),
                    r.get("reason"),
                    r.get("detail"),
                    {k: v for k, v in r.items() if k not in CORE},
                )
            )
    if not fates and doc_id is not None and not _retry:
        # a WARC-Record-ID is written <urn:uuid:...>: accept it with or without the brackets
        other = doc_id[1:-1] if doc_id.startswith("<") and doc_id.endswith(">") else f"<{doc_id}>"
        try:
            return explain(output, doc_id=other, _retry=True)
        except RefineError:
            pass
    if not fates:
        raise RefineError(
            f"no document with {field_name} {value!r} in any decision log of {output}"
        )
    return fates
