"""s3:// inputs, against a local S3 stand-in (moto's server on 127.0.0.1), never real AWS."""

from __future__ import annotations

import pytest
from support import FAST_STAGES, documents, require_shared_data, run_cli, write_config

moto_server = pytest.importorskip("moto.server", reason="moto[server] is in the test extra")
boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(monkeypatch):
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FSSPEC_S3_ENDPOINT_URL": endpoint,  # fsspec passes it to s3fs as endpoint_url
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="crawl")
    yield client, env
    server.stop()


def test_s3_inputs_single_file_and_glob_match_local(tmp_path, s3):
    data = require_shared_data()
    client, env = s3
    names = ["wget-sample-0000.warc.gz", "wget-sample-0001.warc.gz"]
    for n in names:
        client.upload_file(str(data / "warc" / n), "crawl", f"segments/{n}")

    local_out = tmp_path / "local"
    cfg = write_config(
        tmp_path / "l.yaml", [str(data / "warc" / n) for n in names], local_out, FAST_STAGES
    )
    assert run_cli("run", str(cfg), "--workers", "1", "--no-progress").returncode == 0

    out = tmp_path / "s3"
    cfg = write_config(tmp_path / "s.yaml", ["s3://crawl/segments/*.warc.gz"], out, FAST_STAGES)
    r = run_cli("run", str(cfg), "--workers", "2", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = documents(local_out), documents(out)
    assert a.num_rows > 0
    assert a["id"].to_pylist() == b["id"].to_pylist()
    assert a["text"].to_pylist() == b["text"].to_pylist()
    assert {s.split("#")[0] for s in b["source"].to_pylist()} == {
        f"s3://crawl/segments/{n}" for n in names
    }


def test_missing_s3_object_fails_before_work(tmp_path, s3):
    _, env = s3
    out = tmp_path / "o"
    cfg = write_config(tmp_path / "s.yaml", ["s3://crawl/nope.warc.gz"], out, FAST_STAGES)
    r = run_cli("run", str(cfg), "--no-progress", env=env)
    assert r.returncode == 2, r.stderr
    assert "s3://crawl/nope.warc.gz" in r.stderr and "Traceback" not in r.stderr
    assert not out.exists()


def test_s3_text_inputs_jsonl_split_and_parquet_row_groups(tmp_path, s3, monkeypatch):
    """Text inputs on S3: an uncompressed JSONL file split into byte ranges (seeks on s3fs) and
    a Parquet file read by row groups give the same documents as the local files."""
    import gzip
    import json

    import fsspec.config
    import pyarrow as pa
    import pyarrow.parquet as pq
    import s3fs

    from refine.extract.stages import ReadParams, ReadWarc

    data = require_shared_data()
    client, env = s3
    # read in this process: fsspec took FSSPEC_* from the environment when it was imported
    # (maybe before the fixture set it), and caches S3 filesystems
    monkeypatch.setitem(fsspec.config.conf, "s3", {"endpoint_url": env["FSSPEC_S3_ENDPOINT_URL"]})
    s3fs.S3FileSystem.clear_instance_cache()
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rb") as f:
        recs = [json.loads(line) for line in f][:300]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    pq.write_table(pa.Table.from_pylist(recs), tmp_path / "b.parquet", row_group_size=100)
    for name in ("a.jsonl", "b.parquet"):
        client.upload_file(str(tmp_path / name), "crawl", f"text/{name}")

    def read(url: str) -> pa.Table:
        stage = ReadWarc(ReadParams(slice_mb=0.1, date_field="created"))
        parts = stage.plan(stage.resolve_inputs([url]))
        assert len(parts) > 1
        return pa.concat_tables(stage.read(p).table for p in parts)

    for name in ("a.jsonl", "b.parquet"):
        local, remote = read(str(tmp_path / name)), read(f"s3://crawl/text/{name}")
        assert remote.num_rows == local.num_rows > 250
        assert remote["id"].to_pylist() == local["id"].to_pylist()
        assert remote["text"].to_pylist() == local["text"].to_pylist()
