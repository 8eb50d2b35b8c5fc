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
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from refine.errors import RefineError

TMP_PREFIX = ".tmp-"


def stage_folder(index: int, name: str) -> str:
    return f"{index:02d}_{name}"


class OutputLayout:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).absolute()

    def documents(self, folder: str) -> Path:
        return self.root / "documents" / folder

    def stage_log(self, folder: str) -> Path:
        return self.root / "stages" / folder

    def stats(self, folder: str) -> Path:
        return self.root / "stats" / f"{folder}.json"

    def report(self) -> Path:
        return self.root / "report.json"

    def segment_state(self, key: str) -> Path:
        return self.root / "_state" / "segments" / f"{key}.json"

    def saved_signals(self, folder: str) -> Path:
        """A filter's decision logs from the previous run, kept while it is re-applied."""
        return self.root / "_state" / "signals" / folder

    def done_dir(self, key: str) -> Path:
        return self.root / "_state" / "done" / key

    def done_marker(self, key: str, part_id: str) -> Path:
        return self.done_dir(key) / f"part-{part_id}.json"

    def prepare(self) -> None:
        """Create the output folder and prove it is writable, before any work starts."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{TMP_PREFIX}probe-{uuid.uuid4().hex}"
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as e:
            raise RefineError(f"output directory {self.root} is not writable: {e}") from None


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
    if path.is_dir():
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
