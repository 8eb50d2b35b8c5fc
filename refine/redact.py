"""What ``refine push`` publishes must not tell where and how the run was made: ``Redactor``
rewrites the strings of report.json and the tokens' manifest.json, and ``redact_parquet`` the
``source`` column of Parquet files, into copies bound for the Hub (the run's files stay as is).

- A local absolute path becomes relative to the run's output folder or to the common folder of
  its local inputs (that folder itself: its name); any other one becomes its file name. So does a
  ``file://`` URL. A folder that holds the home directory is never such a root.
- A remote URL (``https://``, ``s3://``, ``hf://``) is a public identifier and stays, less a
  ``user:password@`` and the query parameters that carry credentials (``X-Amz-Signature``,
  ``token``, ``sig`` ...).
- A Dask address (``tcp://``, ``tls://``, ...) and the run's scheduler address, with or without
  its scheme, become ``<redacted>``; the report's ``cluster.scheduler`` and
  ``config.cluster.address`` go.
- A config string that held ``${VAR}`` goes back to what was written (report.json's
  ``config_env``; less the query parameters that carry credentials), so no value taken from
  the environment is published. Where such a string is a remote URL, the part the environment
  gave (up to the end of its last variable) is put back as written wherever it appears (the
  inputs' URLs, ``source``), e.g. ``${MIRROR}/crawl/CC-1.warc.gz#12``: a mirror or bucket
  named only in the environment stays there.
"""

from __future__ import annotations

import copy
import os
import posixpath
import re
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refine.pipeline.config import _ENV  # a variable as config strings are expanded

REDACTED = "<redacted>"
DASK_SCHEMES = ("tcp", "tls", "ucx", "inproc")
#: Query parameters that carry credentials: presigned S3 / GCS URLs, Azure SAS, API tokens.
_SECRET_PARAM = re.compile(
    r"(?i)sig|key|auth|authorization"
    r"|.*(token|secret|passw(or)?d|signature|credential|api[-_]?key|access[-_]?key|session).*"
)
_URL = r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+"
#: An absolute path inside a text: a ``/`` that does not continue a word, a relative path, a
#: URL or a ``${VAR}``; it ends at a space, a quote or punctuation that closes it.
_PATH = r"(?<![\w.~/\\:$}-])/[^\s'\"<>`,;:(){}|]+"
_TOKEN = re.compile(f"(?P<url>{_URL})|(?P<path>{_PATH})")
_REMOTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.")
#: Parquet's codec names as pyarrow's writer spells them, where they differ
_CODECS = {"UNCOMPRESSED": "none"}


@dataclass
class Redactor:
    """Rewrites the strings of one run's files for publishing (see the module's docstring)."""

    #: local folders whose insides are shown relative to them, the longest first
    roots: list[str]
    #: strings replaced wherever they appear (the scheduler's address)
    literals: list[str]
    #: (what the environment gave, as written) for remote URLs: the longest first
    env: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def for_run(cls, output_dir: Path, report: dict[str, Any]) -> Redactor:
        """The output folder (as given, resolved, and as the report names it) and the common
        folder of the local inputs (listed in ``inputs.urls`` and ``config.input``) as roots."""
        roots = {str(output_dir.absolute()), str(output_dir.resolve()), report.get("output")}
        local = [
            u.removeprefix("file://")
            for u in report.get("inputs", {}).get("urls", [])
            + report.get("config", {}).get("input", [])
            if u.startswith(("/", "file:///"))
        ]
        # a glob's folder: what comes before its first wildcard
        folders = [os.path.dirname(re.split(r"[*?\[]", u, maxsplit=1)[0]) for u in local]
        if folders:
            roots.add(os.path.commonpath(folders))
        usable = [r for r in roots if r and not Path.home().is_relative_to(r)]
        addresses = [
            report.get("cluster", {}).get("scheduler"),
            report.get("config", {}).get("cluster", {}).get("address"),
        ]
        literals = {x for a in addresses if a for x in (a, a.partition("://")[2]) if x}
        return cls(
            sorted(usable, key=len, reverse=True),
            sorted(literals, key=len, reverse=True),
            sorted(_env_prefixes(report), key=lambda p: len(p[0]), reverse=True),
        )

    def report(self, report: dict[str, Any]) -> dict[str, Any]:
        """A copy of report.json to publish: the config as written, no scheduler address."""
        out = copy.deepcopy(report)
        config = out.get("config", {})
        for entry in out.get("config_env", []):
            *parent, last = entry["at"]
            written = entry["written"]
            if isinstance(written, str):  # ${HOST}/x?token=...: no scheme for the URL rule
                written = entry["written"] = _without_secret_params(written)
            reduce(lambda node, key: node[key], parent, config)[last] = written
        out.get("cluster", {}).pop("scheduler", None)
        if isinstance(config.get("cluster"), dict):
            config["cluster"]["address"] = None
        return self.json(out)

    def json(self, value: Any) -> Any:
        """Every string (keys too) of a JSON value, through ``text``."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.text(k): self.json(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.json(v) for v in value]
        return value

    def text(self, text: str) -> str:
        """Every URL and absolute path in a text; an embedded path of one component (``/s``,
        ``/2``) is taken for prose and stays, a whole text that is one is rewritten."""
        for literal in self.literals:
            text = text.replace(literal, REDACTED)

        def token(m: re.Match) -> str:
            if m.group("url"):
                return self.location(m.group("url"))
            whole = m.start() == 0 and m.end() == len(text)
            path = m.group("path")
            return self.location(path) if whole or path.strip("/").count("/") else path

        return _TOKEN.sub(token, text)

    def location(self, value: str) -> str:
        """One path or URL (an input file, a ``source`` without its ``#position``)."""
        for given, written in self.env:
            if value.startswith(given):
                return written + _without_secret_params(value[len(given) :])
        if value.startswith("/"):
            return self._path(value)
        if "://" not in value:
            return value
        url = urlsplit(value)
        scheme = url.scheme.lower()
        if scheme in DASK_SCHEMES:
            return REDACTED
        if scheme == "file":
            return self._path(url.path) + (f"#{url.fragment}" if url.fragment else "")
        netloc = url.netloc.rpartition("@")[2]
        query = _public_query(url.query)
        if netloc == url.netloc and len(query) == len(url.query):
            return value
        return urlunsplit((url.scheme, netloc, url.path, query, url.fragment))

    def _path(self, path: str) -> str:
        for root in self.roots:
            if path.rstrip("/") == root:
                return posixpath.basename(root)
            if path.startswith(root + "/"):
                return path[len(root) + 1 :]
        return posixpath.basename(path.rstrip("/"))

    def column(self, values: pa.ChunkedArray) -> pa.Array:
        """``location#position`` strings (a ``source`` column), each distinct location
        rewritten once."""
        arr = values.combine_chunks()
        parts = pc.extract_regex(arr, r"^(?P<at>.*?)(?P<pos>#[^#]*)?$")
        at = pc.dictionary_encode(pc.struct_field(parts, "at"))
        public = pa.array([self.location(v) for v in at.dictionary.to_pylist()], pa.string())
        joined = pc.binary_join_element_wise(
            public.take(at.indices), pc.struct_field(parts, "pos"), ""
        )
        return pc.if_else(arr.is_valid(), joined, pa.scalar(None, pa.string())).cast(arr.type)


def _public_query(query: str) -> str:
    """A URL's query less the parameters that carry credentials."""
    params = [p for p in query.split("&") if p]
    return "&".join(p for p in params if not _SECRET_PARAM.fullmatch(p.partition("=")[0]))


def _without_secret_params(text: str) -> str:
    """A string (a URL or part of one) whose query, after its first ``?``, loses the
    parameters that carry credentials."""
    head, q, query = text.partition("?")
    query = _public_query(query) if q else ""
    return head + (f"?{query}" if query else "")


def _env_prefixes(report: dict[str, Any]) -> list[tuple[str, str]]:
    """For each config string that the environment made a remote URL: the start of the URL up
    to the end of the last variable's value, and that start as written (``https://m.example/x``
    and ``${MIRROR}``, or ``s3://bucket/run-7`` and ``s3://bucket/${RUN}``)."""
    out = []
    for entry in report.get("config_env", []):
        written = entry.get("written")
        try:
            given = reduce(lambda node, key: node[key], entry["at"], report.get("config", {}))
        except (KeyError, IndexError, TypeError):
            continue
        refs = list(_ENV.finditer(written)) if isinstance(written, str) else []
        if not refs or not isinstance(given, str):
            continue
        tail = written[refs[-1].end() :]
        if not given.endswith(tail):
            continue
        start = given[: len(given) - len(tail)]
        if _REMOTE.match(start) and not start.lower().startswith("file:"):
            out.append((start, written[: refs[-1].end()]))
    return out


def redact_parquet(src: Path, dst: Path, redactor: Redactor, column: str = "source") -> bool:
    """Write ``src`` to ``dst`` with ``column`` and the schema's key-value metadata through
    ``redactor``, keeping its row groups, compression and dictionary encoding. False (nothing
    written) when nothing in them changes."""
    pf = pq.ParquetFile(src)
    schema = pf.schema_arrow
    metadata = {
        k: redactor.text(v.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        for k, v in (schema.metadata or {}).items()
    }
    old = new = None
    if column in schema.names:
        old = pf.read(columns=[column])[column]
        new = redactor.column(old)
    if (old is None or new.equals(old.combine_chunks())) and metadata == (schema.metadata or {}):
        return False
    schema = schema.with_metadata(metadata or None)
    chunks = [pf.metadata.row_group(i) for i in range(pf.metadata.num_row_groups)]
    first = [chunks[0].column(i) for i in range(chunks[0].num_columns)] if chunks else []
    dst.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(
        dst,
        schema,
        compression={c.path_in_schema: _CODECS.get(c.compression, c.compression) for c in first}
        or "zstd",
        use_dictionary=[c.path_in_schema for c in first if "DICTIONARY" in str(c.encodings)],
    ) as writer:
        start = 0
        for i in range(pf.metadata.num_row_groups):
            table = pf.read_row_group(i)
            if new is not None:
                at = schema.get_field_index(column)
                table = table.set_column(at, schema.field(at), new.slice(start, table.num_rows))
            writer.write_table(table.replace_schema_metadata(metadata or None), table.num_rows)
            start += table.num_rows
    return True
