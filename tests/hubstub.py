"""A stand-in for the Hugging Face Hub on 127.0.0.1, speaking the part of its HTTP API that
``huggingface_hub`` uses (``HF_HUB_DISABLE_XET=1``, so no Xet path is taken). Never the real hub.

Writing (``refine push``): repo creation, README metadata validation, preupload, LFS batch + PUT +
verify, and the NDJSON commit. It keeps what was committed in memory so a test can compare it with
the files on disk.

Reading (``HfFileSystem``, ``hf://datasets/ORG/NAME@REVISION/...``): repo info at a revision, the
``tree`` listing (recursive or not, paginated by a ``Link`` header), ``paths-info``, and
``resolve`` (GET and HEAD, honouring ``Range``). A test seeds files at any revision (a branch or a
tag: here they are the same thing) with :meth:`HubStub.add_files`.

Auth: a wrong token is refused with 401 everywhere (``Invalid credentials``). A request with no
token at all may only read a public repository, as on the Hub; reading a private one without a
token is a 401 that ``huggingface_hub`` reports as ``RepositoryNotFoundError``.
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
from urllib.parse import parse_qs, quote, unquote, urlsplit

import yaml

LFS_SUFFIXES = (".parquet", ".bin", ".idx", ".arrow", ".npy")
#: A repository id on the Hub is always ``namespace/name``; a revision is one (quoted) segment.
_REPO = r"([^/]+/[^/]+)"
_REV = r"([^/]+)"


@dataclass
class Repo:
    private: bool
    files: dict[str, bytes] = field(default_factory=dict)  # the files at ``main``
    lfs_paths: set[str] = field(default_factory=set)
    commits: list[dict[str, Any]] = field(default_factory=list)
    #: the files at every other revision (branch or tag), by name
    branches: dict[str, dict[str, bytes]] = field(default_factory=dict)
    #: the commit sha each revision points at
    heads: dict[str, str] = field(default_factory=dict)

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        """(revision name, files) for a branch, a tag or the commit sha one of them points at."""
        if revision == "main":
            return "main", self.files
        if revision in self.branches:
            return revision, self.branches[revision]
        for name, sha in self.heads.items():
            if sha == revision:
                return self.at(name)
        return None

    def sha(self, revision: str) -> str:
        return self.heads.get(revision) or "0" * 40


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    """An error status (404 unless told) with the ``X-Error-Code`` huggingface_hub maps to its
    error classes (RepoNotFound, RevisionNotFound, EntryNotFound)."""

    def __init__(self, code: str, message: str, status: int = 404):
        super().__init__(message)
        self.code = code
        self.status = status


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubStub:
    def __init__(self, token: str = "hf_test_token", page_size: int = 1000):
        self.token = token
        #: entries per ``tree`` page (the Hub's is 1000, 50 with ``expand``); small values make
        #: huggingface_hub follow the ``Link`` header
        self.page_size = page_size
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}
        self.lfs_puts = 0
        self.requests: list[tuple[str, str]] = []
        #: (path, Range header) of every ranged ``resolve`` request
        self.range_requests: list[tuple[str, str]] = []
        #: ``tree`` pages asked for by the ``cursor`` of a ``Link`` header
        self.next_pages = 0
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

            def do_HEAD(self) -> None:
                stub._handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HubStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- seeding, for tests that read ------------------------------------------------------------
    def add_files(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        revision: str = "main",
        private: bool = False,
    ) -> str:
        """Put ``files`` (path in repo -> bytes) into repository ``repo_id`` (served as a dataset
        and as a model) at ``revision`` (a branch or a tag; created from nothing when new),
        without the commit protocol. The repository is
        created when missing, ``private`` or not; an existing one keeps its visibility. Returns the
        commit sha the revision now points at."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(private=private))
            tree = repo.files if revision == "main" else repo.branches.setdefault(revision, {})
            tree.update(files)
            repo.lfs_paths |= {p for p, data in files.items() if self._is_lfs(p, len(data))}
            listing = sorted((p, git_blob_sha1(d)) for p, d in tree.items())
            sha = hashlib.sha1(json.dumps([revision, listing]).encode()).hexdigest()
            repo.heads[revision] = sha
        return sha

    @staticmethod
    def _is_lfs(path: str, size: int) -> bool:
        return path.endswith(LFS_SUFFIXES) or size > 10_000_000

    # -- request handling --------------------------------------------------------------------
    def _handle(self, h: BaseHTTPRequestHandler, method: str) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        split = urlsplit(h.path)
        path, query = split.path, parse_qs(split.query)
        with self.lock:
            self.requests.append((method, path))
        # LFS upload hrefs are pre-signed (as S3's are): the path is signed, no token is sent
        m = re.fullmatch(r"/lfs/([0-9a-f]{32})/([0-9a-f]{64})", path)
        presigned = method == "PUT" and m is not None and m.group(1) == self._sign(m.group(2))
        auth = h.headers.get("authorization")
        authed = auth == f"Bearer {self.token}"
        try:
            # reads may come without a token (public repositories); a wrong token never passes
            if auth is None or authed:
                reply = self._read(h, method, path, query, body, authed)
                if reply is not None:
                    return self._send_reply(h, method, reply)
            if not presigned and not authed:
                return self._send(h, 401, {"error": "Invalid credentials in Authorization header"})
            status, payload = self._route(method, path, body)
        except HubError as e:
            status, payload = e.status, {"error": str(e), "code": e.code}
        except KeyError as e:
            status, payload = 404, {"error": f"not found: {e}"}
        self._send(h, status, payload)

    def _sign(self, oid: str) -> str:
        return hashlib.sha256(f"{self.token}/{oid}".encode()).hexdigest()[:32]

    def _send(self, h: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        headers = {"Content-Type": "application/json"}
        if status >= 400:
            headers["X-Error-Message"] = str(payload.get("error", ""))
            if payload.get("code"):
                headers["X-Error-Code"] = payload["code"]
        self._send_reply(h, "GET", Reply(status, json.dumps(payload).encode(), headers))

    def _send_reply(self, h: BaseHTTPRequestHandler, method: str, reply: Reply) -> None:
        h.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers}
        headers.setdefault("Content-Length", str(len(reply.body)))
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        if method != "HEAD":
            h.wfile.write(reply.body)

    # -- reading -------------------------------------------------------------------------------
    def _read(
        self,
        h: BaseHTTPRequestHandler,
        method: str,
        path: str,
        query: dict[str, list[str]],
        body: bytes,
        authed: bool,
    ) -> Reply | None:
        """The read routes (None for any other request)."""
        if method == "GET" and (
            m := re.fullmatch(rf"/api/(?:datasets|models)/{_REPO}(?:/revision/{_REV})?", path)
        ):
            repo_id, rev = m.group(1), unquote(m.group(2) or "main")
            repo, name, files = self._readable(repo_id, rev, authed)
            return _json(
                {
                    "id": repo_id,
                    "sha": repo.sha(name),
                    "private": repo.private,
                    "disabled": False,
                    "gated": False,
                    "tags": [],
                    "siblings": [{"rfilename": p} for p in sorted(files)],
                }
            )
        if method == "GET" and (
            m := re.fullmatch(rf"/api/(?:datasets|models)/{_REPO}/tree/{_REV}(?:/(.*))?", path)
        ):
            repo_id, rev = m.group(1), unquote(m.group(2))
            repo, name, files = self._readable(repo_id, rev, authed)
            return self._tree(repo, name, files, path, query)
        if method == "POST" and (
            m := re.fullmatch(rf"/api/datasets/{_REPO}/paths-info/{_REV}", path)
        ):
            repo_id, rev = m.group(1), unquote(m.group(2))
            repo, name, files = self._readable(repo_id, rev, authed)
            if h.headers.get("Content-Type", "").startswith("application/json"):
                req = json.loads(body)
                paths, expand = req.get("paths", []), bool(req.get("expand"))
            else:
                form = parse_qs(body.decode())
                paths = form.get("paths", [])
                expand = form.get("expand", ["false"])[0].lower() == "true"
            dirs = _dirs(files)
            out = []
            for p in paths:
                p = p.strip("/")
                if p in files:
                    out.append(self._file_entry(repo, name, files, p, expand))
                elif p in dirs:
                    out.append(self._dir_entry(repo, name, files, p, expand))
            return _json(out)
        if method in ("GET", "HEAD") and (  # a dataset's file, or a model's (no prefix)
            m := re.fullmatch(rf"/(?:datasets/)?{_REPO}/resolve/{_REV}/(.+)", path)
        ):
            repo_id, rev, file = m.group(1), unquote(m.group(2)), unquote(m.group(3))
            repo, name, files = self._readable(repo_id, rev, authed)
            if file not in files:
                raise HubError("EntryNotFound", f"{file} does not exist at {rev}")
            rng = h.headers.get("Range")
            if rng:
                with self.lock:
                    self.range_requests.append((file, rng))
            return self._resolve(repo, name, file, files[file], rng)
        return None

    def _readable(
        self, repo_id: str, revision: str, authed: bool
    ) -> tuple[Repo, str, dict[str, bytes]]:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authed):
            # the Hub says the same for a missing repository and one the caller may not see: a 401
            # without a token, a 404 with one
            raise HubError("RepoNotFound", "Repository not found", 404 if authed else 401)
        found = repo.at(revision)
        if found is None:
            raise HubError("RevisionNotFound", f"Invalid rev id: {revision}")
        return repo, found[0], found[1]

    def _file_entry(
        self, repo: Repo, revision: str, files: dict[str, bytes], path: str, expand: bool
    ) -> dict[str, Any]:
        data = files[path]
        entry: dict[str, Any] = {
            "type": "file",
            "oid": git_blob_sha1(data),
            "size": len(data),
            "path": path,
        }
        if path in repo.lfs_paths:
            entry["lfs"] = {
                "oid": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "pointerSize": 134,
            }
        if expand:
            entry["lastCommit"] = self._last_commit(repo, revision)
        return entry

    def _dir_entry(
        self, repo: Repo, revision: str, files: dict[str, bytes], path: str, expand: bool
    ) -> dict[str, Any]:
        inside = sorted((p, git_blob_sha1(d)) for p, d in files.items() if p.startswith(path + "/"))
        entry: dict[str, Any] = {
            "type": "directory",
            "oid": hashlib.sha1(json.dumps(inside).encode()).hexdigest(),
            "size": 0,
            "path": path,
        }
        if expand:
            entry["lastCommit"] = self._last_commit(repo, revision)
        return entry

    @staticmethod
    def _last_commit(repo: Repo, revision: str) -> dict[str, str]:
        return {
            "id": repo.sha(revision),
            "title": "stub commit",
            "date": "2024-01-01T00:00:00.000Z",
        }

    def _tree(
        self,
        repo: Repo,
        revision: str,
        files: dict[str, bytes],
        raw_path: str,
        query: dict[str, list[str]],
    ) -> Reply:
        m = re.fullmatch(rf"/api/(?:datasets|models)/{_REPO}/tree/{_REV}(?:/(.*))?", raw_path)
        assert m is not None
        folder = unquote(m.group(3) or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        expand = query.get("expand", ["false"])[0].lower() == "true"
        dirs = _dirs(files)
        if folder and folder not in dirs:
            raise HubError("EntryNotFound", f"{folder} is not a folder at {revision}")
        prefix = folder + "/" if folder else ""
        below = [p for p in sorted(set(files) | dirs) if p.startswith(prefix) and p != folder]
        if not recursive:
            below = [p for p in below if "/" not in p[len(prefix) :]]
        # the Hub lists folders before files
        below.sort(key=lambda p: (p not in dirs, p))
        size = max(1, self.page_size if not expand else min(self.page_size, 50))
        start = int(query.get("cursor", ["0"])[0])
        if start:
            with self.lock:
                self.next_pages += 1
        page = below[start : start + size]
        entries = [
            self._dir_entry(repo, revision, files, p, expand)
            if p in dirs
            else self._file_entry(repo, revision, files, p, expand)
            for p in page
        ]
        headers = {}
        if start + size < len(below):
            params = f"recursive={str(recursive).lower()}&expand={str(expand).lower()}"
            headers["Link"] = f'<{self.url}{raw_path}?{params}&cursor={start + size}>; rel="next"'
        return Reply(
            200, json.dumps(entries).encode(), {"Content-Type": "application/json", **headers}
        )

    def _resolve(self, repo: Repo, revision: str, path: str, data: bytes, rng: str | None) -> Reply:
        lfs = path in repo.lfs_paths
        etag = hashlib.sha256(data).hexdigest() if lfs else git_blob_sha1(data)
        headers = {
            "Content-Type": "application/octet-stream",
            "Accept-Ranges": "bytes",
            "ETag": f'"{etag}"',
            "X-Repo-Commit": repo.sha(revision),
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(data))
        if rng is None:
            return Reply(200, data, headers)
        m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
        total = len(data)
        if m is None or not (m.group(1) or m.group(2)):
            return Reply(416, b"", {**headers, "Content-Range": f"bytes */{total}"})
        if m.group(1):
            first = int(m.group(1))
            last = min(int(m.group(2)), total - 1) if m.group(2) else total - 1
        else:  # a suffix: the last N bytes
            first, last = max(0, total - int(m.group(2))), total - 1
        if first >= total or last < first:
            return Reply(416, b"", {**headers, "Content-Range": f"bytes */{total}"})
        headers["Content-Range"] = f"bytes {first}-{last}/{total}"
        return Reply(206, data[first : last + 1], headers)

    # -- writing -------------------------------------------------------------------------------
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
        if m := re.fullmatch(rf"/api/datasets/{_REPO}/preupload/{_REV}", path):
            found = self.repos[m.group(1)].at(unquote(m.group(2)))
            current = found[1] if found else {}
            files = []
            for f in json.loads(body)["files"]:
                lfs = self._is_lfs(f["path"], f["size"])
                old = current.get(f["path"])
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
        if m := re.fullmatch(rf"/api/datasets/{_REPO}/commit/{_REV}", path):
            return self._commit(m.group(1), unquote(m.group(2)), body)
        return 404, {"error": f"no route for {method} {path}"}

    def _upload_href(self, oid: str) -> str:
        return f"{self.url}/lfs/{self._sign(oid)}/{oid}"

    def _commit(self, repo_id: str, revision: str, body: bytes) -> tuple[int, Any]:
        repo = self.repos[repo_id]
        found = repo.at(revision)
        if found is None:  # this stand-in creates no branches through the API
            raise HubError("RevisionNotFound", f"Invalid rev id: {revision}")
        name, tree = found
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
            tree.update(staged)
            repo.lfs_paths |= lfs_paths
            oid = hashlib.sha1(json.dumps([header, sorted(staged)]).encode()).hexdigest()
            repo.commits.append(
                {
                    "oid": oid,
                    "summary": header["summary"],
                    "paths": sorted(staged),
                    "revision": name,
                }
            )
            repo.heads[name] = oid
        return 200, {
            "commitUrl": f"{self.url}/datasets/{repo_id}/commit/{oid}",
            "commitOid": oid,
            "success": True,
        }


def _json(payload: Any) -> Reply:
    return Reply(200, json.dumps(payload).encode(), {"Content-Type": "application/json"})


def _dirs(files: dict[str, bytes]) -> set[str]:
    """Every folder that holds a file, at any depth (the repository root excluded)."""
    out: set[str] = set()
    for p in files:
        parts = p.split("/")[:-1]
        out |= {"/".join(parts[: i + 1]) for i in range(len(parts))}
    return out
