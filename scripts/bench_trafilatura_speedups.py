"""trafilatura with and without refine's speedups: same text page by page? how much faster?

    python scripts/bench_trafilatura_speedups.py [--input WARC...] [--repeat 3] [--max-pages N]

Reads the HTML response records of the WARCs (default: every ``*.warc.gz`` of
``$REFINE_TEST_DATA/warc`` or ``../shared/data/warc``), decodes them as refine's reader does
(resiliparse charset detection), and calls ``trafilatura.extract`` with refine's default extraction
settings (datatrove's: favor_precision, no comments, tables, deduplicate) on every page, in this
process, first untouched, then after ``refine.extract.trafilatura_speedups.install()``. The
deduplication cache is emptied before each pass, so both passes see the same history.

Timing: ``--repeat`` passes each way, interleaving is impossible (the speedups cannot be
uninstalled), so the stock passes all run first; the least CPU time of each side is kept. Prints
one JSON line: pages, CPU seconds each way, the ratio, the install report, and the pages whose
text differs (must be 0; exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def default_inputs() -> list[Path]:
    data = Path(os.environ.get("REFINE_TEST_DATA", REPO.parent / "shared" / "data"))
    return sorted((data / "warc").glob("*.warc.gz"))


def read_pages(paths: list[Path], max_pages: int | None) -> list[tuple[str, str | None]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_vs_datatrove import html_pages

    return list(itertools.islice(html_pages(paths), max_pages))


def extract_all(pages) -> tuple[list, float]:
    import trafilatura
    from trafilatura.deduplication import LRU_TEST

    from refine.extract.engines import ExtractConfig

    cfg = ExtractConfig()
    options = cfg.trafilatura_options()
    LRU_TEST.clear()
    c0 = time.process_time()
    texts = [trafilatura.extract(html, url=url, **options) for html, url in pages]
    return texts, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", nargs="+", type=Path, default=None)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--max-pages", type=int, default=None)
    args = ap.parse_args(argv)
    paths = args.input or default_inputs()
    if not paths:
        raise SystemExit("bench: no WARC inputs (set REFINE_TEST_DATA or pass --input)")
    pages = read_pages(paths, args.max_pages)

    stock_cpu, fast_cpu = [], []
    stock = None
    for _ in range(max(1, args.repeat)):
        texts, cpu = extract_all(pages)
        if stock is not None and texts != stock:
            raise SystemExit("bench: stock trafilatura is not deterministic on these pages")
        stock = texts
        stock_cpu.append(cpu)

    from refine.extract.trafilatura_speedups import install

    c0 = time.process_time()
    report = install(force=True)  # measured under any version; the status says which
    install_cpu = time.process_time() - c0
    differ: list[int] = []
    for _ in range(max(1, args.repeat)):
        texts, cpu = extract_all(pages)
        fast_cpu.append(cpu)
        pairs = enumerate(zip(stock, texts, strict=True))
        differ = sorted(set(differ) | {i for i, (a, b) in pairs if a != b})

    result = {
        "speedups_status": report.status,
        "versions": report.versions,
        "pages": len(pages),
        "inputs": [p.name for p in paths],
        "stock_cpu_seconds": round(min(stock_cpu), 3),
        "speedups_cpu_seconds": round(min(fast_cpu), 3),
        "ratio_cpu": round(min(stock_cpu) / min(fast_cpu), 3),
        "stock_ms_per_page": round(1000 * min(stock_cpu) / len(pages), 2),
        "speedups_ms_per_page": round(1000 * min(fast_cpu) / len(pages), 2),
        "all_stock_cpu_seconds": [round(x, 3) for x in stock_cpu],
        "all_speedups_cpu_seconds": [round(x, 3) for x in fast_cpu],
        "install_cpu_seconds": round(install_cpu, 3),
        "install": {
            "python_paths": report.python_paths,
            "expressions": report.expressions,
            "re_test_translated": report.translated,
            "re_test_kept": report.guarded,
            "rejected": len(report.rejected),
            "parser_lookup": report.parser_lookup,
            "prune": report.prune,
            "patched": report.patched,
        },
        "pages_with_text": sum(t is not None for t in stock),
        "pages_differing": len(differ),
        "differing_urls": [pages[i][1] for i in differ[:20]],
    }
    print(json.dumps(result))
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
