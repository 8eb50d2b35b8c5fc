"""URL filtering: adult-site block lists and banned words in the URL (RefinedWeb, FineWeb).

By default it uses the lists datatrove ships with its ``URLFilter`` (in ``datatrove/assets``): the
UT1 (Université Toulouse 1) adult domain and URL lists and three word lists. A document is dropped
when, in this order:

- ``domain_blocklist``: its host, or any parent domain of it, is listed (``a.b.example.com`` is
  looked up as ``a.b.example.com``, ``b.example.com``, ``example.com``, ``com``: a UT1 entry blocks
  the domain and all its subdomains);
- ``url_blocklist``: the URL without its scheme and ``www.``, or a prefix of it ending at a ``/``,
  is listed (UT1 URL entries carry no scheme);
- ``banned_word``: a word of the URL (split at non-alphanumerics, lower-cased) is a banned word;
- ``soft_banned_words``: at least ``soft_word_threshold`` distinct soft words are in the URL;
- ``banned_subword``: a banned sub-word occurs anywhere in the URL with non-alphanumerics removed
  (Aho-Corasick, one pass over the URL whatever the number of sub-words).

A host on the allow list (or a subdomain of one) is never dropped.

Signals: ``url_match`` (the first list rule the URL matched, ``allowed``, or null) and
``url_soft_words`` (distinct soft words in the URL); ``soft_word_threshold`` is applied to the
saved count, so re-tuning it does not re-score.

The 4.5 million listed domains are held per worker process as a sorted array of 64-bit hashes
(36 MB instead of ~500 MB for a Python set of strings), built once, lazily, and looked up for a
whole batch of candidate hosts with one ``numpy.searchsorted``.
"""

from __future__ import annotations

import importlib.util
import re
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refine.errors import ConfigError
from refine.pipeline.stage import FilterStage, StageParams

_UT1_ARCHIVE = "url_filterblacklistsv0_3_0.tar.gz"
_WORD_FILES = {
    "banned_words": "banned_words.txt",
    "banned_subwords": "banned_subwords.txt",
    "soft_banned_words": "soft_banned_words.txt",
}
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
#: scheme, userinfo, then the host (bracketed IPv6 or up to port / path / query / fragment).
_HOST_RE = r"^(?:[A-Za-z][A-Za-z0-9+.-]*://)?(?:[^/?#@]*@)?(?P<host>\[[^\]/?#]*\]|[^/?#:]*)"
_SCHEME_RE = r"^[A-Za-z][A-Za-z0-9+.-]*://"
_CHUNK = 8 << 20  # bytes of a domain list read at a time
_MATCH = "url_match"  # signal: the first list rule the URL matched, "allowed", or null
_HARD = ["domain_blocklist", "url_blocklist", "banned_word"]


class UrlFilterParams(StageParams):
    default_lists: bool = Field(
        default=True,
        description="use datatrove's UT1 adult domain/URL lists and its banned/soft word lists",
    )
    block_domain_files: list[str] = Field(
        default=[], description="extra domain block lists: one domain per line, # comments"
    )
    block_url_files: list[str] = Field(
        default=[], description="extra URL block lists: one URL per line (scheme optional)"
    )
    allow_domains: list[str] = Field(
        default=[], description="domains (and their subdomains) that are never dropped"
    )
    allow_domain_files: list[str] = Field(default=[], description="allow lists, one domain a line")
    banned_words: list[str] = Field(default=[], description="added to the default banned words")
    banned_subwords: list[str] = Field(default=[], description="added to the default sub-words")
    soft_banned_words: list[str] = Field(default=[], description="added to the default soft words")
    soft_word_threshold: int = Field(
        default=2, ge=1, description="drop when at least this many distinct soft words occur"
    )


@dataclass
class UrlLists:
    """Everything the filter looks up, built once per worker process."""

    domain_hashes: np.ndarray  # sorted int64 hashes of the blocked domains (bytes, lower-case;
    # Python's hash is salted per process, which is fine: built and used in the same process)
    urls: set[str]
    allow: set[str]
    banned_words: frozenset[str]
    soft_words: frozenset[str]
    subwords: object | None  # ahocorasick.Automaton, None when there are no sub-words

    def blocked_hosts(self, candidates: list[bytes]) -> np.ndarray:
        """Which of ``candidates`` (lower-case host names) are on the domain block list."""
        if not candidates or not len(self.domain_hashes):
            return np.zeros(len(candidates), dtype=bool)
        h = np.fromiter(map(hash, candidates), dtype=np.int64, count=len(candidates))
        pos = np.searchsorted(self.domain_hashes, h)
        pos[pos == len(self.domain_hashes)] = 0
        return self.domain_hashes[pos] == h


class UrlFilter(FilterStage):
    """Drops documents whose URL is on a block list or contains banned words."""

    name = "url_filter"
    path_params = ("block_domain_files", "block_url_files", "allow_domain_files")
    Params = UrlFilterParams
    thresholds = frozenset({"soft_word_threshold"})

    def check(self) -> None:
        p = self.params
        if importlib.util.find_spec("ahocorasick") is None:
            raise ConfigError("url_filter: the ahocorasick module (pyahocorasick) is not installed")
        if p.default_lists:
            assets = datatrove_assets()
            for name in [_UT1_ARCHIVE, *_WORD_FILES.values()]:
                if not (assets / name).is_file():
                    raise ConfigError(f"url_filter: default list not found: {assets / name}")
        for key in ("block_domain_files", "block_url_files", "allow_domain_files"):
            for path in getattr(p, key):
                try:
                    fs, _, paths = fsspec.get_fs_token_paths(path)
                    ok = fs.isfile(paths[0])
                except Exception:
                    ok = False
                if not ok:
                    raise ConfigError(f"url_filter.{key}: file not found: {path}")

    def score(self, table: pa.Table) -> dict[str, pa.Array]:
        lists = load_lists(self.params)
        n = table.num_rows
        urls = pc.fill_null(table["url"], "") if "url" in table.column_names else None
        if urls is None or n == 0:
            return {
                "url_soft_words": pa.array(np.zeros(n, np.int32)),
                _MATCH: pa.nulls(n, pa.string()),
            }
        lower = pc.utf8_lower(urls)
        hosts = pc.utf8_rtrim(pc.struct_field(pc.extract_regex(lower, _HOST_RE), "host"), ".")
        hosts_py = hosts.to_pylist()
        words = pc.split_pattern_regex(lower, "[^a-z0-9]+").to_pylist()
        squashed = pc.replace_substring_regex(lower, "[^a-z0-9]+", "").to_pylist()
        url_keys = _url_keys(lower).to_pylist()

        matches: list[str | None] = [None] * n
        soft_counts = np.zeros(n, dtype=np.int32)
        allowed = [bool(lists.allow) and _listed(h, lists.allow) for h in hosts_py]

        cands: list[bytes] = []
        owner: list[int] = []
        for i, host in enumerate(hosts_py):
            if host and not allowed[i]:
                for c in _host_suffixes(host):
                    cands.append(c.encode("utf-8", "surrogatepass"))
                    owner.append(i)
        hit = lists.blocked_hosts(cands)
        for i in np.asarray(owner, dtype=np.int64)[hit].tolist():
            matches[i] = "domain_blocklist"

        automaton = lists.subwords
        for i in range(n):
            w = set(words[i]) if words[i] else set()
            soft_counts[i] = len(w & lists.soft_words)
            if allowed[i]:
                matches[i] = "allowed"
            elif matches[i] is not None:
                continue
            elif lists.urls and any(k in lists.urls for k in _url_prefixes(url_keys[i])):
                matches[i] = "url_blocklist"
            elif w & lists.banned_words:
                matches[i] = "banned_word"
            elif automaton is not None and next(automaton.iter(squashed[i]), None) is not None:
                matches[i] = "banned_subword"
        return {
            "url_soft_words": pa.array(soft_counts, pa.int32()),
            _MATCH: pa.array(matches, pa.string()),
        }

    def decide(self, table: pa.Table) -> pa.Array:
        # The soft-word threshold is applied here, on the saved signal, in datatrove's order:
        # block lists and banned words, then soft words, then sub-words.
        match = table[_MATCH]
        hard = pc.is_in(match, value_set=pa.array(_HARD))
        soft = pc.greater_equal(table["url_soft_words"], self.params.soft_word_threshold)
        subword = pc.equal(match, "banned_subword")
        none = pa.scalar(None, pa.string())
        return pc.if_else(
            pc.fill_null(hard, False),
            match,
            pc.if_else(
                pc.and_(soft, pc.invert(pc.fill_null(pc.equal(match, "allowed"), False))),
                "soft_banned_words",
                pc.if_else(pc.fill_null(subword, False), "banned_subword", none),
            ),
        )

    def signal_names(self, table: pa.Table) -> list[str]:
        return ["url_soft_words", _MATCH]


def _host_suffixes(host: str) -> Iterator[str]:
    """``a.b.c`` -> ``a.b.c``, ``b.c``, ``c``; an IP address only as itself."""
    yield host
    if host[-1:].isdigit() or host.startswith("["):  # IPv4 (no TLD is numeric) or IPv6
        return
    pos = host.find(".")
    while pos != -1:
        yield host[pos + 1 :]
        pos = host.find(".", pos + 1)


def _listed(host: str | None, domains: set[str]) -> bool:
    return bool(host) and any(s in domains for s in _host_suffixes(host))


def _url_keys(lower_urls: pa.ChunkedArray | pa.Array) -> pa.Array:
    """URLs as UT1 lists them: no scheme, no ``www.``, no trailing ``/``."""
    keys = pc.replace_substring_regex(lower_urls, _SCHEME_RE, "", max_replacements=1)
    keys = pc.replace_substring_regex(keys, r"^www\.", "", max_replacements=1)
    return pc.utf8_rtrim(keys, "/")


def _url_key(url: str) -> str:
    key = re.sub(_SCHEME_RE, "", url.strip().lower(), count=1)
    return key.removeprefix("www.").rstrip("/")


def _url_prefixes(key: str) -> Iterator[str]:
    """The URL key and its prefixes that end before a ``/`` (a listed path blocks what is under
    it)."""
    yield key
    pos = key.find("/")
    while pos != -1:
        yield key[:pos]
        pos = key.find("/", pos + 1)


def datatrove_assets() -> Path:
    """datatrove's ``assets`` folder, found without importing datatrove."""
    spec = importlib.util.find_spec("datatrove")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "url_filter: default_lists needs the datatrove package (its UT1 lists); "
            "install datatrove or set default_lists: false"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "assets"


_lists_lock = threading.Lock()
_lists_cache: dict[str, UrlLists] = {}


def load_lists(params: UrlFilterParams) -> UrlLists:
    """The lists for ``params``, loaded once per worker process."""
    key = params.model_dump_json(exclude={"soft_word_threshold"})
    lists = _lists_cache.get(key)
    if lists is None:
        with _lists_lock:
            lists = _lists_cache.get(key)
            if lists is None:
                lists = _lists_cache[key] = _build_lists(params)
    return lists


def _build_lists(p: UrlFilterParams) -> UrlLists:
    import ahocorasick

    hashes: list[np.ndarray] = []
    urls: set[str] = set()
    words = {k: set(_normalize_words(getattr(p, k))) for k in _WORD_FILES}
    if p.default_lists:
        assets = datatrove_assets()
        with tarfile.open(assets / _UT1_ARCHIVE, "r:gz") as tar:
            hashes.append(_hash_lines(tar.extractfile("domains")))
            urls.update(_url_key(x) for x in _lines(tar.extractfile("urls").read().decode()))
        for k, fname in _WORD_FILES.items():
            words[k].update(_normalize_words((assets / fname).read_text().splitlines()))
    for path in p.block_domain_files:
        with fsspec.open(path, "rb", compression="infer") as f:
            hashes.append(_hash_lines(f))
    for path in p.block_url_files:
        urls.update(_url_key(x) for x in _lines(_read_text(path)))
    allow = {d.strip().lower().rstrip(".") for d in p.allow_domains if d.strip()}
    for path in p.allow_domain_files:
        allow.update(x.lower().rstrip(".") for x in _lines(_read_text(path)))
    domain_hashes = np.sort(np.concatenate(hashes)) if hashes else np.zeros(0, np.int64)
    automaton = None
    if words["banned_subwords"]:
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for i, w in enumerate(sorted(words["banned_subwords"])):
            automaton.add_word(w, i)
        automaton.make_automaton()
    urls.discard("")
    return UrlLists(
        domain_hashes=domain_hashes,
        urls=urls,
        allow=allow,
        banned_words=frozenset(words["banned_words"]),
        soft_words=frozenset(words["soft_banned_words"]),
        subwords=automaton,
    )


def _hash_lines(f: IO[bytes]) -> np.ndarray:
    """Hashes of the lower-cased lines of a domain list (``#`` comments and blanks included:
    they never equal a host), read in chunks so memory stays near the size of the result."""
    parts: list[np.ndarray] = []
    rest = b""
    while True:
        chunk = f.read(_CHUNK)
        if not chunk:
            break
        lines = (rest + chunk).lower().replace(b"\r", b"").split(b"\n")
        rest = lines.pop()
        parts.append(_hash_bytes(lines))
    parts.append(_hash_bytes([rest.lower().strip()]))
    return np.concatenate(parts)


def _hash_bytes(lines: list[bytes]) -> np.ndarray:
    lines = [x.strip().rstrip(b".") if x[-1:] in (b" ", b"\t", b".") else x for x in lines]
    return np.fromiter(map(hash, lines), dtype=np.int64, count=len(lines))


def _read_text(path: str) -> str:
    with fsspec.open(path, "rt", encoding="utf-8", compression="infer") as f:
        return f.read()


def _lines(text: str) -> Iterator[str]:
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            yield line


def _normalize_words(items: Iterable[str]) -> Iterator[str]:
    """As datatrove: skip ``#`` lines, keep lower-case alphanumerics only."""
    for item in items:
        if item and not item.startswith("#"):
            word = _NON_ALNUM.sub("", item.lower())
            if word:
                yield word
