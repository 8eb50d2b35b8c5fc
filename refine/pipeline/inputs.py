"""Resolve ``--input`` values into a sorted, de-duplicated list of files with their sizes.

Accepted: local files, directories and globs; ``https://`` and ``s3://`` URLs (globs too, where
the filesystem can list); a Common Crawl crawl id such as ``CC-MAIN-2024-10``, expanded through
that crawl's ``warc.paths.gz``. Everything is resolved on the driver before any work starts, so a
typo fails in a second, not after hours.
"""

from __future__ import annotations

import glob
import gzip
import io
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec

from refine.errors import InputError

CRAWL_ID = re.compile(r"^CC-MAIN-\d{4}-\d{2}$")
COMMONCRAWL_BASE_URL = "https://data.commoncrawl.org/"
WARC_SUFFIXES = (".warc", ".warc.gz", ".arc.gz")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    url: str  # local absolute path or a URL fsspec can open
    size: int | None  # bytes; None when the server does not say


#: Seconds to wait for an HTTP(S) connection or for the next bytes of a response. A server that
#: never answers fails the read (then the part is retried) instead of stalling a worker forever.
HTTP_TIMEOUT = 60.0


def storage_options(url: str, timeout: float = HTTP_TIMEOUT) -> dict:
    """fsspec options for ``url``: time limits for http(s); nothing for other protocols."""
    if url.startswith(("http://", "https://")):
        import aiohttp

        return {
            "client_kwargs": {
                "timeout": aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout, sock_read=timeout
                )
            }
        }
    return {}


def open_url(url: str, timeout: float = HTTP_TIMEOUT):
    """An fsspec OpenFile for ``url`` with the time limits above."""
    return fsspec.open(url, "rb", **storage_options(url, timeout))


def _is_url(s: str) -> bool:
    return "://" in s


def crawl_paths(
    crawl_id: str, base_url: str, max_files: int | None, timeout: float = HTTP_TIMEOUT
) -> list[str]:
    """The WARC URLs of a crawl, from ``crawl-data/<id>/warc.paths.gz``."""
    base = base_url if base_url.endswith("/") else base_url + "/"
    listing = f"{base}crawl-data/{crawl_id}/warc.paths.gz"
    try:
        with open_url(listing, timeout) as f:
            raw = f.read()
    except (OSError, ValueError, TimeoutError) as e:
        raise InputError(f"crawl {crawl_id}: cannot read {listing}: {e!r}") from None
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"crawl {crawl_id}: {listing} is not a gzip list of paths: {e}") from None
    paths = [line.strip() for line in io.StringIO(text) if line.strip()]
    if max_files is not None:
        paths = paths[:max_files]
    return [base + p for p in paths]


def _expand_one(pattern: str) -> list[str]:
    if _is_url(pattern):
        fs, _ = fsspec.core.url_to_fs(pattern)
        if _GLOB_CHARS.search(pattern.split("://", 1)[1]) and not pattern.startswith("http"):
            protocol = pattern.split("://", 1)[0]
            return sorted(f"{protocol}://{p}" for p in fs.glob(pattern))
        return [pattern]
    path = os.path.expanduser(pattern)
    if os.path.isdir(path):
        found = sorted(
            os.path.join(root, f)
            for root, _, files in os.walk(path)
            for f in files
            if f.endswith(WARC_SUFFIXES)
        )
        return [os.path.abspath(f) for f in found]
    if _GLOB_CHARS.search(path):
        return sorted(os.path.abspath(p) for p in glob.glob(path, recursive=True))
    if not os.path.exists(path):
        raise InputError(f"input {pattern!r}: no such file or directory")
    return [os.path.abspath(path)]


def _size(url: str, timeout: float = HTTP_TIMEOUT) -> int | None:
    if not _is_url(url):
        return os.path.getsize(url)
    try:
        fs, _ = fsspec.core.url_to_fs(url, **storage_options(url, timeout))
        info = fs.info(url)
    except FileNotFoundError:
        raise InputError(f"input {url!r}: not found") from None
    except (OSError, ValueError, TimeoutError) as e:
        raise InputError(f"input {url!r}: cannot be reached: {e!r}") from None
    size = info.get("size")
    return int(size) if size is not None else None


def expand_inputs(
    patterns: list[str],
    *,
    max_files: int | None = None,
    commoncrawl_base_url: str = COMMONCRAWL_BASE_URL,
    timeout: float = HTTP_TIMEOUT,
) -> list[InputFile]:
    """Resolve ``patterns`` into files; the same file named twice is read once."""
    if not patterns:
        raise InputError("no input given")
    urls: list[str] = []
    for pattern in patterns:
        if CRAWL_ID.match(pattern):
            found = crawl_paths(pattern, commoncrawl_base_url, max_files, timeout)
        else:
            found = _expand_one(pattern)
        if not found:
            raise InputError(f"input {pattern!r} matched no files")
        urls.extend(found)
    unique = list(dict.fromkeys(urls))
    if max_files is not None:
        unique = unique[:max_files]
    with ThreadPoolExecutor(max_workers=16) as pool:
        sizes = list(pool.map(lambda u: _size(u, timeout), unique))
    return [InputFile(u, s) for u, s in zip(unique, sizes, strict=True)]
