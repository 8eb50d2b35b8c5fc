"""Per-stage statistics: small mergeable objects reduced across partitions.

A task returns one ``StageStats`` per stage it ran; the driver adds them up (``a + b``) and writes
``stats/NN_name.json`` and the stage's entry of ``report.json``. Everything is plain data so the
objects pickle cheaply between Dask workers and round-trip through JSON for resume.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: How many example problems (file#offset and detail) a stage keeps for the report.
MAX_ERROR_SAMPLES = 50
#: How many examples of what a stage removed (a duplicate beside the document it duplicated, a
#: removed line and its count) a stage keeps for inspection.
MAX_EXAMPLES = 20
#: Counters that describe an extreme or a state of the whole stage, not an amount: combined with
#: ``max`` (``cc_converged``: ``min``, converged only if every piece did) instead of summed.
MAX_COUNTERS = frozenset({"max_rows_per_line_key", "largest_shard_bytes", "cc_iterations"})
MIN_COUNTERS = frozenset({"cc_converged"})
#: The counter of documents a stage writes on top of its input (``rehydrate``'s copies): the
#: balance is ``docs_in + repeats == docs_out + dropped``.
ADDED_COUNTER = "repeats"


def _combine(a: Counter, b: Counter) -> Counter:
    total = a + b
    for key in (a.keys() | b.keys()) & (MAX_COUNTERS | MIN_COUNTERS):
        if key in a and key in b:
            total[key] = (max if key in MAX_COUNTERS else min)(a[key], b[key])
        else:
            total[key] = a[key] if key in a else b[key]
    return total


@dataclass
class StageStats:
    """Counts for one stage over one or more partitions.

    ``bytes_*`` are UTF-8 bytes of the stage's main payload (HTML for ``read``, text after that).
    ``seconds`` and ``cpu_seconds`` are summed over partitions, i.e. worker-seconds, not wall time.
    """

    name: str
    docs_in: int = 0
    docs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    parts: int = 0
    counters: Counter = field(default_factory=Counter)
    errors: list[dict[str, Any]] = field(default_factory=list)
    #: examples of removals; a stage that picks them deterministically (e.g. the smallest ids,
    #: whatever the partitioning) sets them on the merged stats
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: facts about the whole stage, the same for every part (``mix``: target vs achieved shares,
    #: set on its merged stats; ``extract``: which trafilatura speedups ran); merging keeps the
    #: first non-empty one; report.json (and for ``mix`` the tokens' manifest) carries it
    summary: dict[str, Any] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] += n

    def error(self, reason: str, source: str | None, detail: str | None) -> None:
        """Remember an example of a problem (the count itself goes through ``drop``)."""
        if len(self.errors) < MAX_ERROR_SAMPLES:
            self.errors.append({"reason": reason, "source": source, "detail": detail})

    def __add__(self, other: StageStats) -> StageStats:
        if other.name != self.name:
            raise ValueError(f"cannot add stats of stage {other.name!r} to {self.name!r}")
        return StageStats(
            name=self.name,
            docs_in=self.docs_in + other.docs_in,
            docs_out=self.docs_out + other.docs_out,
            bytes_in=self.bytes_in + other.bytes_in,
            bytes_out=self.bytes_out + other.bytes_out,
            dropped=self.dropped + other.dropped,
            seconds=self.seconds + other.seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            parts=self.parts + other.parts,
            counters=_combine(self.counters, other.counters),
            # the smallest by source, not the first to arrive: the report does not depend on
            # which parts finished first, and the sum is bounded whatever the number of parts
            errors=sorted(self.errors + other.errors, key=_error_key)[:MAX_ERROR_SAMPLES],
            examples=(self.examples + other.examples)[:MAX_EXAMPLES],
            summary=self.summary or other.summary,
        )

    @property
    def docs_dropped(self) -> int:
        return sum(self.dropped.values())

    def to_dict(self) -> dict[str, Any]:
        keep = self.docs_out / self.docs_in if self.docs_in else None
        out = {
            "name": self.name,
            "docs_in": self.docs_in,
            "docs_out": self.docs_out,
            "keep_rate": keep,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "dropped": dict(sorted(self.dropped.items(), key=lambda kv: (-kv[1], kv[0]))),
            "seconds": round(self.seconds, 3),
            "cpu_seconds": round(self.cpu_seconds, 3),
            "parts": self.parts,
            "counters": dict(sorted(self.counters.items())),
            "errors": self.errors,
            "examples": self.examples,
        }
        if self.summary:
            out["summary"] = self.summary
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StageStats:
        return cls(
            name=d["name"],
            docs_in=d["docs_in"],
            docs_out=d["docs_out"],
            bytes_in=d["bytes_in"],
            bytes_out=d["bytes_out"],
            dropped=Counter(d.get("dropped", {})),
            seconds=d.get("seconds", 0.0),
            cpu_seconds=d.get("cpu_seconds", 0.0),
            parts=d.get("parts", 0),
            counters=Counter(d.get("counters", {})),
            errors=list(d.get("errors", [])),
            examples=list(d.get("examples", [])),
            summary=dict(d.get("summary") or {}),
        )

    def check_balance(self) -> None:
        """Every document that came in either went out or was dropped with a reason; a stage
        that repeats documents counts the extra copies in ``counters["repeats"]``."""
        added = self.counters.get(ADDED_COUNTER, 0)
        if self.docs_in + added != self.docs_out + self.docs_dropped:
            raise AssertionError(
                f"stage {self.name}: docs_in={self.docs_in} + {ADDED_COUNTER}={added} != "
                f"docs_out={self.docs_out} + dropped={self.docs_dropped} ({dict(self.dropped)})"
            )


def _error_key(e: dict[str, Any]) -> tuple[str, str, str]:
    return (str(e.get("source") or ""), str(e.get("reason") or ""), str(e.get("detail") or ""))


def merge_stats(items: list[StageStats]) -> StageStats:
    total = items[0]
    for s in items[1:]:
        total = total + s
    return total
