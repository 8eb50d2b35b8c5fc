"""OUT/dataset/: the published shards load with ``datasets.load_dataset`` and pandas, every
document once, in part order, with its metadata; stale shards go, a user's files stay."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import math
from decimal import Decimal
from pathlib import Path

import datasets
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refine.errors import RefineError
from refine.pipeline.dataset import write_dataset
from refine.pipeline.storage import OutputLayout

datasets.disable_progress_bars()

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("url", pa.string()),
        ("date", pa.timestamp("us", tz="UTC")),
        ("text", pa.large_string()),
        ("source", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float32()),
        (
            "meta",
            pa.struct(
                [
                    ("warc_id", pa.string()),
                    ("lang", pa.struct([("code", pa.string()), ("p", pa.float64())])),
                ]
            ),
        ),
        ("tags", pa.list_(pa.string())),
        ("n_links", pa.int64()),
        ("is_news", pa.bool_()),
        ("headers", pa.map_(pa.string(), pa.string())),
        ("_scratch", pa.int32()),
    ]
)
PUBLIC = [n for n in SCHEMA.names if not n.startswith("_")]
# the first part is empty: the case where a reader takes its types from the first shard
PARTS = {"00-0000": [], "00-0001": [0, 1, 2], "01-0000": [3, 4]}


def _doc(i: int) -> dict:
    return {
        "id": f"doc-{i}",
        "url": f"https://example.org/straße/{i}",
        "date": dt.datetime(2024, 5, 1 + i, 12, 0, 0, 250_000 * (i % 2), tzinfo=dt.UTC),
        "text": f'Grüße {i}: "日本語" — ✓\nsecond line',
        "source": "s3://commoncrawl/x.warc.gz",
        "language": "de",
        "language_score": float("nan") if i == 1 else 0.97,
        "meta": None if i == 4 else {"warc_id": f"<urn:{i}>", "lang": {"code": "de", "p": 0.5}},
        "tags": [] if i == 2 else ["news", "ß"],
        "n_links": None if i == 1 else 10 * i,
        "is_news": i % 2 == 0,
        "headers": [("content-type", "text/html")] + ([("x-ü", "1")] if i == 3 else []),
        "_scratch": i,
    }


DOCS = [_doc(i) for i in range(5)]


def _iso(d: dt.datetime) -> str:
    return d.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _key_values(pairs: list[tuple[str, str]]) -> list[dict]:
    return [{"key": k, "value": v} for k, v in pairs]


@pytest.fixture
def parts(tmp_path) -> list[Path]:
    folder = tmp_path / "documents" / "03_language"
    folder.mkdir(parents=True)
    paths = []
    for part_id, docs in PARTS.items():
        path = folder / f"part-{part_id}.parquet"
        pq.write_table(pa.Table.from_pylist([DOCS[i] for i in docs], schema=SCHEMA), path)
        paths.append(path)
    return paths


def _load(kind: str, out: Path, ext: str, tmp_path: Path) -> datasets.Dataset:
    return datasets.load_dataset(
        kind, data_files=str(out / f"*.{ext}"), split="train", cache_dir=str(tmp_path / "hf")
    )


def _check_common(rows: list[dict]) -> None:
    """What both formats give back alike: every document once, in part order."""
    assert [r["id"] for r in rows] == [d["id"] for d in DOCS]
    for row, doc in zip(rows, DOCS, strict=True):
        assert list(row) == PUBLIC
        for col in ("url", "text", "source", "language", "meta", "tags", "n_links", "is_news"):
            assert row[col] == doc[col], (col, row[col], doc[col])
        assert row["headers"] == _key_values(doc["headers"])


def test_parquet_shards_load_with_datasets_and_pandas(parts, tmp_path):
    out = tmp_path / "dataset"
    summary = write_dataset(parts, out, "parquet")

    names = sorted(p.name for p in out.iterdir())
    assert names == ["part-00-0000.parquet", "part-00-0001.parquet", "part-01-0000.parquet"]
    assert summary == {
        "format": "parquet",
        "shards": 3,
        "documents": 5,
        "bytes": sum(p.stat().st_size for p in out.iterdir()),
        "columns": PUBLIC,
    }
    empty = pq.ParquetFile(out / "part-00-0000.parquet")
    assert empty.metadata.num_rows == 0 and empty.metadata.num_row_groups == 0
    assert empty.schema_arrow.names == PUBLIC

    ds = _load("parquet", out, "parquet", tmp_path)
    rows = ds.to_list()
    _check_common(rows)
    for row, doc in zip(rows, DOCS, strict=True):
        assert row["date"] == doc["date"] and row["date"].utcoffset() == dt.timedelta(0)
        if math.isnan(doc["language_score"]):
            assert math.isnan(row["language_score"])
        else:
            assert row["language_score"] == pytest.approx(0.97, rel=1e-6)
    assert ds.features["text"] == datasets.Value("large_string")

    df = pd.read_parquet(out)
    assert df["id"].tolist() == [d["id"] for d in DOCS]
    assert df["text"].tolist() == [d["text"] for d in DOCS]
    assert df["date"].tolist() == [d["date"] for d in DOCS]
    assert str(df["date"].dt.tz) == "UTC"
    assert df["meta"].tolist() == [d["meta"] for d in DOCS]
    assert [list(t) for t in df["tags"]] == [d["tags"] for d in DOCS]


def test_jsonl_shards_load_with_datasets_and_pandas(parts, tmp_path):
    out = tmp_path / "dataset"
    summary = write_dataset(parts, out, "jsonl.gz")

    names = sorted(p.name for p in out.iterdir())
    assert names == ["part-00-0000.jsonl.gz", "part-00-0001.jsonl.gz", "part-01-0000.jsonl.gz"]
    assert summary["documents"] == 5 and summary["shards"] == 3 and summary["columns"] == PUBLIC
    assert gzip.decompress((out / "part-00-0000.jsonl.gz").read_bytes()) == b""
    raw = gzip.decompress((out / "part-00-0001.jsonl.gz").read_bytes())
    assert "Grüße".encode() in raw and b"\\u" not in raw  # UTF-8 as is, not escaped
    assert len(raw.splitlines()) == 3  # newlines inside texts are escaped
    first = json.loads(raw.splitlines()[0])
    assert first["date"] == "2024-05-01T12:00:00Z" and first["language_score"] == 0.97

    ds = _load("json", out, "jsonl.gz", tmp_path)
    rows = ds.to_list()
    _check_common(rows)
    assert [r["date"] for r in rows] == [_iso(d["date"]) for d in DOCS]
    assert rows[1]["date"] == "2024-05-02T12:00:00.250000Z"
    assert [r["language_score"] for r in rows] == [0.97, None, 0.97, 0.97, 0.97]

    frames = [pd.read_json(out / n, lines=True) for n in names]
    assert frames[0].empty
    df = pd.concat(frames[1:], ignore_index=True)
    assert df["id"].tolist() == [d["id"] for d in DOCS]
    assert df["text"].tolist() == [d["text"] for d in DOCS]
    assert df["date"].tolist() == [d["date"] for d in DOCS]  # pandas parses a "date" column
    assert df["tags"].tolist() == [d["tags"] for d in DOCS]


def test_rerun_removes_stale_and_other_format_shards_and_keeps_user_files(parts, tmp_path):
    out = tmp_path / "dataset"
    extra = parts[-1].with_name("part-02-0000.parquet")
    extra.write_bytes(parts[-1].read_bytes())
    write_dataset([*parts, extra], out, "jsonl.gz")
    write_dataset([*parts, extra], out, "parquet")
    assert (out / "part-02-0000.parquet").exists()
    (out / "README.md").write_text("# my corpus\n")
    (out / "part-of-speech.txt").write_text("not a shard\n")
    (out / ".tmp-0123-part-00-0001.parquet").write_bytes(b"half")  # a killed run's leftover

    summary = write_dataset(parts, out, "parquet")

    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "part-00-0000.parquet",
        "part-00-0001.parquet",
        "part-01-0000.parquet",
        "part-of-speech.txt",
    ]
    assert (out / "README.md").read_text() == "# my corpus\n"
    assert summary["documents"] == 5
    rows = _load("parquet", out, "parquet", tmp_path).to_list()
    assert [r["id"] for r in rows] == [d["id"] for d in DOCS]  # each once: no stale copy

    write_dataset(parts, out, "jsonl.gz")
    assert not list(out.glob("*.parquet")) and (out / "README.md").exists()


def test_shards_are_written_through_a_dask_cluster(parts, tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    out = tmp_path / "dataset"
    with (
        LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0"
        ) as cluster,
        Client(cluster) as client,
    ):
        with get_task_stream(client) as tasks:
            summary = write_dataset(parts, out, "jsonl.gz", client=client)
    # one task per part, run in the worker process (so the function went through pickle)
    assert sorted(str(t["key"]).split("-")[0] for t in tasks.data) == ["write_shard"] * 3
    assert summary["documents"] == 5 and summary["shards"] == 3
    _check_common(_load("json", out, "jsonl.gz", tmp_path).to_list())


def test_refused_before_writing(parts, tmp_path):
    out = tmp_path / "dataset"
    with pytest.raises(RefineError, match="output_format 'csv'"):
        write_dataset(parts, out, "csv")
    with pytest.raises(RefineError, match="not a documents part"):
        write_dataset([tmp_path / "notes.parquet"], out, "parquet")
    other = tmp_path / "elsewhere" / parts[1].name
    other.parent.mkdir()
    other.write_bytes(parts[1].read_bytes())
    with pytest.raises(RefineError, match="would both be published"):
        write_dataset([parts[1], other], out, "parquet")

    binary = tmp_path / "documents" / "bin" / "part-0.parquet"
    binary.parent.mkdir(parents=True)
    pq.write_table(pa.table({"id": ["a"], "raw": pa.array([b"\x00"], pa.binary())}), binary)
    with pytest.raises(RefineError, match="column 'raw' holds binary"):
        write_dataset([binary], out, "jsonl.gz")
    assert write_dataset([binary], out, "parquet")["documents"] == 1
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]


def test_a_link_in_the_dataset_folder_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "dataset").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (out / "dataset" / "part-0.parquet").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RefineError, match="symbolic link"):
        OutputLayout(out).prepare()


def test_jsonl_values_whatever_their_arrow_type(tmp_path):
    """Timestamps in any zone (or none: taken as UTC) come out in UTC ending in ``Z``, with
    nanoseconds kept; float32 prints as its shortest decimal at any depth; decimals as text."""
    at = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    nested = pa.struct([("score", pa.float32()), ("when", pa.timestamp("us", tz="Asia/Tokyo"))])
    table = pa.table(
        {
            "id": ["a"],
            "paris": pa.array([at], pa.timestamp("ms", tz="Europe/Paris")),
            "naive": pa.array([at.replace(tzinfo=None)], pa.timestamp("s")),
            "nanos": pa.array([1_714_564_800_000_000_001], pa.timestamp("ns", tz="UTC")),
            "nested": pa.array([{"score": 0.1, "when": at}], nested),
            "scores": pa.array([[0.3, float("inf")]], pa.list_(pa.float32())),
            "price": pa.array([Decimal("19.99")], pa.decimal128(6, 2)),
        }
    )
    part = tmp_path / "documents" / "part-0.parquet"
    part.parent.mkdir()
    pq.write_table(table, part)
    write_dataset([part], tmp_path / "dataset", "jsonl.gz")
    row = json.loads(gzip.decompress((tmp_path / "dataset" / "part-0.jsonl.gz").read_bytes()))
    assert row == {
        "id": "a",
        "paris": "2024-05-01T12:00:00Z",
        "naive": "2024-05-01T12:00:00Z",
        "nanos": "2024-05-01T12:00:00.000000001Z",
        "nested": {"score": 0.1, "when": "2024-05-01T12:00:00Z"},
        "scores": [0.3, None],
        "price": "19.99",
    }
