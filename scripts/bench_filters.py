"""Filter-chain throughput: refine's stages against datatrove 0.10.1's filters, same documents.

The chain is FineWeb's: URL filter, language ID (en, 0.65), Gopher repetition, Gopher quality, C4,
FineWeb. Both run in this one process, one thread (documents/second per worker), on the same
extracted documents: the jsonl text sample (``text/cc-main-2019-30-en.jsonl.gz``) and the documents
resiliparse extracts from the sample WARCs (``refine run`` with read + extract, or ``--warc-docs``
pointing at an existing ``documents/01_extract``). refine runs its stages one after the other on
one Arrow table (as the fused map chain does); datatrove runs its ``filter`` methods document by
document, stopping at the first drop (as its pipeline does, without its I/O and stats).

One-time loading (block lists, fastText model) is done before timing, and timed separately. Each
chain is timed ``--repeat`` times and the best kept (noise on a shared machine only adds time).
Prints one JSON line: docs/s of each, their ratio, and the keep/drop agreement.

    python scripts/bench_filters.py [--data ../shared/data] [--repeat 3] [--warc-docs DIR]
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


def refine_run(stages, table: pa.Table) -> dict[str, str | None]:
    """Final decision per id: None kept, else the first dropping stage's reason."""
    decided: dict[str, str | None] = {}
    for s in stages:
        res = s.process(table)
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


def best_of(repeat: int, fn, *args):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("REFINE_TEST_DATA") or str(REPO.parent / "shared" / "data")
    parser.add_argument("--data", default=default_data, help="the shared crawl samples")
    parser.add_argument("--warc-docs", type=Path, help="an existing documents/01_extract")
    parser.add_argument("--repeat", type=int, default=3, help="timings per chain (best kept)")
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

        ours_s, ours_dec = best_of(args.repeat, refine_run, ours, table)
        theirs_s, theirs_dec = best_of(args.repeat, datatrove_run, theirs, table)

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
        "refine_load_seconds": round(ours_load, 3),
        "datatrove_load_seconds": round(theirs_load, 3),
        "repeat": args.repeat,
        "workers": 1,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
