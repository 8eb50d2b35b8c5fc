"""Resolve ``--input`` values into a sorted, de-duplicated list of files with their sizes.

Accepted: local files, directories and globs; ``https://``, ``s3://`` and ``hf://datasets/...``
URLs (globs and folders too, where the filesystem can list); a Common Crawl crawl id such as
``CC-MAIN-2024-10``, expanded through that crawl's ``warc.paths.gz``. Everything is resolved on
the driver before any work starts, so a typo (a missing local file, a URL the server says does
not exist) fails in a second, not after hours. A remote input that cannot be reached in time (a
silent server, a refused connection, a 5xx) is not a typo: it comes back with ``error`` set, the
run reads the others and reports it, and a re-run tries it again (when no input at all can be
reached, that is an error before work).
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
#: Text inputs (documents already extracted), as datatrove, dolma and the Hub's datasets write them.
JSONL_SUFFIXES = (
    ".jsonl",
    ".jsonl.gz",
    ".jsonl.zst",
    ".jsonl.zstd",
    ".json.gz",
    ".json.zst",
    ".ndjson",
    ".ndjson.gz",
)
PARQUET_SUFFIXES = (".parquet",)
INPUT_SUFFIXES = WARC_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES


def input_format(url: str) -> str | None:
    """``warc``, ``jsonl`` or ``parquet`` by the file name's suffix; None when it says nothing."""
    name = url.split("?", 1)[0].lower()
    if name.endswith(WARC_SUFFIXES):
        return "warc"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class InputFile:
    url: str  # local absolute path or a URL fsspec can open
    size: int | None  # bytes; None when the server does not say
    error: str | None = None  # why a remote input could not be reached at planning; not read


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
        raise InputError(f"crawl {crawl_id}: cannot read {listing}: {describe_error(e)}") from None
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise InputError(f"crawl {crawl_id}: {listing} is not a gzip list of paths: {e}") from None
    paths = [line.strip() for line in io.StringIO(text) if line.strip()]
    if max_files is not None:
        paths = paths[:max_files]
    return [base + p for p in paths]


def root_cause(e: BaseException) -> BaseException:
    """The innermost exception of ``e``'s chain: fsspec's http filesystem turns a DNS failure,
    a refused connection or a 404 alike into ``FileNotFoundError(url)``, the cause behind it."""
    seen = {id(e)}
    while True:
        nxt = e.__cause__ or e.__context__
        if nxt is None or id(nxt) in seen:
            return e
        seen.add(id(nxt))
        e = nxt


def describe_error(e: BaseException) -> str:
    """One line saying why a remote read failed, naming the real error: a name that does not
    resolve (DNS), a refused connection, a time-out, an HTTP status, or the exception itself."""
    import socket

    chain = []
    cur: BaseException | None = e
    while cur is not None and len(chain) < 20:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if isinstance(err, socket.gaierror) or type(err).__name__ == "ClientConnectorDNSError":
            host = getattr(err, "host", None)  # aiohttp's connector errors carry the host
            where = f" {host}" if isinstance(host, str) and host else ""
            return f"DNS: cannot resolve host{where} ({root_cause(e)})"
    for err in chain:
        status = getattr(err, "status", None)
        if isinstance(status, int) and status >= 400:
            message = getattr(err, "message", "") or ""
            return f"HTTP {status} {message}".strip()
        if isinstance(err, ConnectionRefusedError):
            return f"connection refused ({err})"
        if isinstance(err, TimeoutError) or type(err).__name__ in ("ServerTimeoutError",):
            return f"timed out ({type(err).__name__}: {err})"
    inner = root_cause(e)
    if isinstance(e, FileNotFoundError) and inner is e:
        return "not found (HTTP 404)" if "://" in str(e) else f"not found: {e}"
    return f"{type(inner).__name__}: {inner}" if str(inner) else type(inner).__name__


def _expand_one(pattern: str) -> list[str]:
    if _is_url(pattern):
        if pattern.startswith("http"):
            return [pattern]
        fs, _ = fsspec.core.url_to_fs(pattern)
        protocol, rest = pattern.split("://", 1)
        is_glob = bool(_GLOB_CHARS.search(rest))
        # hf:// file or folder: resolve its repository and revision now, so that a typo, a private
        # repository without HF_TOKEN or a refused token is the user's mistake (InputError), not an
        # input that "cannot be reached" later (HfFileSystem.info hides why behind a
        # FileNotFoundError); when the Hub itself cannot be reached, _probe says so as for any URL
        checking = protocol == "hf" and not is_glob
        try:
            if checking:
                fs.resolve_path(pattern)
                checking = False
            if is_glob:
                # HfFileSystem names come back as "datasets/ORG/NAME@REVISION/path", the revision
                # spelled as in the pattern (@v1, @refs/convert/parquet, @my%2Fbranch), so each URL
                # reads the revision asked for
                return sorted(f"{protocol}://{p}" for p in fs.glob(pattern))
            if input_format(pattern) is None and fs.isdir(pattern):
                # a folder of a bucket or of a dataset repository: its files of known formats
                found = fs.find(pattern)
                return sorted(f"{protocol}://{p}" for p in found if input_format(p) is not None)
        except Exception as e:  # noqa: BLE001 - sorted below: the user's mistake or re-raised
            status = getattr(getattr(e, "response", None), "status_code", None)
            refused = isinstance(status, int) and 400 <= status < 500
            if isinstance(e, FileNotFoundError | PermissionError) or (
                refused and status not in _TRANSIENT_STATUS
            ):
                lines = str(e).strip().splitlines()
                why = getattr(e, "server_message", None) or (
                    lines[0] if lines else type(e).__name__
                )
                if why.startswith(rest):  # HfFileSystem: "datasets/O/N@R/x (revision not found)"
                    why = why[len(rest) :].strip(" ()") or "not found"
                if refused:
                    why = f"HTTP {status} {why}"
                if protocol == "hf" and "repository not found" in why.lower():
                    why += " (or private or gated: set HF_TOKEN)"
                raise InputError(f"input {pattern!r}: {why}") from None
            if not checking:
                raise
        return [pattern]
    path = os.path.expanduser(pattern)
    if os.path.isdir(path):
        found = sorted(
            os.path.join(root, f)
            for root, _, files in os.walk(path)
            for f in files
            if input_format(f) is not None
        )
        return [os.path.abspath(f) for f in found]
    if _GLOB_CHARS.search(path):
        return sorted(os.path.abspath(p) for p in glob.glob(path, recursive=True))
    if not os.path.exists(path):
        raise InputError(f"input {pattern!r}: no such file or directory")
    return [os.path.abspath(path)]


#: HTTP statuses that say "try again later" rather than "this URL is wrong".
_TRANSIENT_STATUS = {408, 425, 429}


def _probe(url: str, timeout: float = HTTP_TIMEOUT) -> InputFile:
    """Size one input. Not found or forbidden is the user's mistake (``InputError``); any other
    failure of a remote input (a timeout, a refused connection, a 5xx: the transport's exception
    types vary, aiohttp, botocore, asyncio) makes an unreachable input, with the reason."""
    if not _is_url(url):
        return InputFile(url, os.path.getsize(url))
    try:
        fs, _ = fsspec.core.url_to_fs(url, **storage_options(url, timeout))
        info = fs.info(url)
    except Exception as e:  # noqa: BLE001 - see the docstring
        # fsspec's http turns every failure into FileNotFoundError; the cause says which
        cause = e.__cause__ if isinstance(e, FileNotFoundError) and e.__cause__ else e
        status = getattr(cause, "status", None)
        if isinstance(status, int) and 400 <= status < 500 and status not in _TRANSIENT_STATUS:
            message = f"HTTP {status} {getattr(cause, 'message', '')}".strip()
            raise InputError(f"input {url!r}: {message}") from None
        if isinstance(cause, FileNotFoundError):
            raise InputError(f"input {url!r}: not found") from None
        if isinstance(cause, PermissionError):
            raise InputError(f"input {url!r}: access denied: {cause}") from None
        what = describe_error(e)
        reason = "timed out" if isinstance(cause, TimeoutError) else "cannot be reached"
        return InputFile(url, None, error=f"{reason} ({what})")
    size = info.get("size")
    return InputFile(url, int(size) if size is not None else None)


def expand_inputs(
    patterns: list[str],
    *,
    max_files: int | None = None,
    commoncrawl_base_url: str = COMMONCRAWL_BASE_URL,
    timeout: float = HTTP_TIMEOUT,
) -> list[InputFile]:
    """Resolve ``patterns`` into files; the same file named twice is read once. Remote inputs
    that cannot be reached within ``timeout`` seconds are returned with ``error`` set."""
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
        files = list(pool.map(lambda u: _probe(u, timeout), unique))
    failed = [f for f in files if f.error]
    if len(failed) == len(files):  # nothing to run: a clear error before work
        more = f" (and {len(failed) - 1} more input(s))" if len(failed) > 1 else ""
        raise InputError(f"input {failed[0].url!r}: {failed[0].error}{more}")
    return files
