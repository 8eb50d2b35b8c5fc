"""A remote input that cannot be read says why, naming the real error: fsspec's http filesystem
reports a DNS failure, a refused connection and a 404 alike as FileNotFoundError(url)."""

from __future__ import annotations

import pytest
from support import _free_port, http_server, run_cli

from refine.errors import InputError
from refine.pipeline.inputs import crawl_paths


def test_crawl_listing_dns_failure_is_named(tmp_path):
    with pytest.raises(InputError, match=r"DNS: cannot resolve host no-such-host\.invalid"):
        crawl_paths("CC-MAIN-2024-10", "http://no-such-host.invalid/", None, timeout=10)


def test_crawl_listing_refused_connection_is_named():
    base = f"http://127.0.0.1:{_free_port()}/"
    with pytest.raises(InputError, match="connection refused"):
        crawl_paths("CC-MAIN-2024-10", base, None, timeout=10)


def test_crawl_listing_404_is_named(tmp_path):
    with http_server(tmp_path) as base:
        with pytest.raises(InputError, match="HTTP 404"):
            crawl_paths("CC-MAIN-2024-10", base, None, timeout=10)


def test_cli_run_offline_crawl_id_says_dns(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "input: CC-MAIN-2024-10\noutput: out\nstages:\n"
        "  - read: {commoncrawl_base_url: 'http://no-such-host.invalid/'}\n"
        "  - extract: {engine: resiliparse}\n"
    )
    r = run_cli("run", str(cfg), "--no-progress", cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and "DNS: cannot resolve host" in r.stderr, r.stderr
