"""Filter-chain throughput: refine's stages against datatrove 0.10.1's filters, same documents.

The chain is FineWeb's: URL filter, language ID (en, 0.65), Gopher repetition, Gopher quality, C4,
FineWeb. Both run in this one process, one thread (documents/second per worker), on the same
extracted documents: the jsonl text sample (``text/cc-main-2019-30-en.jsonl.gz``) and the documents
resiliparse extracts from the sample WARCs (``refine run`` with read + extract, or ``--warc-docs``
pointing at an existing ``documents/01_extract``). refine runs its stages one after the other on
one Arrow table (as the fused map chain does); datatrove runs its ``filter`` methods document by
document, stopping at the first drop (as its pipeline does, without its I/O and stats).

One-time loading (block lists, fastText model, spaCy) is done before timing, on 20 documents, and
timed separately. Then ``--repeat`` rounds each time both chains, alternating which goes first;
per chain the best round is kept (noise on a shared machine only adds time), for wall time and
for CPU time of this process (less sensitive to other processes on the machine). Round 1 is also
reported alone: there the word caches of both tools (our chunk cache, spaCy's tokenizer cache)
hold only the warm-up documents; later rounds run with warm caches on both sides. Prints one JSON
line: docs/s of each, their ratios, the ratio of every round, and the keep/drop agreement.

    python scripts/bench_filters.py [--data ../shared/data] [--repeat 5] [--warc-docs DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent


def load_documents(data: Path, warc_docs: Path | None, tmp: Path) -> dict[str, pa.Table]:
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    text = _table(
        [r["id"] for r in rows],
        [
            (r.get("metadata") or {}).get("warc_url") or f"https://sample.invalid/{r['id']}"
            for r in rows
        ],  # fmt: skip
        [r["text"] or "" for r in rows],
    )
    if warc_docs is None:
        out = tmp / "extract"
        config = tmp / "extract.yaml"
        config.write_text(
            f"input: [{json.dumps(str(data / 'warc' / '*.warc.gz'))}]\n"
            f"output: {json.dumps(str(out))}\n"
            "stages:\n  - read: {slice_mb: 1}\n  - extract: {engine: resiliparse, timeout: 20}\n"
        )
        proc = subprocess.run(
            [sys.executable, "-m", "refine.cli", "run", str(config), "--no-progress"],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
        if proc.returncode != 0:
            sys.exit(f"extraction failed:\n{proc.stderr[-3000:]}")
        warc_docs = out / "documents" / "01_extract"
    warc = pq.read_table(warc_docs).sort_by("id")
    warc = _table(
        warc["id"].to_pylist(),
        [u or "" for u in warc["url"].to_pylist()],
        [t or "" for t in warc["text"].to_pylist()],
    )
    return {"text_jsonl": text, "warc_extracted": warc}


def _table(ids: list[str], urls: list[str], texts: list[str]) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.string()),
            "url": pa.array(urls, pa.string()),
            "text": pa.array(texts, pa.large_string()),
            "source": pa.array(ids, pa.string()),
        }
    )


# --- refine -------------------------------------------------------------------------------------


def refine_chain():
    from refine.filters.c4 import C4Quality
    from refine.filters.fineweb import FineWebQuality
    from refine.filters.gopher import GopherQuality, GopherRepetition
    from refine.filters.language import LanguageFilter
    from refine.filters.url import UrlFilter

    stages = [
        UrlFilter(),
        LanguageFilter(),
        GopherRepetition(),
        GopherQuality(),
        C4Quality(),
        FineWebQuality(),
    ]
    for s in stages:
        s.check()
    return stages


def refine_run(stages, table: pa.Table, seconds: dict | None = None) -> dict[str, str | None]:
    """Final decision per id: None kept, else the first dropping stage's reason."""
    decided: dict[str, str | None] = {}
    for s in stages:
        t0 = time.process_time()
        res = s.process(table)
        if seconds is not None:
            seconds[s.name] = time.process_time() - t0
        for doc_id, reason in zip(
            res.log["id"].to_pylist(), res.log["reason"].to_pylist(), strict=True
        ):
            if reason is not None:
                decided[doc_id] = f"{s.name}:{reason}"
        table = res.table
    for doc_id in table["id"].to_pylist():
        decided[doc_id] = None
    return decided


# --- datatrove ------------------------------------------------------------------------------------


def datatrove_chain(tmp: Path):
    import huggingface_hub.utils._cache_assets as assets
    import tldextract
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
        URLFilter,
    )
    from loguru import logger  # datatrove's; it logs the list extraction to stderr

    from refine.models import DEFAULT_LID_MODEL, resolve_model

    logger.remove()

    # offline set-up (ENVIRONMENT.md): the same lid.176 model seeded in its asset cache
    lid = tmp / "datatrove" / "lid" / "ft176"
    lid.mkdir(parents=True, exist_ok=True)
    name = "https:__dl.fbaipublicfiles.com_fasttext_supervised-models_lid.176.bin"
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), lid / name)
    (lid / f"{name}.completed").touch()
    assets.HF_ASSETS_CACHE = str(tmp)
    url = URLFilter()
    url.tldextractor = tldextract.TLDExtract(suffix_list_urls=())
    return [
        url,
        LanguageFilter(languages=["en"], language_threshold=0.65),
        GopherRepetitionFilter(),
        GopherQualityFilter(),
        C4QualityFilter(),
        FineWebQualityFilter(),
    ]


def datatrove_run(filters, table: pa.Table) -> dict[str, str | None]:
    from datatrove.data import Document

    decided: dict[str, str | None] = {}
    for doc_id, url, text in zip(
        table["id"].to_pylist(), table["url"].to_pylist(), table["text"].to_pylist(), strict=True
    ):
        doc = Document(text=text, id=doc_id, metadata={"url": url})
        reason = None
        for f in filters:
            result = f.filter(doc)
            if result is not True and not (isinstance(result, tuple) and result[0]):
                why = result[1] if isinstance(result, tuple) else "dropped"
                reason = f"{f.name}:{why}"
                break
        decided[doc_id] = reason
    return decided


# --- timing ---------------------------------------------------------------------------------------


def timed(fn, *args) -> tuple[float, float, object]:
    """(wall seconds, CPU seconds of this process, result)."""
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn(*args)
    return time.perf_counter() - w0, time.process_time() - c0, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("REFINE_TEST_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", default=default_data, help="the shared crawl samples")
    parser.add_argument("--warc-docs", type=Path, help="an existing documents/01_extract")
    parser.add_argument("--repeat", type=int, default=5, help="rounds (best kept)")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")

    with tempfile.TemporaryDirectory(prefix="bench_filters_") as tmp_name:
        tmp = Path(tmp_name)
        tables = load_documents(Path(args.data), args.warc_docs, tmp)
        table = pa.concat_tables(tables.values())
        warm = table.slice(0, 20)

        t0 = time.perf_counter()
        ours = refine_chain()
        refine_run(ours, warm)  # loads the block lists and the fastText model
        ours_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs = datatrove_chain(tmp)
        datatrove_run(theirs, warm)
        theirs_load = time.perf_counter() - t0

        rounds = []
        stage_cpu: dict[str, float] = {}
        for r in range(args.repeat):
            seconds: dict[str, float] = {}
            sides = [("refine", refine_run, (ours, table, seconds))]
            sides.append(("datatrove", datatrove_run, (theirs, table)))
            if r % 2:
                sides.reverse()
            got = {name: timed(fn, *fn_args) for name, fn, fn_args in sides}
            rounds.append(got)
            if not stage_cpu or sum(seconds.values()) < sum(stage_cpu.values()):
                stage_cpu = seconds
        ours_dec, theirs_dec = rounds[-1]["refine"][2], rounds[-1]["datatrove"][2]

    def best(side: str, what: int) -> float:
        return min(r[side][what] for r in rounds)

    ours_s, theirs_s = best("refine", 0), best("datatrove", 0)
    ours_cpu, theirs_cpu = best("refine", 1), best("datatrove", 1)
    n = table.num_rows
    agreement = {}
    for label, t in {**tables, "all": table}.items():
        ids = t["id"].to_pylist()
        same = sum((ours_dec[i] is None) == (theirs_dec[i] is None) for i in ids)
        agreement[label] = round(same / len(ids), 4)
    result = {
        "docs": n,
        "docs_by_source": {k: t.num_rows for k, t in tables.items()},
        "chain": "url_filter,language(en>0.65),gopher_repetition,gopher_quality,c4,fineweb",
        "refine_docs_per_s": round(n / ours_s, 1),
        "datatrove_docs_per_s": round(n / theirs_s, 1),
        "ratio": round(theirs_s / ours_s, 2),
        "ratio_cpu": round(theirs_cpu / ours_cpu, 2),
        "ratio_first_round": round(rounds[0]["datatrove"][0] / rounds[0]["refine"][0], 2),
        "ratio_by_round": [round(r["datatrove"][0] / r["refine"][0], 2) for r in rounds],
        "ratio_cpu_by_round": [round(r["datatrove"][1] / r["refine"][1], 2) for r in rounds],
        "ratio_target": 3.0,
        "agreement": agreement["all"],
        "agreement_by_source": agreement,
        "agreement_target": 0.99,
        "kept": {
            "refine": sum(v is None for v in ours_dec.values()),
            "datatrove": sum(v is None for v in theirs_dec.values()),
        },
        "refine_seconds": round(ours_s, 3),
        "datatrove_seconds": round(theirs_s, 3),
        "refine_cpu_seconds": round(ours_cpu, 3),
        "datatrove_cpu_seconds": round(theirs_cpu, 3),
        "refine_cpu_seconds_by_stage": {k: round(v, 3) for k, v in stage_cpu.items()},
        "refine_load_seconds": round(ours_load, 3),
        "datatrove_load_seconds": round(theirs_load, 3),
        "repeat": args.repeat,
        "workers": 1,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
