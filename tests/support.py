"""Shared test helpers: where the real crawl samples are, running the CLI, a local HTTP server."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data() -> Path | None:
    """``$REFINE_TEST_DATA`` or ``../shared/data`` beside the repo; None when absent."""
    env = os.environ.get("REFINE_TEST_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if (path / "warc").is_dir() else None


def require_shared_data() -> Path:
    path = shared_data()
    if path is None:
        pytest.skip(
            "real crawl samples not found: set REFINE_TEST_DATA or put shared/data beside the repo"
        )
    return path


def extract_sample_pages() -> list[str | None]:
    """trafilatura.extract with refine's default options over every HTML page of the sample
    crawl, in this process (with whatever is patched into trafilatura now): one text or None per
    page. Skips without the samples; asserts the corpus is the one the tests expect."""
    data = require_shared_data()
    sys.path.insert(0, str(REPO / "scripts"))
    import trafilatura
    from bench_vs_datatrove import html_pages
    from trafilatura.deduplication import LRU_TEST

    from refine.extract.engines import ExtractConfig

    options = ExtractConfig().trafilatura_options()
    LRU_TEST.clear()
    pages = list(html_pages(sorted((data / "warc").glob("*.warc.gz"))))
    assert len(pages) >= 600
    texts = [trafilatura.extract(html, url=url, **options) for html, url in pages]
    assert sum(t is not None for t in texts) >= 500
    return texts


def run_cli(*args: str, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    return subprocess.run(
        [sys.executable, "-m", "refine.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd or REPO,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def write_config(path: Path, inputs: list[str], output: Path, stages: str, extra: str = "") -> Path:
    quoted = ", ".join(json.dumps(str(i)) for i in inputs)
    path.write_text(
        f"input: [{quoted}]\noutput: {json.dumps(str(output))}\n{extra}stages:\n{stages}"
    )
    return path


FAST_STAGES = """  - read: {slice_mb: 1}
  - extract: {engine: resiliparse, timeout: 20}
"""


def report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def stage(rep: dict, name: str) -> dict:
    (entry,) = [s for s in rep["stages"] if s["name"] == name]
    return entry


def documents(out: Path, folder: str = "01_extract"):
    """All documents of a checkpoint as one table, sorted by id."""
    table = pq.read_table(out / "documents" / folder)
    return table.sort_by("id")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support, as data.commoncrawl.org and S3 offer."""

    def log_message(self, *args):  # keep test output clean
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        if not rng or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
        start = int(start_s)
        fail_from = self.server.control.get("fail_from")
        if fail_from is not None and start >= fail_from:
            self.send_error(503, "Slow Down")  # what S3 and data.commoncrawl.org say under load
            return None
        end = min(int(end_s) if end_s else size - 1, size - 1)
        if start >= size:
            self.send_error(416)
            return None
        f = open(path, "rb")  # noqa: SIM115 - closed by the base class
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._remaining = end - start + 1
        return _Limited(f, end - start + 1)


class _Limited:
    def __init__(self, f, n: int):
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        if self.n <= 0:
            return b""
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)
        self.n -= len(data)
        return data

    def close(self) -> None:
        self.f.close()


@contextlib.contextmanager
def http_server(directory: Path, control: dict | None = None) -> Iterator[str]:
    """Serve ``directory`` on 127.0.0.1 (a free port); yields the base URL.

    ``control["fail_from"]`` (may change while serving): answer 503 to every range request that
    starts at or after this offset.
    """
    handler = functools.partial(_RangeHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.control = control if control is not None else {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask() -> str:
    bindir = Path(sys.executable).parent
    return str(bindir / "dask") if (bindir / "dask").exists() else "dask"


@contextlib.contextmanager
def dask_cluster(n_workers: int, cwd: Path | None = None, worker_args: list[list[str]] = ()):
    """A real `dask scheduler` and `dask worker` processes on 127.0.0.1; the workers run in
    ``cwd`` (default: the repository). ``worker_args[i]``: more arguments for worker ``i``
    (e.g. ``["--resources", "GPU=1"]``)."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "start_new_session": True}
    procs = [
        subprocess.Popen(
            [_dask(), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            **quiet,
        )
    ]
    workers = []
    try:
        time.sleep(2)
        for i in range(n_workers):
            w = subprocess.Popen(
                [
                    _dask(),
                    "worker",
                    address,
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--host",
                    "127.0.0.1",
                    *(worker_args[i] if i < len(worker_args) else []),
                ],
                cwd=cwd or REPO,
                **quiet,
            )
            procs.append(w)
            workers.append(w)
        from distributed import Client

        with Client(address, timeout="30s") as c:
            c.wait_for_workers(n_workers, timeout=60)
        yield address, workers
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=10)
