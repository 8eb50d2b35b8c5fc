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
