"""Larger dedup corpora made from the real extracted text sample (``text/cc-main-2019-30-en``) by
replicate-and-perturb, written as WARC files for the real runner (``read`` -> ``extract`` -> ...).

Shared by the dedup memory test (tests/test_dedup_memory.py) and the dedup benchmark
(scripts/bench_dedup.py), so both grow the corpus the same way:

- the sample's documents as they are, plus
- ``factor - 1`` perturbed copies of each: most have 1-5 % of the words of each line of at least
  4 words replaced and a new URL (near-duplicates: ``dedup_minhash``), 10 % are re-crawls of the
  same URL with a later date (``dedup_url``), 5 % are exact copies under a new URL
  (``dedup_exact``); short lines (menus, boilerplate) stay as they are (``dedup_lines``).

So every dedup stage has real work that grows with the corpus, not only exact duplicates.
"""

from __future__ import annotations

import gzip
import html
import json
import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

from warcgen import record, write_warc

REPO = Path(__file__).resolve().parent.parent
CRAWL_DATE = datetime(2019, 7, 17, tzinfo=UTC)
SAMPLE = Path("text") / "cc-main-2019-30-en.jsonl.gz"


def sample_path(data: Path | None = None) -> Path:
    """The extracted text sample under ``data``, ``$REFINE_TEST_DATA`` or ``../shared/data``."""
    if data is None:
        env = os.environ.get("REFINE_TEST_DATA")
        data = Path(env) if env else REPO.parent / "shared" / "data"
    return data / SAMPLE


def real_docs(data: Path | None = None) -> list[dict]:
    """The sample's non-empty documents as ``{id, url, text, date}``; FileNotFoundError when
    the sample is missing (tests turn that into a skip)."""
    path = sample_path(data)
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [
        {"id": r["id"], "url": r["metadata"]["warc_url"], "text": r["text"], "date": CRAWL_DATE}
        for r in rows
        if r["text"].strip()
    ]


def _word(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(8))


def perturbed_copy(doc: dict, copy: int, rng: random.Random) -> dict:
    """A new document made from ``doc``: most copies have 1-5 % of their words replaced and a
    new URL; some are re-crawls of the same URL (a later date); some are exact copies."""
    text, url = doc["text"], f"{doc['url'].rstrip('/')}/copy-{copy}"
    date = doc["date"] + timedelta(days=copy)
    roll = rng.random()
    if roll < 0.1:
        url = doc["url"]  # a re-crawl: dedup_url keeps the latest
    if roll >= 0.1 and roll < 0.15:
        pass  # an exact copy under another URL: dedup_exact
    else:
        lines = text.split("\n")
        for i, line in enumerate(lines):
            words = line.split(" ")
            if len(words) < 4:
                continue  # short lines (menus, boilerplate) stay as they are
            k = max(1, int(len(words) * rng.uniform(0.01, 0.05)))
            for j in rng.sample(range(len(words)), k):
                words[j] = _word(rng)
            lines[i] = " ".join(words)
        text = "\n".join(lines)
    return {"id": f"{doc['id']}-copy-{copy}", "url": url, "text": text, "date": date}


def corpus(docs: list[dict], factor: int, seed: int = 0) -> list[dict]:
    """``docs`` and ``factor - 1`` perturbed copies of each, shuffled: ``factor`` x the docs."""
    rng = random.Random(seed)
    out = list(docs)
    for copy in range(1, factor):
        out += [perturbed_copy(d, copy, rng) for d in docs]
    rng.shuffle(out)
    return out


def page(text: str) -> bytes:
    """An HTML page whose main content is ``text``, one ``<p>`` per non-empty line."""
    body = "".join(f"<p>{html.escape(line)}</p>\n" for line in text.split("\n") if line.strip())
    return f"<html><body><article>\n{body}</article></body></html>".encode()


def write_corpus(path: Path, docs: list[dict]) -> Path:
    """``docs`` as one WARC file of ``response`` records (record id, URL and date kept)."""
    return write_warc(
        path,
        (
            record(
                "response",
                d["url"],
                page(d["text"]),
                record_id=f"<urn:uuid:{d['id']}>",
                date=d["date"],
            )
            for d in docs
        ),
    )
