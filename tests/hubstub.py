"""A stand-in for the Hugging Face Hub on 127.0.0.1, speaking the part of its HTTP API that
``huggingface_hub`` uses to create a dataset repository and commit files through the LFS
protocol (``HF_HUB_DISABLE_XET=1``): repo creation, README metadata validation, preupload,
LFS batch + PUT + verify, and the NDJSON commit. It keeps what was committed in memory so a test
can compare it with the files on disk. Never the real hub.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import yaml

LFS_SUFFIXES = (".parquet", ".bin", ".idx", ".arrow", ".npy")


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[dict[str, Any]] = field(default_factory=list)


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStub:
    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_puts = 0
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                stub._handle(self, "POST")

            def do_PUT(self) -> None:
                stub._handle(self, "PUT")

            def do_GET(self) -> None:
                stub._handle(self, "GET")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- request handling --------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        path = h.path.split("?", 1)[0]
        with self.lock:
            self.requests.append((method, path))
        # LFS upload hrefs are pre-signed (as S3's are): the path is signed, no token is sent
        m = re.fullmatch(r"/lfs/([0-9a-f]{32})/([0-9a-f]{64})", path)
        presigned = method == "PUT" and m is not None and m.group(1) == self._sign(m.group(2))
        if not presigned and h.headers.get("authorization") != f"Bearer {self.token}":
            return self._send(h, 401, {"error": "Invalid credentials in Authorization header"})
        try:
            status, payload = self._route(method, path, body)
        except KeyError as e:
            status, payload = 404, {"error": f"not found: {e}"}
        self._send(h, status, payload)

    def _sign(self, oid: str) -> str:
        return hashlib.sha256(f"{self.token}/{oid}".encode()).hexdigest()[:32]

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status >= 400:
            h.send_header("X-Error-Message", str(payload.get("error", "")))
        h.end_headers()
        h.wfile.write(data)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if method == "POST" and path == "/api/repos/create":
            req = json.loads(body)
            if req.get("type") != "dataset":
                return 400, {"error": "this stand-in only hosts datasets"}
            repo_id = (
                f"{req['organization']}/{req['name']}" if req.get("organization") else req["name"]
            )
            with self.lock:
                if repo_id in self.repos:
                    return 409, {
                        "error": "You already created this dataset repo",
                        "url": f"{self.url}/datasets/{repo_id}",
                    }
                self.repos[repo_id] = Repo(private=req.get("visibility") == "private")
            return 200, {"url": f"{self.url}/datasets/{repo_id}", "name": repo_id}
        if method == "POST" and path == "/api/validate-yaml":
            content = json.loads(body)["content"]
            m = re.match(r"---\n(.*?)\n---\n", content, re.S)
            if not m:
                return 200, {"errors": [], "warnings": [{"message": "empty metadata"}]}
            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError as e:
                return 400, {"errors": [{"message": str(e)}], "error": "invalid yaml"}
            if not isinstance(meta, dict):
                return 400, {"errors": [{"message": "metadata is not a mapping"}], "error": "bad"}
            return 200, {"errors": [], "warnings": []}
        if m := re.fullmatch(r"/api/datasets/(.+)/preupload/([^/]+)", path):
            repo = self.repos[m.group(1)]
            files = []
            for f in json.loads(body)["files"]:
                lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] > 10_000_000
                old = repo.files.get(f["path"])
                oid = None
                if old is not None:
                    oid = hashlib.sha256(old).hexdigest() if lfs else git_blob_sha1(old)
                files.append(
                    {
                        "path": f["path"],
                        "uploadMode": "lfs" if lfs else "regular",
                        "shouldIgnore": False,
                        "oid": oid,
                    }
                )
            return 200, {"files": files}
        if m := re.fullmatch(r"/datasets/(.+)\.git/info/lfs/objects/batch", path):
            self.repos[m.group(1)]  # noqa: B018 (KeyError -> 404)
            objects = []
            for o in json.loads(body)["objects"]:
                if o["oid"] in self.lfs:
                    objects.append({"oid": o["oid"], "size": o["size"]})
                else:
                    objects.append(
                        {
                            "oid": o["oid"],
                            "size": o["size"],
                            "actions": {
                                "upload": {"href": self._upload_href(o["oid"])},
                                "verify": {"href": f"{self.url}/lfs-verify"},
                            },
                        }
                    )
            return 200, {"transfer": "basic", "objects": objects}
        if method == "PUT" and (m := re.fullmatch(r"/lfs/[0-9a-f]{32}/([0-9a-f]{64})", path)):
            if hashlib.sha256(body).hexdigest() != m.group(1):
                return 400, {"error": "sha256 of the body does not match the oid"}
            with self.lock:
                self.lfs[m.group(1)] = body
                self.lfs_puts += 1
            return 200, {}
        if path == "/lfs-verify":
            o = json.loads(body)
            ok = o["oid"] in self.lfs and len(self.lfs[o["oid"]]) == o["size"]
            return (200, {}) if ok else (404, {"error": "object not uploaded"})
        if method == "GET" and (m := re.fullmatch(r"/api/datasets/(.+)/revision/([^/]+)", path)):
            repo = self.repos[m.group(1)]
            sha = repo.commits[-1]["oid"] if repo.commits else "0" * 40
            siblings = [{"rfilename": p} for p in sorted(repo.files)]
            return 200, {
                "id": m.group(1),
                "sha": sha,
                "private": repo.private,
                "siblings": siblings,
            }
        if m := re.fullmatch(r"/api/datasets/(.+)/commit/([^/]+)", path):
            return self._commit(m.group(1), body)
        return 404, {"error": f"no route for {method} {path}"}

    def _upload_href(self, oid: str) -> str:
        return f"{self.url}/lfs/{self._sign(oid)}/{oid}"

    def _commit(self, repo_id: str, body: bytes) -> tuple[int, Any]:
        repo = self.repos[repo_id]
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(i["value"] for i in items if i["key"] == "header")
        staged: dict[str, bytes] = {}
        lfs_paths: set[str] = set()
        for item in items:
            value = item["value"]
            if item["key"] == "file":
                staged[value["path"]] = base64.b64decode(value["content"])
            elif item["key"] == "lfsFile":
                if value["oid"] not in self.lfs:
                    return 400, {"error": f"LFS object {value['oid']} was never uploaded"}
                staged[value["path"]] = self.lfs[value["oid"]]
                lfs_paths.add(value["path"])
        with self.lock:
            repo.files.update(staged)
            repo.lfs_paths |= lfs_paths
            oid = hashlib.sha1(json.dumps([header, sorted(staged)]).encode()).hexdigest()
            repo.commits.append({"oid": oid, "summary": header["summary"], "paths": sorted(staged)})
        return 200, {
            "commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}",
            "commitOid": oid,
            "success": True,
        }
