"""Output layout and atomic writes.

```
OUTPUT/documents/NN_name/part-ID.parquet   documents at checkpoints (and every stage with
                                           keep_intermediate)
OUTPUT/stages/NN_name/part-ID.parquet      each stage's decision log
OUTPUT/stats/NN_name.json                  each stage's merged stats
OUTPUT/report.json                         the run's report
OUTPUT/_state/                             resume bookkeeping (fingerprints, finished parts)
```

Every file is written under a temporary name in the same folder and renamed when complete, so a
killed run leaves either a whole file or none (temporary names start with ``.`` and are ignored by
Parquet dataset readers).

Nothing is written outside OUTPUT: every name below it is built from checked single path
components (stage names, part ids), and a folder inside it that is a symbolic link is refused
before any work (writing or deleting through it would reach elsewhere). OUTPUT itself may be a
link.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from refine.errors import RefineError

TMP_PREFIX = ".tmp-"
#: Written into every output folder refine makes (see ``OutputLayout.prepare``).
MARKER = ".refine-output"
_COMPONENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: The folders refine writes under OUTPUT, and how many levels of sub-folders below each are
#: checked for links (``documents/NN_name``; ``_state/done/KEY``).
_MANAGED = {"documents": 0, "stages": 0, "stats": 0, "tokens": 0, "dataset": 0, "_state": 1}


def safe_component(name: str) -> str:
    """``name`` if it is one plain path component (no separator, no ``..``, no leading dot)."""
    if not isinstance(name, str) or not _COMPONENT.fullmatch(name) or ".." in name:
        raise RefineError(f"{name!r} cannot name a file or folder under the output directory")
    return name


def stage_folder(index: int, name: str) -> str:
    return safe_component(f"{index:02d}_{name}")


class OutputLayout:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()

    def documents(self, folder: str) -> Path:
        return self.root / "documents" / safe_component(folder)

    def stage_log(self, folder: str) -> Path:
        return self.root / "stages" / safe_component(folder)

    def stats(self, folder: str) -> Path:
        return self.root / "stats" / f"{safe_component(folder)}.json"

    def dataset(self) -> Path:
        """The final documents as shards people load without refine (``output_format``)."""
        return self.root / "dataset"

    def report(self) -> Path:
        return self.root / "report.json"

    def segment_state(self, key: str) -> Path:
        return self.root / "_state" / "segments" / f"{safe_component(key)}.json"

    def saved_signals(self, folder: str) -> Path:
        """A filter's decision logs from the previous run, kept while it is re-applied."""
        return self.root / "_state" / "signals" / safe_component(folder)

    def done_dir(self, key: str) -> Path:
        return self.root / "_state" / "done" / safe_component(key)

    def done_marker(self, key: str, part_id: str) -> Path:
        return self.done_dir(key) / f"part-{safe_component(part_id)}.json"

    def prepare(self) -> None:
        """Create the output folder and prove it is writable, before any work starts.

        A re-run deletes what it recomputes under ``documents/``, ``stages/``, ``tokens/``...:
        a folder refine did not make (no ``MARKER``, no ``_state/`` of an earlier version) that
        already holds any of those is refused, never cleaned."""
        self.refuse_links()
        self.refuse_foreign()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{TMP_PREFIX}probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
            marker = self.root / MARKER
            if not marker.exists():
                marker.write_text(
                    "This folder is a refine output: refine run may delete and rewrite what is "
                    "in it.\n",
                    encoding="utf-8",
                )
        except OSError as e:
            raise RefineError(f"output directory {self.root} is not writable: {e}") from None
        self.refuse_links()

    def refuse_foreign(self) -> None:
        """``RefineError`` when OUTPUT exists, was not made by refine, and holds a folder refine
        would write or delete in."""
        if not self.root.is_dir() or (self.root / MARKER).exists():
            return
        if (self.root / "_state" / "segments").is_dir():  # made by refine before the marker
            return
        found = sorted(n for n in (*_MANAGED, "report.json") if (self.root / n).exists())
        if found:
            raise RefineError(
                f"output directory {self.root} was not made by refine but holds "
                f"{', '.join(found)}: refine would delete or overwrite them; choose another "
                f"output, or add the file {MARKER} there if refine may use it"
            )

    def refuse_links(self) -> None:
        """Fail (``RefineError``) if a folder refine writes or deletes under OUTPUT is a
        symbolic link: a re-run would write, or ``rmtree``, wherever it points. Looks only at
        folders (a few per stage), never at the part files, so it costs nothing on big runs;
        a linked *file* is harmless (an atomic rename replaces the link, not its target)."""

        def walk(path: Path, depth: int) -> None:
            try:
                entries = list(os.scandir(path))
            except (FileNotFoundError, NotADirectoryError):
                return
            for entry in entries:
                if entry.is_symlink():
                    if entry.name.startswith(TMP_PREFIX):
                        continue
                    target = os.readlink(entry.path)
                    raise RefineError(
                        f"{entry.path} is a symbolic link (to {target}): refine writes only "
                        f"inside the output directory; remove the link or set output: to "
                        f"where it points"
                    )
                if depth > 0 and entry.is_dir(follow_symlinks=False):
                    walk(Path(entry.path), depth - 1)

        for name, depth in _MANAGED.items():
            path = self.root / name
            if path.is_symlink():
                raise RefineError(
                    f"{path} is a symbolic link (to {os.readlink(path)}): refine writes only "
                    f"inside the output directory; remove the link or set output: to where "
                    f"it points"
                )
            walk(path, depth)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")


def write_parquet_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_parquet_pieces_atomic(schema: pa.Schema, pieces: Iterable[pa.Table], path: Path) -> int:
    """Write tables one after another into one Parquet file (a row group or more each), so a
    file larger than memory allows is never held whole; rows written. Atomic like
    ``write_parquet_atomic``: the file appears whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    rows = 0
    try:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            for piece in pieces:
                writer.write_table(piece)
                rows += piece.num_rows
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return rows


def write_json_atomic(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        tmp.write_text(json.dumps(obj, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def remove_tree(path: Path) -> None:
    """Remove a file or folder; a symbolic link is removed itself, never what it points to."""
    if path.is_symlink():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()


def clean_temporaries(folder: Path) -> None:
    """Remove half-written files a killed run left behind."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(TMP_PREFIX):
                p.unlink(missing_ok=True)


def list_parts(folder: Path) -> list[Path]:
    """The complete Parquet parts of a documents folder, in part-id order."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet"))
