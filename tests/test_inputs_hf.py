"""hf://datasets/... inputs: expansion (globs, folders, single files, at a revision) and reads
through huggingface_hub's HfFileSystem, against the Hub stand-in (tests/hubstub.py on 127.0.0.1),
in this process and in a fresh one that only has HF_ENDPOINT and HF_TOKEN in its environment (as a
Dask worker does)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import subprocess
import sys

import pytest
from hubstub import HubStub
from support import REPO

from refine.errors import InputError
from refine.pipeline.inputs import expand_inputs, open_url

TOKEN = "hf_test_token"
REPO_ID = "org/name"
BASE = f"hf://datasets/{REPO_ID}"


def _jsonl_gz(tag: str, n: int) -> bytes:
    rng = random.Random(tag)
    lines = (
        json.dumps(
            {"id": f"{tag}-{i}", "text": " ".join(rng.choice("abcdefgh") * 3 for _ in range(40))}
        )
        for i in range(n)
    )
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


MAIN = {
    "README.md": b"# a dataset\n",
    "data/a.jsonl.gz": _jsonl_gz("main-a", 300),
    "data/b.jsonl.gz": _jsonl_gz("main-b", 20),
}
V1 = {
    "README.md": b"# a dataset, v1\n",
    "data/a.jsonl.gz": _jsonl_gz("v1-a", 500),  # same name as on main, other bytes
    "data/c.jsonl.gz": _jsonl_gz("v1-c", 7),
    "data/deeper/d.jsonl.zst": b"\x28\xb5\x2f\xfd not really zstd",
    "data/shard.parquet": b"PAR1 not really parquet PAR1",
    "data/notes.txt": b"not an input",
}


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A private dataset repo with files at ``main`` and at ``v1``; huggingface_hub pointed at it
    the way HF_ENDPOINT/HF_TOKEN would at import (its constants), and the environment set for
    subprocesses. Tree pages of 2 entries, so listings follow the ``Link`` header."""
    import huggingface_hub.constants as constants
    from huggingface_hub import HfFileSystem

    with HubStub(TOKEN, page_size=2) as stub:
        stub.add_files(REPO_ID, MAIN, private=True)
        stub.add_files(REPO_ID, V1, revision="v1")
        template = stub.url + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "ENDPOINT", stub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
        for var in ("HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("HF_TOKEN", TOKEN)  # read at every request
        monkeypatch.setenv("HF_ENDPOINT", stub.url)  # for subprocesses: read at import
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        # fsspec caches HfFileSystem instances (per thread, endpoint and token argument) with their
        # listings: none may outlive this stub or carry a listing made with another token
        HfFileSystem.clear_instance_cache()
        try:
            yield stub
        finally:
            HfFileSystem.clear_instance_cache()


def _found(patterns):
    return [(f.url, f.size, f.error) for f in expand_inputs(patterns)]


def test_glob_at_a_revision_lists_that_revision(hub):
    assert _found([f"{BASE}@v1/data/*.jsonl.gz"]) == [
        (f"{BASE}@v1/data/a.jsonl.gz", len(V1["data/a.jsonl.gz"]), None),
        (f"{BASE}@v1/data/c.jsonl.gz", len(V1["data/c.jsonl.gz"]), None),
    ]
    # no revision: main, and URLs without one
    assert _found([f"{BASE}/data/*.jsonl.gz"]) == [
        (f"{BASE}/data/a.jsonl.gz", len(MAIN["data/a.jsonl.gz"]), None),
        (f"{BASE}/data/b.jsonl.gz", len(MAIN["data/b.jsonl.gz"]), None),
    ]
    assert _found([f"{BASE}@v1/data/**/*.zst"]) == [
        (f"{BASE}@v1/data/deeper/d.jsonl.zst", len(V1["data/deeper/d.jsonl.zst"]), None)
    ]
    assert hub.next_pages > 0  # listings were paginated and every page was followed


def test_folder_input_lists_its_files_of_known_formats(hub):
    assert _found([f"{BASE}/data"]) == [
        (f"{BASE}/data/{n}", len(MAIN[f"data/{n}"]), None) for n in ("a.jsonl.gz", "b.jsonl.gz")
    ]
    names = ("a.jsonl.gz", "c.jsonl.gz", "deeper/d.jsonl.zst", "shard.parquet")  # not notes.txt
    expected = [(f"{BASE}@v1/data/{n}", len(V1[f"data/{n}"]), None) for n in names]
    assert _found([f"{BASE}@v1/data"]) == expected
    assert _found([f"{BASE}@v1/data/"]) == expected


def test_single_file_at_a_revision(hub):
    url = f"{BASE}@v1/data/c.jsonl.gz"
    assert _found([url]) == [(url, len(V1["data/c.jsonl.gz"]), None)]
    # the same file named twice is read once; sizes are of the revision asked for
    assert _found([url, f"{BASE}@v1/data/*.jsonl.gz", f"{BASE}/data/a.jsonl.gz"]) == [
        (url, len(V1["data/c.jsonl.gz"]), None),
        (f"{BASE}@v1/data/a.jsonl.gz", len(V1["data/a.jsonl.gz"]), None),
        (f"{BASE}/data/a.jsonl.gz", len(MAIN["data/a.jsonl.gz"]), None),
    ]


def test_revisions_with_slashes_keep_their_spelling(hub):
    """A special ref as the Hub writes it (@refs/convert/parquet) and a branch with a slash
    (@feature%2Fx, quoted): the URLs keep the revision as the user wrote it and read its bytes."""
    hub.add_files(
        REPO_ID, {"default/train/0000.parquet": b"PAR1 p PAR1"}, revision="refs/convert/parquet"
    )
    hub.add_files(REPO_ID, {"data/a.jsonl.gz": b"feature bytes"}, revision="feature/x")
    special = f"{BASE}@refs/convert/parquet/default/train/0000.parquet"
    assert _found([f"{BASE}@refs/convert/parquet/default/*/*.parquet"]) == [(special, 11, None)]
    branch = f"{BASE}@feature%2Fx/data/a.jsonl.gz"
    assert _found([f"{BASE}@feature%2Fx/data/*.jsonl.gz"]) == [(branch, 13, None)]
    with open_url(special) as f:
        assert f.read() == b"PAR1 p PAR1"
    with open_url(branch) as f:
        assert f.read() == b"feature bytes"


def test_open_reads_exact_bytes_and_ranges(hub):
    for url, data in (
        (f"{BASE}@v1/data/a.jsonl.gz", V1["data/a.jsonl.gz"]),
        (f"{BASE}/data/a.jsonl.gz", MAIN["data/a.jsonl.gz"]),
    ):
        with open_url(url).open() as f:
            assert f.read() == data
        assert gzip.decompress(data).count(b"\n") in (300, 500)
        middle = len(data) // 3
        hub.range_requests.clear()
        with open_url(url).open() as f:
            f.seek(middle)
            assert f.read(1000) == data[middle : middle + 1000]
            f.seek(len(data) - 10)
            assert f.read() == data[-10:]
        # HfFileSystemFile asked for the range, and the stand-in answered 206 with just those bytes
        assert hub.range_requests and hub.range_requests[0][1].startswith(f"bytes={middle}-")
    assert not [r for r in hub.requests if r[0] in ("PUT",) or "/commit/" in r[1]]


def test_private_repo_needs_the_token(hub, monkeypatch):
    from huggingface_hub import HfFileSystem

    monkeypatch.delenv("HF_TOKEN")
    HfFileSystem.clear_instance_cache()  # listings made with the token must not answer now
    for pattern in (f"{BASE}@v1/data/*.jsonl.gz", f"{BASE}/data", f"{BASE}@v1/data/a.jsonl.gz"):
        with pytest.raises(InputError, match="repository not found.*HF_TOKEN"):
            expand_inputs([pattern])
    # a public repository reads without one, as on the Hub
    hub.add_files("org/open", {"data/x.jsonl": b'{"text": "hi"}\n'})
    assert _found(["hf://datasets/org/open/data"]) == [
        ("hf://datasets/org/open/data/x.jsonl", 15, None)
    ]
    # a wrong token is refused, with the Hub's reason
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    HfFileSystem.clear_instance_cache()
    with pytest.raises(InputError, match="HTTP 401 Invalid credentials"):
        expand_inputs([f"{BASE}@v1/data/*.jsonl.gz"])


def test_missing_file_revision_or_repo_is_an_input_error(hub):
    with pytest.raises(InputError, match=r"nope\.jsonl\.gz': not found"):
        expand_inputs([f"{BASE}@v1/data/nope.jsonl.gz"])
    with pytest.raises(InputError, match="b.jsonl.gz': not found"):  # on main, not at v1
        expand_inputs([f"{BASE}@v1/data/b.jsonl.gz"])
    for pattern in (f"{BASE}@v9/data/*.jsonl.gz", f"{BASE}@v9/data/a.jsonl.gz", f"{BASE}@v9/data"):
        with pytest.raises(InputError, match="revision not found"):
            expand_inputs([pattern])
    with pytest.raises(InputError, match="repository not found"):
        expand_inputs(["hf://datasets/org/missing/data/*.jsonl.gz"])
    with pytest.raises(InputError, match="matched no files"):
        expand_inputs([f"{BASE}@v1/nothing-here/*.jsonl.gz"])


_CHILD = """
import hashlib, json, sys
from refine.pipeline.inputs import expand_inputs, open_url
out = []
for f in expand_inputs(sys.argv[1:]):
    with open_url(f.url).open() as fh:
        data = fh.read()
        fh.seek(len(data) // 2)
        tail = fh.read()
    out.append([f.url, f.size, hashlib.sha256(data).hexdigest(), tail == data[len(data) // 2 :]])
print(json.dumps(out))
"""


def test_fresh_process_reads_through_hf_endpoint_and_hf_token(hub):
    """What a Dask worker does: huggingface_hub imported afresh, pointed at the stand-in only by
    the HF_ENDPOINT and HF_TOKEN it inherits."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(
        HF_ENDPOINT=hub.url,
        HF_TOKEN=TOKEN,
        HF_HUB_DISABLE_XET="1",
        HF_HOME=os.environ["HF_HOME"],
        HF_HUB_DISABLE_TELEMETRY="1",
    )
    args = [f"{BASE}@v1/data/*.jsonl.gz", f"{BASE}/data/b.jsonl.gz"]
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    expected = [(f"{BASE}@v1/data/{n}", V1[f"data/{n}"]) for n in ("a.jsonl.gz", "c.jsonl.gz")] + [
        (f"{BASE}/data/b.jsonl.gz", MAIN["data/b.jsonl.gz"])
    ]
    assert json.loads(r.stdout) == [
        [url, len(data), hashlib.sha256(data).hexdigest(), True] for url, data in expected
    ]
    # and without the token, the same process fails with one clear error
    env.pop("HF_TOKEN")
    r = subprocess.run(
        [sys.executable, "-c", _CHILD, *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
    )
    assert r.returncode != 0 and "InputError" in r.stderr and "repository not found" in r.stderr


@pytest.mark.integration
def test_refine_run_reads_a_dataset_revision_on_workers(hub, tmp_path):
    """`refine run` over hf://datasets/ORG/NAME@v1/...: the driver plans, two LocalCluster workers
    (fresh processes with HF_ENDPOINT / HF_TOKEN inherited) read the files of v1, not main's."""
    import pyarrow.parquet as pq
    from support import report, run_cli, stage, write_config

    out = tmp_path / "out"
    cfg = write_config(
        tmp_path / "hf.yaml",
        [f"{BASE}@v1/data/*.jsonl.gz"],
        out,
        "  - read: {}\n  - dedup_exact: {}\n",
        "cluster: {workers: 2}\n",
    )
    env = {"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1"}
    r = run_cli("run", str(cfg), "--no-progress", env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    read = stage(report(out), "read")
    assert read["docs_in"] == 500 + 7 and read["parts"] == 2
    ids = pq.read_table(out / "documents" / "00_read", columns=["id"])["id"].to_pylist()
    assert len(ids) == 507 and all(i.startswith(("v1-a-", "v1-c-")) for i in ids)
    sources = pq.read_table(out / "documents" / "00_read", columns=["source"])["source"]
    assert sources[0].as_py().startswith(f"{BASE}@v1/data/a.jsonl.gz#")
