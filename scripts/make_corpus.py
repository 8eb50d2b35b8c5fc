"""A synthetic pretraining corpus with planted, recorded duplicates: the input of refine's scale
tests of its global stages (dedup_exact, dedup_minhash, dedup_lines, dedup_substring), whose
output can then be scored against a known truth.

    python scripts/make_corpus.py --docs N --out DIR [--seed S] [--shard-docs K]
        [--row-group-docs R] [--compression zstd|snappy|none] [--data DIR] [--overwrite]
        [--giant-frac F] [--near-frac F] ... (every field of CorpusSpec is an option)

Output, in DIR:

- ``shard-00000.parquet``, ...: ``--shard-docs`` documents each (default 100,000), row groups of
  ``--row-group-docs`` (default 5,000), FineWeb's columns ``text``, ``id`` (``<urn:uuid:...>``),
  ``dump`` (``CC-MAIN-...``), ``url``, ``date`` (ISO 8601 ``...T..:..:..Z`` string). refine's
  ``read`` stage reads DIR as text input as it is (``dump`` becomes a carried column);
- ``_truth.arrow``: one row per document, in corpus order (Arrow IPC file, zstd;
  ``pyarrow.feather.read_table`` or ``pandas.read_feather``). Columns: ``position`` (0..N-1),
  ``shard``, ``id``, ``kind`` (``unique``, ``exact_dup``, ``near_dup``, ``chain``), ``group``
  (the exact-dup group / near-dup cluster / chain id within its kind; -1 for ``unique``; near-dup
  cluster 0 is the giant one), ``group_size``, ``member`` (0 = the group's first document in
  corpus order: an exact group's original, a cluster's unedited original, a chain's start; in a
  chain, the position along it), ``edit_frac`` (words edited / words of the reference: a near-dup
  member against member 0, a chain member against the one before), ``boilerplate`` (ids of the
  boilerplate lines it carries), ``passage`` (id of the shared passage it carries, -1 none; a
  document carries at most one), ``text_bytes`` (UTF-8);
- ``_truth.json``: the parameters, counts per kind, group size histograms, chain lengths, the
  boilerplate lines and passages with their texts and how many documents carry each, how many
  documents a perfect exact and exact + near dedup keep, the shards. Written last.

The truth files start with ``_`` and are neither ``.parquet`` nor ``.jsonl``: refine (which reads
every ``.parquet`` / ``.jsonl*`` file of an input folder) and pyarrow / pandas / Dask dataset
discovery (``pq.read_table(DIR)``, which skips ``_`` and ``.`` names) see only the shards.

The text is re-mixed from the real Common Crawl text of ``text/cc-main-2019-30-en.jsonl.gz``
(``--data``, ``$REFINE_TEST_DATA`` or ../shared/data). Only a third of its 697 documents are
English (at least 15 % English function words): the pool is those 225, whose lines that occur
once in the sample are split into ~8,800 distinct sentence units (mean 14 words), units mostly
ASCII with no "word" over 30 characters; small source documents are merged into topics of at
least 50 units (79 topics).

- a new text (every ``unique`` document, every group's member 0): a log-normal number of units
  (median 22, at least 8; near-dup originals and chain starts at least 24), mean ~2.6 KB, taken
  in turn from 3 topics picked in proportion to their size, uniformly within a topic and with no
  unit twice, in paragraphs (lines) of 1-6 units. At 10^6 documents every unit is used ~3,000
  times, so what would recur is avoided by construction: a line is one unit alone only when
  that unit is under 20 characters (``dedup_lines`` ignores those) or long, so every line of
  20+ characters is a new combination; each use of a unit of over 16 words has one word in every
  12 replaced by a word that follows the word before it somewhere in the pool (fluent, and
  different per use), so a span of 50 tokens (``dedup_substring``'s K) would need three
  consecutive units of two documents to be the same. Checked with refine at 10^5: no ``unique``
  document loses a line to ``dedup_lines`` or a span to ``dedup_substring`` except through the
  planted passages and boilerplate, and none is a MinHash duplicate;
- ``exact_dup``: groups of 2-100 documents (P(size) ~ size^-2; 2 % of the corpus), the same text
  (boilerplate included) under their own id, url, dump and date;
- ``near_dup``: clusters of 2-1,000 documents (P(size) ~ size^-2; 8 % of the corpus) and one giant
  cluster (group 0) of 1 % of the corpus. Each member but the original is the original with 1-5 %
  of its words (log-uniform) edited in runs of 1-6 adjacent words, each run a substitution,
  insertion or deletion (new words fluent as above), no two members the same; word 5-gram
  Jaccard to the original: median ~0.91, 99.6 % at 0.8 or more, lowest ~0.77;
- ``chain``: chains of 50-1,000 documents (P(length) ~ length^-1.5; 3 % of the corpus); each
  member is the one before with 0.4-0.8 % of its words edited in runs of 1-2 (at least one run;
  word 5-gram Jaccard to it ~0.9-1.0, median ~0.95: the ~0.96 of the chain issue #18 describes);
  Jaccard to the start falls below 0.5 after 15-20 steps, so the ends are far apart (~0.1 or
  less). Long chains drift far from the source text (the 1,000th member has had most words
  replaced). ``--chain-rate-min 0.01 --chain-rate-max 0.03 --chain-run-max 3 --chain-len-min
  20`` gives the earlier, looser chains (links ~0.8-0.95, median ~0.89), which FineWeb's 14 x 8
  LSH misses a link of with probability up to ~8 % [computed];
- boilerplate: 22 made-up lines of 20+ characters (cookie banners, navigation, footers), each at
  the top or bottom of its share of the documents, the shares log-spaced from 0.1 % to 10 %;
  every member of a group carries its member 0's lines (one site's template);
- shared passages (one per 1,000 documents, at least 3) of 60-300 words, each pasted as its own
  lines into 3-10 ``unique`` documents of at least ~4 times its length, so hosts do not become
  near-duplicates of each other.

Group members are spread at random positions over the whole corpus, member k before member k+1.
Documents are made in blocks of 1,000, each block from its own generator seeded by (seed, block):
the same ``--docs``, ``--seed`` and sample give the same documents whatever the shard and row
group sizes, and the same arguments give the same bytes. Memory stays bounded (~330 MiB peak at
10^6 documents): the corpus streams out row group by row group, and only the texts that later
members need (a group's original, a chain's last member) are held until the group's last member.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import math
import os
import re
import resource
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path("text") / "cc-main-2019-30-en.jsonl.gz"
FORMAT = "refine-synthetic-corpus/1"
BLOCK_DOCS = 1000  # documents per random generator: fixed, so shard sizes do not change the text

KINDS = ("unique", "exact_dup", "near_dup", "chain")
UNIQUE, EXACT, NEAR, CHAIN = range(4)

#: (name, first day of its crawl): dates are drawn within 14 days of it
DUMPS = (
    ("CC-MAIN-2019-30", "2019-07-15"),
    ("CC-MAIN-2020-34", "2020-08-03"),
    ("CC-MAIN-2021-43", "2021-10-15"),
    ("CC-MAIN-2022-49", "2022-11-26"),
    ("CC-MAIN-2023-50", "2023-11-28"),
    ("CC-MAIN-2024-10", "2024-02-20"),
)
CRAWL_SECONDS = 14 * 86400

#: Made-up boilerplate lines and where a page puts them.
BOILERPLATE = (
    ("top", "Skip to main content | Accessibility help"),
    ("top", "Home | About Us | Services | Blog | Contact"),
    (
        "top",
        "This website uses cookies to improve your experience. By continuing to browse the site "
        "you agree to our use of cookies. Accept | Learn more",
    ),
    (
        "top",
        "We use cookies to personalise content and ads, to provide social media features and to "
        "analyse our traffic.",
    ),
    ("top", "Free shipping on all orders over $50 - Shop now"),
    ("top", "You are here: Home > News > Local"),
    ("top", "Log in | Register | My account | Cart (0)"),
    ("top", "Menu Search Sign in Subscribe Today's paper"),
    ("bottom", "Share this: Facebook Twitter Pinterest LinkedIn Email"),
    ("bottom", "Copyright © 2019 All Rights Reserved."),
    ("bottom", "Powered by WordPress | Theme: Minimal Blog by Northfield Themes"),
    ("bottom", "Your email address will not be published. Required fields are marked *"),
    (
        "bottom",
        "Subscribe to our newsletter to get the latest updates and offers delivered to your inbox.",
    ),
    ("bottom", "Privacy Policy | Terms of Use | Cookie Settings | Sitemap"),
    ("bottom", "Click here to read more articles like this one."),
    ("bottom", "All content on this site is for informational purposes only."),
    (
        "bottom",
        "This post may contain affiliate links. We may earn a commission at no extra cost to you.",
    ),
    ("bottom", "Posted in Uncategorized | Leave a comment"),
    ("bottom", "Follow us on Facebook, Twitter and Instagram for the latest news."),
    ("bottom", "Report an error or a broken link on this page"),
    ("bottom", "Call us today: (555) 013-2480 or send us a message"),
    ("bottom", "Leave a Reply Cancel reply"),
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z]{4,}")
_URL_WORD = re.compile(r"[a-z]{4,10}")
#: paragraph sizes in units, 1..6, and their cumulative probabilities
_PARA_CUM = (0.15, 0.40, 0.65, 0.80, 0.90, 1.0)
_SECTIONS = ("news", "blog", "article", "posts", "story", "reviews", "guides", "forum", "wiki")
_TLDS = ("com", "com", "com", "org", "net", "co.uk", "info", "io", "de", "com.au")
_LONG_UNIT_WORDS = 16  # longer units get one word in every _MUTATE_EVERY replaced per use
_MUTATE_EVERY = 12
_MIN_NEXT = 4  # a word followed by fewer words in the pool is replaced by any word
_MAX_UNIT_WORD_CHARS = 30
_TOPIC_UNITS = 50  # a topic holds at least this many units: no pair of units recurs often
_ANY_WORD = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "the and of to a in is for that with on as it was this are be by at from or an have not "
    "you".split()
)


class CorpusError(Exception):
    """A user mistake (arguments, a missing sample, an output folder in the way): one line."""


@dataclass(frozen=True)
class CorpusSpec:
    """What the corpus holds: shares of documents, size distributions and edit rates."""

    giant_frac: float = 0.01  # near-dup cluster 0: this share of the corpus
    near_frac: float = 0.08  # other near-dup clusters: this share of the corpus
    near_size_max: int = 1000
    near_size_alpha: float = 2.0  # P(size) ~ size^-alpha on [2, near_size_max]
    near_rate_min: float = 0.01  # words edited / words, log-uniform in [min, max]
    near_rate_max: float = 0.05
    near_run_max: int = 6  # an edit is a run of 1..this many adjacent words
    exact_frac: float = 0.02
    exact_size_max: int = 100
    exact_size_alpha: float = 2.0
    chain_frac: float = 0.03
    chain_len_min: int = 50
    chain_len_max: int = 1000
    chain_len_alpha: float = 1.5
    chain_rate_min: float = 0.004  # per step, uniform in [min, max]
    chain_rate_max: float = 0.008
    chain_run_max: int = 2
    passages_per_1000: float = 1.0  # shared passages per 1,000 documents (at least 3)
    passage_words_min: int = 60
    passage_words_max: int = 300
    passage_hosts_min: int = 3
    passage_hosts_max: int = 10
    boilerplate_frac_min: float = 0.001  # the rarest line's share of documents
    boilerplate_frac_max: float = 0.10  # the most common line's share
    units_median: float = 22.0  # sentence units per document: log-normal
    units_sigma: float = 0.75
    units_min: int = 8
    units_max: int = 400
    group_units_min: int = 24  # near-dup originals and chain starts: at least ~290 words

    def check(self) -> None:
        shares = self.giant_frac + self.near_frac + self.exact_frac + self.chain_frac
        if (
            not 0 <= shares < 0.9
            or min(self.giant_frac, self.near_frac, self.exact_frac, self.chain_frac) < 0
        ):
            raise CorpusError(
                f"the shares of planted documents add up to {shares}: not in [0, 0.9)"
            )
        for lo, hi in (
            ("near_rate_min", "near_rate_max"),
            ("chain_rate_min", "chain_rate_max"),
            ("passage_words_min", "passage_words_max"),
            ("passage_hosts_min", "passage_hosts_max"),
            ("boilerplate_frac_min", "boilerplate_frac_max"),
            ("units_min", "units_max"),
        ):
            if not 0 < getattr(self, lo) <= getattr(self, hi):
                raise CorpusError(f"need 0 < {lo} <= {hi}")
        if self.chain_len_min < 2 or self.exact_size_max < 2 or self.near_size_max < 2:
            raise CorpusError("groups need at least 2 documents")
        if min(self.near_run_max, self.chain_run_max) < 1:
            raise CorpusError("near_run_max and chain_run_max must be at least 1")


# -- the pool of real text -----------------------------------------------------------------------


def default_data() -> Path:
    env = os.environ.get("REFINE_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@dataclass
class Pool:
    """Sentence units of the sample's English documents, grouped into topics, and its words."""

    units: list[str]
    unit_long: list[list[str] | None]  # the words of a unit of > _LONG_UNIT_WORDS words
    unit_short: list[bool]  # under 20 characters: may stand alone as a line (a heading)
    src_start: np.ndarray  # first unit of each topic (a source document, or a few small ones)
    src_count: np.ndarray  # units of each topic
    words: list[str]  # every lower-case word of 4+ letters: a draw is by corpus frequency
    next_words: dict[str, list[str]]  # the words that follow a word in the pool (with repeats)
    url_words: list[str]  # distinct 4-10 letter words, sorted
    mean_unit_words: float
    source_docs: int  # documents of the sample
    english_docs: int  # of which the pool is made
    source_sha256: str

    @classmethod
    def load(cls, data: Path) -> Pool:
        path = data / SAMPLE
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise CorpusError(
                f"{path}: cannot read the text sample ({e.strerror}); set REFINE_TEST_DATA or "
                f"--data to the folder holding {SAMPLE}"
            ) from None
        texts = [json.loads(line)["text"] for line in gzip.decompress(raw).splitlines() if line]
        line_count: dict[str, int] = {}
        doc_lines = []
        for text in texts:
            lines = [" ".join(line.split()) for line in text.split("\n")]
            lines = [line for line in lines if line]
            for line in lines:
                line_count[line] = line_count.get(line, 0) + 1
            if _english(text):
                doc_lines.append(lines)
        seen: set[str] = set()
        units: list[str] = []
        starts = [0]
        for lines in doc_lines:
            for line in lines:
                if line_count[line] > 1:  # the sample's own boilerplate: not in the pool
                    continue
                for unit in _SENTENCE_END.split(line):
                    if unit and unit not in seen and _plain(unit):
                        seen.add(unit)
                        units.append(unit)
            if len(units) - starts[-1] >= _TOPIC_UNITS:  # small documents share a topic
                starts.append(len(units))
        if len(units) > starts[-1]:
            starts.append(len(units))
        if len(starts) < 4:
            raise CorpusError(f"{path}: too little English text for a pool ({len(units)} units)")
        split = [u.split(" ") for u in units]
        words = [w for u in units for w in _WORD.findall(u.lower())]
        next_words: dict[str, list[str]] = {}
        for w in split:
            for a, b in zip(w, w[1:], strict=False):
                next_words.setdefault(a, []).append(b)
        bounds = np.array(starts, np.int64)
        return cls(
            units=units,
            unit_long=[w if len(w) > _LONG_UNIT_WORDS else None for w in split],
            unit_short=[len(u) < 20 for u in units],
            src_start=bounds[:-1],
            src_count=np.diff(bounds),
            words=words,
            next_words={a: b for a, b in next_words.items() if len(b) >= _MIN_NEXT},
            url_words=sorted({w for w in words if _URL_WORD.fullmatch(w)}),
            mean_unit_words=sum(len(w) for w in split) / len(split),
            source_docs=len(texts),
            english_docs=len(doc_lines),
            source_sha256=hashlib.sha256(raw).hexdigest(),
        )


def _english(text: str) -> bool:
    """At least 15 % of the words are common English function words (the sample is
    multilingual: about a third of its documents pass)."""
    words = _ANY_WORD.findall(text.lower())
    return bool(words) and sum(w in _STOPWORDS for w in words) >= 0.15 * len(words)


def _plain(unit: str) -> bool:
    """Mostly ASCII, and no "word" longer than _MAX_UNIT_WORD_CHARS (URLs, code, CJK runs)."""
    if sum(not c.isascii() for c in unit) > 0.05 * len(unit):
        return False
    return max(len(w) for w in unit.split(" ")) <= _MAX_UNIT_WORD_CHARS


class Draws:
    """Uniform numbers in [0, 1) from a NumPy generator, drawn 64 Ki at a time: the per-item
    choices of Python loops (edits, paragraph breaks) without one NumPy call per number."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.buf: list[float] = []
        self.i = 0

    def u(self) -> float:
        if self.i == len(self.buf):
            self.buf, self.i = self.rng.random(1 << 16).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]

    def below(self, n: int) -> int:
        return int(self.u() * n)


class TextMaker:
    """Documents from pool units, and word edits of documents."""

    def __init__(self, pool: Pool):
        self.pool = pool
        self.src_weights = pool.src_count / pool.src_count.sum()

    def unit_ids(
        self, rng: np.random.Generator, n_units: np.ndarray, topics: int = 3
    ) -> tuple[list[int], list[int]]:
        """Unit ids for documents of ``n_units`` units each (0: none), all drawn at once.

        Each document takes its units in turn from ``topics`` topics picked in proportion to
        their size (unit j from topic (r + j) mod topics), each unit uniformly within its topic,
        a unit already in the document drawn again. Taking turns means three consecutive units
        (~50 words, ``dedup_substring``'s span) recur in two documents only when both have the
        same three topics. Returns the flat ids and the offsets of each document's run."""
        p = self.pool
        n = len(n_units)
        src = rng.choice(len(p.src_count), size=(n, topics), p=self.src_weights)
        offsets = np.zeros(n + 1, np.int64)
        np.cumsum(n_units, out=offsets[1:])
        owner = np.repeat(np.arange(n), n_units)
        slot = (rng.integers(0, topics, n)[owner] + np.arange(len(owner)) - offsets[owner]) % topics
        topic = src[owner, slot]
        start, count = p.src_start[topic], p.src_count[topic]
        ids = start + (rng.random(len(owner)) * count).astype(np.int64)
        for _ in range(8):  # a unit twice in a document: draw it again
            order = np.lexsort((np.arange(len(ids)), ids, owner))
            same = (owner[order][1:] == owner[order][:-1]) & (ids[order][1:] == ids[order][:-1])
            redo = order[1:][same]
            if not len(redo):
                break
            ids[redo] = start[redo] + (rng.random(len(redo)) * count[redo]).astype(np.int64)
        return ids.tolist(), offsets.tolist()

    def word(self, prev: str, old: str | None, d: Draws) -> str:
        """A word to put after ``prev`` instead of ``old`` (None: an insertion): one that follows
        ``prev`` somewhere in the pool (so the text stays locally fluent), else any word by
        frequency; never ``old`` itself."""
        after = self.pool.next_words.get(prev.rsplit("\n", 1)[-1])
        for _ in range(4):
            w = after[d.below(len(after))] if after else self._any(d)
            if w != old:
                return w
            after = None
        return w + "s"

    def _any(self, d: Draws) -> str:
        words = self.pool.words
        return words[d.below(len(words))]

    def unit_text(self, uid: int, d: Draws) -> str:
        """A unit as used once: a long unit with one word in every _MUTATE_EVERY replaced by a
        word that follows the word before it somewhere in the pool (``word``, inlined: the
        hottest loop of the generator)."""
        words = self.pool.unit_long[uid]
        if words is None:
            return self.pool.units[uid]
        w = list(words)
        n = len(w)
        next_words = self.pool.next_words
        for start in range(0, n, _MUTATE_EVERY):
            j = min(max(start + d.below(min(_MUTATE_EVERY, n - start)), 1), n - 2)
            after = next_words.get(w[j - 1])
            new = after[d.below(len(after))] if after else self._any(d)
            w[j] = new if new != w[j] else self.word("", w[j], d)
        return " ".join(w)

    def document(self, uids: list[int], d: Draws) -> str:
        """Units into paragraphs of 1-6 units; a line of one unit only when it is short (a
        heading) or long (its words are changed per use), so no line of 20+ characters recurs."""
        p = self.pool
        lines: list[str] = []
        line: list[str] = []
        target = self._para_size(d)
        alone_ok = False
        for uid in uids:
            line.append(self.unit_text(uid, d))
            if len(line) == 1:
                alone_ok = p.unit_short[uid] or p.unit_long[uid] is not None
            if len(line) >= target and (len(line) > 1 or alone_ok):
                lines.append(" ".join(line))
                line = []
                target = self._para_size(d)
        if line:
            if len(line) == 1 and not alone_ok and lines:
                lines[-1] = f"{lines[-1]} {line[0]}"
            else:
                lines.append(" ".join(line))
        return "\n".join(lines)

    @staticmethod
    def _para_size(d: Draws) -> int:
        u = d.u()
        for k, c in enumerate(_PARA_CUM):
            if u < c:
                return k + 1
        return len(_PARA_CUM)

    def edit(self, text: str, rate: float, run_max: int, d: Draws) -> tuple[str, float]:
        """``text`` with ``rate`` of its words edited, in runs of 1..``run_max`` adjacent words,
        each run a substitution, an insertion or a deletion; line breaks are kept. Returns the
        new text and the words edited / the words of ``text``."""
        tokens = text.split(" ")
        n = len(tokens)
        target = max(1, math.ceil(rate * n))
        done = 0
        while done < target:
            run = min(1 + d.below(run_max), target - done)
            op = d.below(3)
            at = d.below(len(tokens))
            if op == 0:  # substitute
                for j in range(at, min(at + run, len(tokens))):
                    if "\n" not in tokens[j]:
                        tokens[j] = self.word(tokens[j - 1] if j else "", tokens[j], d)
                        done += 1
            elif op == 1:  # insert
                new = [tokens[at - 1] if at else ""]
                for _ in range(run):
                    new.append(self.word(new[-1], None, d))
                tokens[at:at] = new[1:]
                done += run
            else:  # delete (a token holding a line break stays)
                span = tokens[at : at + run]
                kept = [t for t in span if "\n" in t]
                if len(kept) < len(span) and len(tokens) - len(span) + len(kept) > 10:
                    tokens[at : at + run] = kept
                    done += len(span) - len(kept)
        return " ".join(tokens), done / n


# -- the plan: which position holds which kind, group and member --------------------------------


def power_law_sizes(
    rng: np.random.Generator, budget: int, lo: int, hi: int, alpha: float
) -> np.ndarray:
    """Group sizes drawn from P(s) ~ s^-alpha on [lo, hi] until they hold ``budget`` documents;
    the last one is cut to fit (and dropped when that leaves it under ``lo``)."""
    hi = min(hi, budget)
    if budget < lo or hi < lo:
        return np.zeros(0, np.int64)
    s = np.arange(lo, hi + 1)
    p = s.astype(float) ** -alpha
    p /= p.sum()
    mean = float((s * p).sum())
    sizes = rng.choice(s, size=int(budget / mean * 1.5) + 16, p=p)
    while sizes.sum() < budget:
        sizes = np.concatenate([sizes, rng.choice(s, size=len(sizes), p=p)])
    cum = np.cumsum(sizes)
    k = int(np.searchsorted(cum, budget))
    sizes = sizes[: k + 1].copy()
    sizes[-1] -= cum[k] - budget
    return sizes if sizes[-1] >= lo else sizes[:-1]


@dataclass
class Plan:
    """Per position (int arrays of length N) and per group: the corpus before any text."""

    kind: np.ndarray  # int8, KINDS index
    group: np.ndarray  # int32, -1 for unique
    member: np.ndarray  # int32
    size: np.ndarray  # int32, 1 for unique
    passage: np.ndarray  # int32, -1 none
    min_units: np.ndarray  # int32: the fewest units a new text at this position may have
    sizes: dict[int, np.ndarray]  # group sizes per kind
    passages: list[str]
    passage_words: list[int]
    boilerplate_frac: np.ndarray  # per boilerplate line
    hosts: list[str]

    @property
    def docs(self) -> int:
        return len(self.kind)


def make_plan(n: int, seed: int, spec: CorpusSpec, maker: TextMaker) -> Plan:
    rng = np.random.default_rng([seed, 0])
    giant = max(2, round(spec.giant_frac * n)) if spec.giant_frac > 0 else 0
    near = power_law_sizes(
        rng, round(spec.near_frac * n), 2, spec.near_size_max, spec.near_size_alpha
    )
    sizes = {
        EXACT: power_law_sizes(
            rng, round(spec.exact_frac * n), 2, spec.exact_size_max, spec.exact_size_alpha
        ),
        NEAR: np.concatenate([[giant] if giant else np.zeros(0, np.int64), near]).astype(np.int64),
        CHAIN: power_law_sizes(
            rng,
            round(spec.chain_frac * n),
            spec.chain_len_min,
            spec.chain_len_max,
            spec.chain_len_alpha,
        ),
    }
    ent_kind = np.concatenate([np.full(len(sizes[k]), k, np.int8) for k in (EXACT, NEAR, CHAIN)])
    ent_group = np.concatenate([np.arange(len(sizes[k])) for k in (EXACT, NEAR, CHAIN)])
    ent_size = np.concatenate([sizes[k] for k in (EXACT, NEAR, CHAIN)]).astype(np.int64)
    m = int(ent_size.sum())
    if m > n:
        raise CorpusError(f"--docs {n}: too few for the planted groups ({m} documents)")
    kind = np.full(n, UNIQUE, np.int8)
    group = np.full(n, -1, np.int32)
    member = np.zeros(n, np.int32)
    size = np.ones(n, np.int32)
    perm = rng.permutation(n)
    ent = np.repeat(np.arange(len(ent_size)), ent_size)
    pos = perm[:m]
    order = np.lexsort((pos, ent))  # by group, then position: member k is the k-th in order
    ent, pos = ent[order], pos[order]
    first = np.cumsum(ent_size) - ent_size
    kind[pos] = ent_kind[ent]
    group[pos] = ent_group[ent]
    member[pos] = np.arange(m) - first[ent]
    size[pos] = ent_size[ent]

    # shared passages, each pasted into a few unique documents
    n_passages = max(3, round(n * spec.passages_per_1000 / 1000))
    hosts_per = rng.integers(spec.passage_hosts_min, spec.passage_hosts_max + 1, n_passages)
    background = perm[m:]
    n_hosts = min(int(hosts_per.sum()), len(background))
    passage = np.full(n, -1, np.int32)
    hosts = rng.choice(background, size=n_hosts, replace=False)
    passage[hosts] = np.repeat(np.arange(n_passages), hosts_per)[:n_hosts]
    d = Draws(rng)
    passages, passage_words = [], []
    for _ in range(n_passages):
        want = spec.passage_words_min + d.below(spec.passage_words_max - spec.passage_words_min + 1)
        ids, _ = maker.unit_ids(rng, np.array([want // 4 + 8]), topics=2)
        text = " ".join(maker.document(ids, d).split(" ")[:want])
        passages.append(text)
        passage_words.append(len(text.split()))
    min_units = np.full(n, spec.units_min, np.int32)
    min_units[(member == 0) & ((kind == NEAR) | (kind == CHAIN))] = spec.group_units_min
    host_units = np.ceil(4 * np.array(passage_words) / maker.pool.mean_unit_words)
    has = passage >= 0
    min_units[has] = np.maximum(min_units[has], host_units[passage[has]])

    fracs = np.geomspace(spec.boilerplate_frac_min, spec.boilerplate_frac_max, len(BOILERPLATE))
    fracs = fracs[rng.permutation(len(BOILERPLATE))]
    uw = maker.pool.url_words
    a, b = rng.integers(0, len(uw), 20000), rng.integers(0, len(uw), 20000)
    tld = rng.integers(0, len(_TLDS), 20000)
    host_names = [
        f"www.{uw[i]}{uw[j]}.{_TLDS[t]}"
        for i, j, t in zip(a.tolist(), b.tolist(), tld.tolist(), strict=True)
    ]
    return Plan(
        kind,
        group,
        member,
        size,
        passage,
        min_units,
        sizes,
        passages,
        passage_words,
        fracs,
        host_names,
    )


# -- generation, block by block ------------------------------------------------------------------

DOC_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("date", pa.string()),
    ]
)
TRUTH_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("shard", pa.int32()),
        ("id", pa.string()),
        ("kind", pa.dictionary(pa.int8(), pa.string())),
        ("group", pa.int32()),
        ("group_size", pa.int32()),
        ("member", pa.int32()),
        ("edit_frac", pa.float32()),
        ("boilerplate", pa.list_(pa.int16())),
        ("passage", pa.int32()),
        ("text_bytes", pa.int32()),
    ]
)


class Generator:
    """Makes the documents of the plan in order, a block of BLOCK_DOCS at a time; holds only the
    texts that later members of an open group need."""

    def __init__(self, plan: Plan, maker: TextMaker, spec: CorpusSpec, seed: int, shard_docs: int):
        self.plan, self.maker, self.spec, self.seed = plan, maker, spec, seed
        self.shard_docs = shard_docs
        # (kind, group) -> (the text later members need, the group's boilerplate ids, a
        # near-dup cluster's member digests)
        self.open: dict[tuple[int, int], tuple[str, list[int], Any]] = {}
        self.max_open = 0
        self.boilerplate_docs = np.zeros(len(BOILERPLATE), np.int64)
        self.top = [i for i, (where, _) in enumerate(BOILERPLATE) if where == "top"]
        self.text_bytes = 0
        mu = math.log(spec.units_median)
        self.units = (mu, spec.units_sigma)

    def blocks(self) -> Iterator[tuple[pa.Table, pa.RecordBatch]]:
        for lo in range(0, self.plan.docs, BLOCK_DOCS):
            yield self.block(lo, min(lo + BLOCK_DOCS, self.plan.docs))

    def block(self, lo: int, hi: int) -> tuple[pa.Table, pa.RecordBatch]:
        p, spec, maker = self.plan, self.spec, self.maker
        rng = np.random.default_rng([self.seed, 1, lo // BLOCK_DOCS])
        n = hi - lo
        kind, member = p.kind[lo:hi], p.member[lo:hi]
        new_text = (kind == UNIQUE) | (member == 0)
        n_units = np.clip(np.rint(rng.lognormal(*self.units, size=n)), 1, spec.units_max)
        n_units = np.maximum(n_units, p.min_units[lo:hi]).astype(np.int64) * new_text
        uids, offsets = maker.unit_ids(rng, n_units)
        has_bp = rng.random((n, len(BOILERPLATE))) < p.boilerplate_frac
        dump = rng.integers(0, len(DUMPS), n)
        starts = np.array([np.datetime64(day, "s") for _, day in DUMPS])
        dates = starts[dump] + rng.integers(0, CRAWL_SECONDS, n).astype("timedelta64[s]")
        date_s = [f"{s}Z" for s in np.datetime_as_string(dates, unit="s").tolist()]
        raw_ids = rng.bytes(16 * n)
        host = (rng.random(n) ** 2 * len(p.hosts)).astype(np.int64).tolist()
        section = rng.integers(0, len(_SECTIONS), n).tolist()
        slug = rng.integers(0, len(maker.pool.url_words), (n, 3)).tolist()
        d = Draws(rng)

        texts, ids, urls, bps, edits = [], [], [], [], []
        uw = maker.pool.url_words
        for i in range(n):
            pos = lo + i
            k, g, mem, sz = int(kind[i]), int(p.group[pos]), int(member[i]), int(p.size[pos])
            edit = 0.0
            bp = np.flatnonzero(has_bp[i]).tolist()
            if new_text[i]:
                text = maker.document(uids[offsets[i] : offsets[i + 1]], d)
            if k == UNIQUE:
                if p.passage[pos] >= 0:
                    lines = text.split("\n")
                    lines.insert(d.below(len(lines) + 1), p.passages[p.passage[pos]])
                    text = "\n".join(lines)
            elif mem == 0:  # a group's first document: what its later members need
                seen = {_digest(text)} if k == NEAR else None
                kept = self._with_boilerplate(text, bp) if k == EXACT else text
                self.open[(k, g)] = (kept, bp, seen)
            else:  # later members: the group's text and boilerplate (the same site template)
                ref, bp, seen = self.open[(k, g)]
                if k == EXACT:
                    text = ref
                elif k == NEAR:  # an edit of the original that no other member has
                    while True:
                        r = spec.near_rate_min * (spec.near_rate_max / spec.near_rate_min) ** d.u()
                        text, edit = maker.edit(ref, r, spec.near_run_max, d)
                        if _digest(text) not in seen:
                            break
                    seen.add(_digest(text))
                else:  # CHAIN: an edit of the previous member
                    text = ref
                    while text == ref:
                        span = spec.chain_rate_max - spec.chain_rate_min
                        r = spec.chain_rate_min + span * d.u()
                        text, edit = maker.edit(ref, r, spec.chain_run_max, d)
                    self.open[(k, g)] = (text, bp, None)
            if k != EXACT or mem == 0:
                text = self._with_boilerplate(text, bp)
            if k != UNIQUE and mem == sz - 1:
                del self.open[(k, g)]
            self.boilerplate_docs[bp] += 1
            texts.append(text)
            ids.append(f"<urn:uuid:{uuid.UUID(bytes=raw_ids[16 * i : 16 * i + 16], version=4)}>")
            a, b, c = slug[i]
            urls.append(
                f"https://{p.hosts[host[i]]}/{_SECTIONS[section[i]]}/{uw[a]}-{uw[b]}-{uw[c]}-{pos}"
            )
            bps.append(bp)
            edits.append(edit)
        self.max_open = max(self.max_open, len(self.open))
        text_arr = pa.array(texts, pa.string())
        text_bytes = pc.binary_length(text_arr).to_numpy()
        self.text_bytes += int(text_bytes.sum())
        id_arr = pa.array(ids, pa.string())
        docs = pa.table(
            [
                text_arr,
                id_arr,
                pa.array([DUMPS[j][0] for j in dump.tolist()], pa.string()),
                pa.array(urls, pa.string()),
                pa.array(date_s, pa.string()),
            ],
            schema=DOC_SCHEMA,
        )
        positions = np.arange(lo, hi)
        truth = pa.RecordBatch.from_arrays(
            [
                pa.array(positions),
                pa.array((positions // self.shard_docs).astype(np.int32)),
                id_arr,
                pa.DictionaryArray.from_arrays(
                    pa.array(kind, pa.int8()), pa.array(KINDS, pa.string())
                ),
                pa.array(p.group[lo:hi]),
                pa.array(p.size[lo:hi]),
                pa.array(member),
                pa.array(np.array(edits, np.float32)),
                pa.array(bps, pa.list_(pa.int16())),
                pa.array(p.passage[lo:hi]),
                pa.array(text_bytes.astype(np.int32)),
            ],
            schema=TRUTH_SCHEMA,
        )
        return docs, truth

    def _with_boilerplate(self, text: str, bp: list[int]) -> str:
        if not bp:
            return text
        top = [BOILERPLATE[j][1] for j in bp if j in self.top]
        bottom = [BOILERPLATE[j][1] for j in bp if j not in self.top]
        return "\n".join([*top, text, *bottom])


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


# -- writing -------------------------------------------------------------------------------------


class ShardWriter:
    """Documents into ``shard-NNNNN.parquet`` files of ``shard_docs`` rows, in row groups of
    ``row_group_docs`` (the last of a shard may be smaller)."""

    def __init__(self, out: Path, shard_docs: int, row_group_docs: int, compression: str):
        self.out, self.shard_docs, self.row_group_docs = out, shard_docs, row_group_docs
        self.compression = None if compression == "none" else compression
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.writer: pq.ParquetWriter | None = None
        self.shard_rows = 0
        self.shards: list[dict] = []

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.pending_rows += table.num_rows
        while self.pending_rows >= self._next_rows():
            self._write(self._next_rows())

    def close(self) -> list[dict]:
        while self.pending_rows:
            self._write(min(self.pending_rows, self._next_rows()))
        self._close_shard()
        return self.shards

    def _next_rows(self) -> int:
        return min(self.row_group_docs, self.shard_docs - self.shard_rows)

    def _write(self, rows: int) -> None:
        table = pa.concat_tables(self.pending)
        group, rest = table.slice(0, rows), table.slice(rows)
        self.pending, self.pending_rows = ([rest] if rest.num_rows else []), rest.num_rows
        if self.writer is None:
            name = f"shard-{len(self.shards):05d}.parquet"
            self.shards.append({"file": name, "docs": 0})
            self.writer = pq.ParquetWriter(
                self.out / name, DOC_SCHEMA, compression=self.compression
            )
        self.writer.write_table(group.combine_chunks(), row_group_size=rows)
        self.shard_rows += rows
        self.shards[-1]["docs"] += rows
        if self.shard_rows == self.shard_docs:
            self._close_shard()

    def _close_shard(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer, self.shard_rows = None, 0


def _histogram(sizes: np.ndarray) -> dict[str, int]:
    """Group counts by size bucket: 2, 3-4, 5-8, ... (powers of two)."""
    out: dict[str, int] = {}
    for s in sizes.tolist():
        hi = 1 << max(1, math.ceil(math.log2(s)))
        lo = hi // 2 + 1
        key = str(s) if s == 2 else f"{lo}-{hi}"
        out[key] = out.get(key, 0) + 1
    return dict(sorted(out.items(), key=lambda kv: int(kv[0].split("-")[0])))


def summary(
    plan: Plan, gen: Generator, pool: Pool, spec: CorpusSpec, args: dict, shards: list[dict]
) -> dict:
    n = plan.docs
    counts = np.bincount(plan.kind, minlength=len(KINDS))
    sz = plan.sizes
    kept_exact = n - int((sz[EXACT] - 1).sum())
    kept_near = kept_exact - int((sz[NEAR] - 1).sum()) - int((sz[CHAIN] - 1).sum())
    hosts = np.bincount(plan.passage[plan.passage >= 0], minlength=len(plan.passages))
    return {
        "format": FORMAT,
        "args": args,
        "spec": dataclasses.asdict(spec),
        "source": {
            "file": str(SAMPLE),
            "sha256": pool.source_sha256,
            "documents": pool.source_docs,
            "english_documents": pool.english_docs,
            "topics": len(pool.src_count),
            "units": len(pool.units),
            "mean_unit_words": round(pool.mean_unit_words, 3),
        },
        "docs": n,
        "text_bytes": gen.text_bytes,
        "mean_text_bytes": round(gen.text_bytes / n, 1),
        "kinds": {
            "unique": {"docs": int(counts[UNIQUE]), "passage_hosts": int(hosts.sum())},
            "exact_dup": {
                "docs": int(counts[EXACT]),
                "groups": len(sz[EXACT]),
                "max_size": int(sz[EXACT].max(initial=0)),
                "sizes": _histogram(sz[EXACT]),
            },
            "near_dup": {
                "docs": int(counts[NEAR]),
                "clusters": len(sz[NEAR]),
                "giant_cluster": 0 if len(sz[NEAR]) else None,
                "giant_size": int(sz[NEAR][0]) if len(sz[NEAR]) else 0,
                "max_size_besides_giant": int(sz[NEAR][1:].max(initial=0)),
                "sizes": _histogram(sz[NEAR][1:]),
            },
            "chain": {
                "docs": int(counts[CHAIN]),
                "chains": len(sz[CHAIN]),
                "lengths": sz[CHAIN].tolist(),
            },
        },
        "perfect_dedup_keeps": {"exact": kept_exact, "exact_and_near": kept_near},
        "boilerplate": [
            {"id": i, "where": where, "text": text, "target_frac": float(f), "docs": int(c)}
            for i, ((where, text), f, c) in enumerate(
                zip(BOILERPLATE, plan.boilerplate_frac, gen.boilerplate_docs, strict=True)
            )
        ],
        "passages": [
            {"id": i, "words": w, "hosts": int(h), "text": t}
            for i, (t, w, h) in enumerate(
                zip(plan.passages, plan.passage_words, hosts, strict=True)
            )
        ],
        "shards": shards,
    }


def make_corpus(
    docs: int,
    out: Path,
    *,
    seed: int = 0,
    shard_docs: int = 100_000,
    row_group_docs: int = 5_000,
    compression: str = "zstd",
    data: Path | None = None,
    spec: CorpusSpec | None = None,
    overwrite: bool = False,
    log=None,
) -> dict:
    """Write the corpus and its truth into ``out``; return the summary (_truth.json)."""
    spec = spec or CorpusSpec()
    spec.check()
    if docs < 20:
        raise CorpusError(f"--docs {docs}: at least 20")
    if shard_docs < 1 or row_group_docs < 1:
        raise CorpusError("--shard-docs and --row-group-docs must be at least 1")
    if compression not in ("zstd", "snappy", "none"):
        raise CorpusError(f"--compression {compression!r}: zstd, snappy or none")
    out.mkdir(parents=True, exist_ok=True)
    ours = sorted(out.glob("shard-*.parquet")) + [
        p for p in (out / "_truth.arrow", out / "_truth.json") if p.exists()
    ]
    if ours and not overwrite:
        raise CorpusError(f"{out} already holds a corpus ({ours[0].name}, ...): use --overwrite")
    for p in ours:
        p.unlink()
    pool = Pool.load(data or default_data())
    maker = TextMaker(pool)
    plan = make_plan(docs, seed, spec, maker)
    gen = Generator(plan, maker, spec, seed, shard_docs)
    shards = ShardWriter(out, shard_docs, row_group_docs, compression)
    options = pa.ipc.IpcWriteOptions(compression="zstd")
    t0 = time.perf_counter()
    with pa.ipc.new_file(out / "_truth.arrow", TRUTH_SCHEMA, options=options) as truth:
        for table, batch in gen.blocks():
            shards.add(table)
            truth.write_batch(batch)
            done = int(batch["position"][-1].as_py()) + 1
            if log and (done % (50 * BLOCK_DOCS) == 0 or done == docs):
                rate = done / (time.perf_counter() - t0)
                log(f"{done:,} / {docs:,} documents ({rate:,.0f} docs/s)")
        written = shards.close()
    args = {
        "docs": docs,
        "seed": seed,
        "shard_docs": shard_docs,
        "row_group_docs": row_group_docs,
        "compression": compression,
    }
    result = summary(plan, gen, pool, spec, args, written)
    result["max_open_groups"] = gen.max_open
    (out / "_truth.json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--docs", type=int, required=True, help="documents in the corpus")
    ap.add_argument("--out", type=Path, required=True, help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shard-docs", type=int, default=100_000, help="documents per Parquet file")
    ap.add_argument("--row-group-docs", type=int, default=5_000, help="documents per row group")
    ap.add_argument("--compression", default="zstd", choices=("zstd", "snappy", "none"))
    ap.add_argument("--data", type=Path, help="shared data folder (default: $REFINE_TEST_DATA)")
    ap.add_argument("--overwrite", action="store_true", help="replace a corpus already in --out")
    mix = ap.add_argument_group("corpus mix (CorpusSpec)")
    for f in dataclasses.fields(CorpusSpec):
        mix.add_argument(
            f"--{f.name.replace('_', '-')}",
            type=type(f.default),
            default=f.default,
            help=f"default {f.default}",
        )
    a = ap.parse_args(argv)
    spec = CorpusSpec(**{f.name: getattr(a, f.name) for f in dataclasses.fields(CorpusSpec)})
    t0 = time.perf_counter()
    try:
        result = make_corpus(
            a.docs,
            a.out,
            seed=a.seed,
            shard_docs=a.shard_docs,
            row_group_docs=a.row_group_docs,
            compression=a.compression,
            data=a.data,
            spec=spec,
            overwrite=a.overwrite,
            log=lambda s: print(s, file=sys.stderr, flush=True),
        )
    except CorpusError as e:
        print(f"make_corpus: {e}", file=sys.stderr)
        return 2
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    k = result["kinds"]
    print(
        json.dumps(
            {
                "docs": result["docs"],
                "text_gib": round(result["text_bytes"] / 2**30, 3),
                "mean_text_bytes": result["mean_text_bytes"],
                "shards": len(result["shards"]),
                "exact_groups": k["exact_dup"]["groups"],
                "near_clusters": k["near_dup"]["clusters"],
                "chains": k["chain"]["chains"],
                "seconds": round(seconds, 1),
                "docs_per_s": round(result["docs"] / seconds),
                "peak_rss_mib": round(peak / 2**20),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
