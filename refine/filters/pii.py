"""PII anonymisation: e-mail addresses and public IP addresses are replaced; no document is dropped.

As datatrove's ``PIIFormatter`` (FineWeb): e-mails become ``email@example.com``, public IPs one
of datatrove's placeholder addresses, and private, loopback, link-local and other reserved ranges
(checked with ``ipaddress``: ``is_global``) stay, since they identify nobody. Beyond datatrove:

- IPv6 addresses are handled too (datatrove only looks for IPv4);
- an address must stand alone: ``1.2.3.4.5``, ``v2.10.3.1b`` (versions) and ``11.22.33.444`` are
  left alone, where datatrove rewrites the ``1.2.3.4`` / ``11.22.33.44`` inside them;
- the e-mail local part is ``[A-Za-z0-9._%+-]``: datatrove's RFC-wide class also takes ``/`` and
  ``=``, so ``https://medium.com/@user.name`` or ``?to=a@b.com`` lost the text before the ``@``.

E-mails are found and replaced for the whole batch by Arrow (RE2); IPs need the ``ipaddress``
check, so Python only looks at the documents Arrow found an IP-like pattern in.
"""

from __future__ import annotations

import ipaddress
import re
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from refine.pipeline.stage import MapStage, StageParams, StageResult, decision_log, text_bytes
from refine.pipeline.stats import StageStats

#: RE2 syntax (no look-around): a word boundary, a local part, ``@``, dotted domain, letter TLD.
EMAIL_RE = (
    r"\b[A-Za-z0-9_%+-]+(?:\.[A-Za-z0-9_%+-]+)*@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}\b"
)
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
#: Python syntax: not glued to ASCII letters, digits or dotted numbers (``v1.2.3.4b``,
#: ``1.2.3.4.5`` are versions), validated by ipaddress; CJK text around it is fine.
IPV4_RE = re.compile(rf"(?<![A-Za-z0-9_])(?<!\d\.){_IPV4}(?![A-Za-z0-9_]|\.\d)")
#: A run of hex digits and colons with at least two colons and one hex digit (optionally ending
#: in an IPv4 address); ``ipaddress`` then says whether it is one (times and MACs are not).
IPV6_RE = re.compile(
    r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f]*:)(?=:*[0-9A-Fa-f])[0-9A-Fa-f:]{2,39}"
    rf"(?:{_IPV4})?(?![\w:]|\.\d)"
)
#: Cheap RE2 pre-check: documents without these cannot hold an IP address.
_IP_HINT = r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}|[0-9A-Fa-f]{0,4}:[0-9A-Fa-f]{0,4}:"
#: datatrove's first placeholder IP (its list: "did not respond to ping" when it was made).
DEFAULT_IP_REPLACEMENT = "22.214.171.124"


class PiiParams(StageParams):
    emails: bool = Field(default=True, description="replace e-mail addresses")
    ips: bool = Field(default=True, description="replace IP addresses (IPv4 and IPv6)")
    only_public_ips: bool = Field(
        default=True, description="keep private, loopback and reserved addresses as they are"
    )
    email_replacement: str = "email@example.com"
    ip_replacement: str = DEFAULT_IP_REPLACEMENT


class PiiAnonymizer(MapStage):
    """Replaces e-mails and public IPs in ``text``; counts them in ``pii_emails`` / ``pii_ips``."""

    rewrites_text = True

    name = "pii"
    Params = PiiParams

    def process(self, table: pa.Table) -> StageResult:
        t0, c0 = time.perf_counter(), time.process_time()
        p = self.params
        n = table.num_rows
        stats = StageStats(name=self.name, parts=1, docs_in=n, docs_out=n)
        stats.bytes_in = text_bytes(table)
        text = table["text"]
        emails = np.zeros(n, dtype=np.int32)
        ips = np.zeros(n, dtype=np.int32)
        if n and p.emails:
            emails = _to_numpy(pc.count_substring_regex(text, EMAIL_RE))
            if emails.any():
                repl = p.email_replacement.replace("\\", "\\\\")
                text = pc.replace_substring_regex(text, EMAIL_RE, repl)
        if n and p.ips:
            text, ips = _replace_ips(text, p.ip_replacement, p.only_public_ips)
        if p.emails or p.ips:
            table = table.set_column(
                table.column_names.index("text"), "text", text.cast(table.schema.field("text").type)
            )
        signals = {"pii_emails": pa.array(emails, pa.int32()), "pii_ips": pa.array(ips, pa.int32())}
        for col, values in signals.items():
            if col in table.column_names:
                table = table.set_column(table.column_names.index(col), col, values)
            else:
                table = table.append_column(col, values)
        stats.bytes_out = text_bytes(table)
        stats.counters["emails_replaced"] = int(emails.sum())
        stats.counters["ips_replaced"] = int(ips.sum())
        stats.counters["docs_with_pii"] = int(((emails + ips) > 0).sum())
        log = decision_log(
            table, pa.array(np.ones(n, dtype=bool)), pa.nulls(n, pa.string()), None, signals
        )
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return StageResult(table, log, stats)


def _to_numpy(counts: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.fill_null(counts, 0).to_numpy().astype(np.int32, copy=False)


def _replace_ips(
    text: pa.ChunkedArray | pa.Array, replacement: str, only_public: bool
) -> tuple[pa.Array, np.ndarray]:
    """Replace IP addresses; only documents with an IP-like pattern go through Python."""
    counts = np.zeros(len(text), dtype=np.int32)
    hint = pc.fill_null(pc.match_substring_regex(text, _IP_HINT), False)
    todo = np.flatnonzero(hint.to_numpy(zero_copy_only=False))
    if not len(todo):
        return text, counts
    values = text.to_pylist() if isinstance(text, pa.Array) else text.combine_chunks().to_pylist()
    for i in todo.tolist():
        new, k = anonymize_ips(values[i], replacement, only_public)
        if k:
            values[i], counts[i] = new, k
    return pa.array(values, pa.large_string()), counts


def anonymize_ips(text: str, replacement: str, only_public: bool = True) -> tuple[str, int]:
    """``text`` with its (public) IPv4 and IPv6 addresses replaced, and how many were."""
    count = 0

    def sub(m: re.Match) -> str:
        nonlocal count
        found = m.group(0)
        if ":" in found and sum(1 for g in found.split(":") if g) < 2:
            return found  # Fortran `intent(in)::a` is the valid IPv6 ::a: want two groups
        try:
            ip = ipaddress.ip_address(found)
        except ValueError:  # e.g. a time 12:30:45, a MAC address, C++ std::vector
            return found
        if only_public and not ip.is_global:
            return m.group(0)
        count += 1
        return replacement

    text = IPV4_RE.sub(sub, text)
    if ":" in text:
        text = IPV6_RE.sub(sub, text)
    return text, count
