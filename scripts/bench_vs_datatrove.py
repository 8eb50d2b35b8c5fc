"""Side by side, end to end: ``refine run`` vs datatrove 0.10.1, same WARCs, same workers.

    python scripts/bench_vs_datatrove.py --input WARC... [--workers N] [--repeat 2]
                                         [--max-records K] [--slice-mb 1] [--timeout 10]
                                         [--trafilatura-dedup on|off] [--keep DIR]
                                         [--refine-fast]

Both tools run the FineWeb chain, each as a child process of this script (one process tree):

- refine: ``python -m refine.cli run`` on a generated config: read, extract (trafilatura),
  language (en > 0.65), gopher_repetition, gopher_quality, c4, fineweb, dedup_minhash (14 x 8,
  5-grams, ``keep: first``: see ``--minhash-keep``), on a LocalCluster of ``--workers`` processes;
- datatrove: ``LocalPipelineExecutor(workers=N, tasks=N)`` running WarcReader, Trafilatura,
  LanguageFilter, GopherRepetitionFilter, GopherQualityFilter, C4QualityFilter, FineWebQualityFilter
  and JsonlWriter, then MinHash stages 1-4 (signatures, buckets with one task per bucket as the
  stage requires, one clustering task as it requires, filter) with FineWeb's MinhashConfig (14 x 8).

Thresholds are datatrove's defaults on both sides (refine's defaults are the same), C4 without its
terminal-punctuation line rule as FineWeb runs it, the same per-page extraction time limit, and
the same fastText lid.176 model (datatrove's asset cache is seeded with it, ENVIRONMENT.md).

Rates are **HTML pages per second**: the pages the bare loop below extracts (fastwarc response
records whose HTTP Content-Type says html), the same count on every side. A side's time is its
pipeline time (refine: ``report.json`` ``wall_seconds``; datatrove: its five executors'
``run()``), after imports; the whole child process time is printed too. Peak RSS is sampled
(psutil, every 0.1 s) as the sum over the child's whole process tree (Dask scheduler, nannies,
workers, extraction children; datatrove's pool and extraction sandboxes), and so is the tree's
CPU time (everything, imports included): on a machine shared with other work, CPU seconds per
page are a steadier comparison than wall time, so both ratios are printed. Agreement compares the
final kept documents by WARC-Record-ID (Jaccard and per-side only counts), and by URL.

The bare trafilatura loop (fastwarc + ``trafilatura.extract`` with refine's settings, one
process, as in ``scripts/bench.py``) runs on the same files: refine's whole chain per worker is
compared with it. The three are interleaved ``--repeat`` times and each one's best time kept
(noise on a shared machine only ever adds time). Prints one JSON line.

trafilatura's ``deduplicate`` (on in FineWeb, and by default here) keeps a cache of paragraphs
across documents in a process: datatrove's extractor process sees every page of its task,
refine clears the cache per partition, so the same page can come out differently (more pages
come out empty in datatrove). ``--trafilatura-dedup off`` removes that difference.

``--refine-fast`` runs refine's extraction with trafilatura's ``fast`` (``extract: {fast: true}``:
no readability/justext fallback comparison) and leaves datatrove as it is (its Trafilatura step
calls ``extract`` without ``fast``). This is NOT the equivalent configuration: the texts differ,
and the result says by how much. The bare loop then runs both ways (``bare`` without ``fast``,
``bare_fast`` with it, interleaved), and ``text_difference`` compares the two loops' text page by
page: identical, empty on one side only, and character-level similarity (difflib).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: datatrove looks for lid.176 under this name in its asset cache (ENVIRONMENT.md).
_DT_LID_NAME = "https:__dl.fbaipublicfiles.com_fasttext_supervised-models_lid.176.bin"
LANGUAGES = ["en"]
LANGUAGE_MIN_SCORE = 0.65


def bare_trafilatura_loop(
    paths: list[Path], deduplicate: bool, fast: bool = False, texts: list | None = None
) -> tuple[int, float, float]:
    """HTML pages, wall and CPU seconds of the plain library loop over ``paths`` in this process:
    fastwarc, resiliparse charset detection, ``trafilatura.extract`` with refine's default
    extraction settings (and ``fast``). As ``scripts/bench.py``'s bare loop, but over several
    files and tolerant of response records without HTTP headers (dns: records in the Heritrix
    sample). trafilatura's deduplication cache is emptied first, so every call starts alike (one
    cache for the whole loop, as datatrove's extractor process). With ``texts``, each page's
    text (or None) is appended to it."""
    import trafilatura
    from trafilatura.deduplication import LRU_TEST

    from refine.extract.engines import ExtractConfig

    LRU_TEST.clear()
    cfg = ExtractConfig(deduplicate=deduplicate, fast=fast)
    options = cfg.trafilatura_options()
    t0, c0 = time.perf_counter(), time.process_time()
    pages = 0
    for html, url in html_pages(paths):
        text = trafilatura.extract(html, url=url, **options)
        if texts is not None:
            texts.append(text)
        pages += 1
    return pages, time.perf_counter() - t0, time.process_time() - c0


def html_pages(paths: list[Path]):
    """(html str, url) of each HTML response record: fastwarc, resiliparse charset detection."""
    from fastwarc.warc import ArchiveIterator, WarcRecordType
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    for path in paths:
        for rec in ArchiveIterator(str(path), parse_http=True, quirks_mode=True):
            if rec.record_type != WarcRecordType.response or rec.http_headers is None:
                continue
            if "html" not in (rec.http_headers.get("Content-Type") or ""):
                continue
            body = rec.reader.read()
            yield bytes_to_str(body, detect_encoding(body)), rec.headers.get("WARC-Target-URI")


# --- inputs ---------------------------------------------------------------------------------------


def stage_inputs(paths: list[Path], dest: Path, max_records: int | None) -> list[Path]:
    """The inputs as files of one folder (datatrove reads a folder): symlinks, or with
    ``max_records`` a copy of each file's first gzip members up to its K-th response record."""
    from warcio.archiveiterator import ArchiveIterator

    dest.mkdir(parents=True, exist_ok=True)
    staged = []
    for i, src in enumerate(paths):
        name = f"{i:03d}-{src.name}" if src.name.endswith(".warc.gz") else f"{i:03d}-{src.name}.gz"
        target = dest / name
        if max_records is None:
            target.symlink_to(src.resolve())
            staged.append(target)
            continue
        end, responses = 0, 0
        with open(src, "rb") as f:
            records = ArchiveIterator(f)
            for rec in records:
                rec.content_stream().read()
                end = records.get_record_offset() + records.get_record_length()
                responses += rec.rec_type == "response"
                if responses >= max_records:
                    break
        with open(src, "rb") as f:
            target.write_bytes(f.read(end))
        # a whole-file gzip WARC has no member boundary to cut at: the copy would be corrupt
        with open(target, "rb") as f:
            got = sum(r.rec_type == "response" for r in ArchiveIterator(f))
        if got != responses:
            raise SystemExit(
                f"bench: cannot cut {src} at {max_records} response records (found {got} in the "
                f"copy, expected {responses}): --max-records needs a gzip member per record"
            )
        staged.append(target)
    return staged


# --- process-tree peak RSS ------------------------------------------------------------------------


class TreePeakRss:
    """Samples, in a thread, the summed RSS of a process and all its descendants (``peak``), the
    RSS of the largest one alone (``largest``), and each one's CPU time (``cpu``: the sum over
    every process seen, at its last sample)."""

    def __init__(self, pid: int, interval: float = 0.1):
        import psutil

        self._psutil = psutil
        self._root = psutil.Process(pid)
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.largest = 0
        self._cpu: dict[int, float] = {}
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _sample(self) -> int:
        ps = self._psutil
        try:
            procs = [self._root, *self._root.children(recursive=True)]
        except ps.Error:
            return 0
        total = 0
        for p in procs:
            try:
                rss = p.memory_info().rss
                total += rss
                self.largest = max(self.largest, rss)
                t = p.cpu_times()
                self._cpu[p.pid] = t.user + t.system
            except ps.Error:
                pass
        return total

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._stop.wait(self._interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak

    @property
    def cpu(self) -> float:
        return sum(self._cpu.values())


def run_child(cmd: list[str], log: Path, env: dict | None = None) -> tuple[float, int, float]:
    """Run ``cmd`` (stdout+stderr to ``log``): wall seconds, peak tree RSS in bytes, and CPU
    seconds of the whole tree (``measure_child``)."""
    m = measure_child(cmd, log, env)
    return m["wall_seconds"], m["peak_rss"], m["cpu_seconds"]


def measure_child(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run ``cmd`` (stdout+stderr to ``log``): ``wall_seconds``, ``cpu_seconds`` of the whole
    process tree, ``peak_rss`` (bytes, the tree's summed RSS) and ``largest_rss`` (bytes, its
    largest process alone). CPU is the larger of two lower bounds: the kernel's count for reaped
    descendants (``RUSAGE_CHILDREN``, misses processes nobody waited for, such as a forkserver's
    pool) and the sampled sum (misses each process's last < 0.1 s)."""
    import resource

    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, **(env or {})}
        )
        sampler = TreePeakRss(proc.pid)
        rc = proc.wait()
        peak = sampler.stop()
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    reaped = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    if rc != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise SystemExit(f"bench: {' '.join(cmd[:4])}... exited with {rc}:\n{tail}")
    return {
        "wall_seconds": wall,
        "cpu_seconds": max(reaped, sampler.cpu),
        "peak_rss": peak,
        "largest_rss": sampler.largest,
    }


# --- refine ---------------------------------------------------------------------------------------


def refine_config(
    inputs: list[Path],
    out: Path,
    workers: int,
    slice_mb: float,
    timeout: float,
    dedup: bool,
    fast: bool = False,
    prefilter: bool = False,
    minhash_keep: str = "first",
) -> dict:
    return {
        "input": [str(p) for p in inputs],
        "output": str(out),
        "cluster": {"workers": workers},
        "stages": [
            {"read": {"slice_mb": slice_mb}},
            {
                "extract": {
                    "engine": "trafilatura",
                    "timeout": timeout,
                    "deduplicate": dedup,
                    "fast": fast,
                    "prefilter_languages": LANGUAGES if prefilter else None,
                }
            },
            {"language": {"languages": LANGUAGES, "min_score": LANGUAGE_MIN_SCORE}},
            {"gopher_repetition": {}},
            {"gopher_quality": {}},
            {"c4": {"filter_no_terminal_punct": False}},
            {"fineweb": {}},
            {"dedup_minhash": {"keep": minhash_keep}},
        ],
    }


def run_refine(inputs: list[Path], tmp: Path, args) -> dict:
    import pyarrow.parquet as pq

    out = tmp / "refine_out"
    config = tmp / "refine.yaml"
    dedup = args.trafilatura_dedup == "on"
    cfg = refine_config(
        inputs,
        out,
        args.workers,
        args.slice_mb,
        args.timeout,
        dedup,
        args.refine_fast,
        args.refine_prefilter,
        args.minhash_keep,
    )
    config.write_text(json.dumps(cfg))  # JSON is YAML
    cmd = [sys.executable, "-m", "refine.cli", "run", str(config), "--no-progress"]
    wall, peak, cpu = run_child(cmd, tmp / "refine.log")
    report = json.loads((out / "report.json").read_text())
    stages = report["stages"]
    final = pq.read_table(out / "documents" / stages[-1]["folder"], columns=["id", "url"])
    read_log = pq.read_table(out / "stages" / stages[0]["folder"], columns=["id", "kept"])
    read_ids = read_log.filter(read_log["kept"])["id"].to_pylist()
    reasons: dict[str, str] = {}
    survivor: dict[str, str] = {}  # near-duplicate removed by refine -> the member refine kept
    for entry in stages:
        folder = out / "stages" / entry["folder"]
        if not folder.is_dir():
            continue
        dlog = pq.read_table(folder, columns=["id", "reason"])
        for doc_id, reason in zip(dlog["id"].to_pylist(), dlog["reason"].to_pylist(), strict=True):
            if reason is not None and doc_id not in reasons:
                reasons[doc_id] = f"{entry['name']}:{reason}"
        if entry["name"] == "dedup_minhash":
            dlog = pq.read_table(folder, columns=["id", "duplicate_of"])
            survivor.update(
                (i, d)
                for i, d in zip(
                    dlog["id"].to_pylist(), dlog["duplicate_of"].to_pylist(), strict=True
                )
                if d is not None
            )
    return {
        "seconds": report["wall_seconds"],
        "process_seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss": peak,
        "ids": final["id"].to_pylist(),
        "urls": final["url"].to_pylist(),
        "read_ids": read_ids,
        "pages_in": next(s["docs_in"] for s in stages if s["name"] == "extract"),
        "stages": {
            s["name"]: {
                "docs_in": s["docs_in"],
                "docs_out": s["docs_out"],
                "seconds": s["seconds"],
                "cpu_seconds": s["cpu_seconds"],
                "dropped": s["dropped"],
            }
            for s in stages
        },
        "drop_reasons": reasons,
        "survivor": survivor,
    }


# --- datatrove ------------------------------------------------------------------------------------


def seed_datatrove_assets(cache: Path) -> None:
    """Put refine's lid.176 where datatrove's LanguageFilter looks for it (no download)."""
    from refine.models import DEFAULT_LID_MODEL, resolve_model

    lid = cache / "datatrove" / "lid" / "ft176"
    lid.mkdir(parents=True, exist_ok=True)
    shutil.copy(resolve_model(DEFAULT_LID_MODEL), lid / _DT_LID_NAME)
    (lid / f"{_DT_LID_NAME}.completed").touch()


def run_datatrove(staged_dir: Path, tmp: Path, args) -> dict:
    work = tmp / "datatrove"
    work.mkdir()
    seed_datatrove_assets(work / "assets")
    spec = {
        "input_dir": str(staged_dir),
        "work": str(work),
        "workers": args.workers,
        "timeout": args.timeout,
        "deduplicate": args.trafilatura_dedup == "on",
    }
    spec_file = work / "spec.json"
    spec_file.write_text(json.dumps(spec))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--datatrove-child", str(spec_file)]
    # set before huggingface_hub is imported, and inherited by datatrove's forkserver pool
    env = {"HF_ASSETS_CACHE": str(work / "assets"), "HF_HUB_OFFLINE": "1"}
    wall, peak, cpu = run_child(cmd, tmp / "datatrove.log", env=env)
    result = json.loads((work / "result.json").read_text())
    ids, urls = _jsonl_ids(work / "deduped")
    filtered_ids, _ = _jsonl_ids(work / "filtered")
    return {
        "seconds": result["seconds"],
        "process_seconds": wall,
        "cpu_seconds": cpu,
        "peak_rss": peak,
        "ids": ids,
        "urls": urls,
        "filtered_ids": filtered_ids,
        "pages_in": result["steps"].get("extract", {}).get("total"),
        "executors": result["executors"],
        "steps": result["steps"],
    }


def _jsonl_ids(folder: Path) -> tuple[list[str], list[str]]:
    ids, urls = [], []
    for path in sorted(folder.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                ids.append(doc["id"])
                urls.append((doc.get("metadata") or {}).get("url"))
    return ids, urls


def datatrove_child(spec_file: Path) -> None:
    """Runs in the child process: datatrove's FineWeb chain and MinHash stages 1-4."""
    import logging
    import warnings

    from datatrove.pipeline.extractors import Trafilatura
    from datatrove.pipeline.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
        LanguageFilter,
    )
    from datatrove.pipeline.readers import JsonlReader, WarcReader
    from datatrove.pipeline.writers import JsonlWriter

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    spec = json.loads(spec_file.read_text())
    work = Path(spec["work"])
    n = spec["workers"]
    filtered = str(work / "filtered")
    stages = [
        _executor(
            work,
            "filter",
            [
                WarcReader(spec["input_dir"], glob_pattern="*.warc.gz"),
                Trafilatura(
                    favour_precision=True, timeout=spec["timeout"], deduplicate=spec["deduplicate"]
                ),
                LanguageFilter(languages=LANGUAGES, language_threshold=LANGUAGE_MIN_SCORE),
                GopherRepetitionFilter(),
                GopherQualityFilter(),
                C4QualityFilter(filter_no_terminal_punct=False),
                FineWebQualityFilter(),
                JsonlWriter(filtered),
            ],
            n,
            n,
        ),
        *minhash_executors(
            work, n, lambda: JsonlReader(filtered), JsonlWriter(str(work / "deduped"))
        ),
    ]
    t0 = time.perf_counter()
    executors = {}
    for name, ex in stages:
        t = time.perf_counter()
        ex.run()
        executors[name] = round(time.perf_counter() - t, 3)
    seconds = time.perf_counter() - t0
    steps = datatrove_steps(work, list(executors))
    (work / "result.json").write_text(
        json.dumps({"seconds": seconds, "executors": executors, "steps": steps})
    )


#: datatrove's four MinHash executors, in order (``minhash_executors``)
MINHASH_STAGES = ("minhash_1", "minhash_2", "minhash_3", "minhash_4")


def minhash_executors(work: Path, n: int, reader, writer, exclusion_writer=None) -> list:
    """datatrove's four MinHash executors as FineWeb runs them, ``(name, executor)`` in order:
    signatures (``n`` tasks), buckets (one task per bucket, as the stage requires), clustering
    (one task, as it requires), filter (``n`` tasks), each on ``n`` workers at most. ``reader()``
    makes a fresh reader of the documents (stages 1 and 4 each need one); ``writer`` gets the
    kept documents, ``exclusion_writer`` the removed ones. Files and logs go under ``work``."""
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.utils.hashing import HashConfig

    minhash = MinhashConfig(
        hash_config=HashConfig(precision=64), num_buckets=14, hashes_per_bucket=8, n_grams=5
    )
    sigs, buckets = str(work / "signatures"), str(work / "buckets")
    remove = str(work / "remove_ids")
    dedup_filter = MinhashDedupFilter(remove, exclusion_writer=exclusion_writer)
    return [
        _executor(work, "minhash_1", [reader(), MinhashDedupSignature(sigs, config=minhash)], n, n),
        _executor(
            work,
            "minhash_2",
            [MinhashDedupBuckets(sigs, buckets, config=minhash)],
            minhash.num_buckets,
            n,
        ),
        _executor(work, "minhash_3", [MinhashDedupCluster(buckets, remove, config=minhash)], 1, 1),
        _executor(work, "minhash_4", [reader(), dedup_filter, writer], n, n),
    ]


def _executor(work: Path, name: str, pipeline: list, tasks: int, workers: int):
    from datatrove.executor.local import LocalPipelineExecutor

    logs = str(work / "logs" / name)
    return name, LocalPipelineExecutor(pipeline, tasks=tasks, workers=workers, logging_dir=logs)


def datatrove_steps(work: Path, executor_names: list[str]) -> dict:
    """Each executor's steps from its ``stats.json``: seconds and document counters."""
    steps = {}
    for ex_name in executor_names:
        stats = json.loads((work / "logs" / ex_name / "stats.json").read_text())
        for step in stats:
            key = _step_key(step["name"], ex_name)
            counters = {
                k: _total(v)
                for k, v in step.get("stats", {}).items()
                if k in ("total", "forwarded", "dropped", "documents") or k.startswith("dropped_")
            }
            steps[key] = {"seconds": round(_total(step.get("time_stats", 0)), 3), **counters}
    return steps


def _total(value) -> float:
    """datatrove writes a metric as a bare number, or as a dict with its ``total``."""
    return value.get("total", 0) if isinstance(value, dict) else value


def _step_key(name: str, executor_name: str) -> str:
    """datatrove's step names carry emoji ("🛢 - EXTRAC: ⛏ Trafilatura"): plain snake_case keys."""
    label = name.rpartition(":")[2]
    plain = "_".join("".join(c for c in label if c.isascii()).lower().split())
    plain = {"warc": "read", "trafilatura": "extract", "language_id": "language"}.get(plain, plain)
    return plain if executor_name == "filter" else f"{executor_name}.{plain}"


# --- comparison -----------------------------------------------------------------------------------


def datatrove_read_ids(paths: list[Path]) -> set[str]:
    """The WARC records datatrove's WarcReader turns into documents (its own ``process_record``):
    without a WARC-Identified-Payload-Type header it sniffs the MIME type with libmagic, which
    calls some HTML pages application/javascript and skips them."""
    from datatrove.pipeline.readers.warc import process_record
    from warcio.archiveiterator import ArchiveIterator

    ids = set()
    for path in paths:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                doc = process_record(rec)
                if doc:
                    ids.add(doc["id"])
    return ids


def agreement(refine: dict, datatrove: dict, dt_read: set[str]) -> dict:
    ours, theirs = set(refine["ids"]), set(datatrove["ids"])
    both = ours & theirs
    union = ours | theirs
    ours_u = {u for u in refine["urls"] if u}
    theirs_u = {u for u in datatrove["urls"] if u}
    filtered = set(datatrove["filtered_ids"])
    # the same comparison over the pages both readers produced (datatrove's MIME sniffing and
    # refine's HTTP status check read slightly different page sets from these samples)
    common = set(refine["read_ids"]) & dt_read
    ours_c, theirs_c = ours & common, theirs & common
    union_c = ours_c | theirs_c
    return {
        "by": "warc_record_id",
        "jaccard": round(len(both) / len(union), 4) if union else 1.0,
        "both": len(both),
        "refine_only": len(ours - theirs),
        "datatrove_only": len(theirs - ours),
        "url_jaccard": (
            round(len(ours_u & theirs_u) / len(ours_u | theirs_u), 4) if ours_u | theirs_u else 1.0
        ),
        # why the two differ: refine's reason for dropping what datatrove kept, and where
        # datatrove dropped what refine kept (its filters, or its MinHash)
        "datatrove_only_refine_reason": dict(
            Counter(refine["drop_reasons"].get(i, "kept?") for i in theirs - ours).most_common()
        ),
        "refine_only_datatrove_step": dict(
            Counter(
                "minhash"
                if i in filtered
                else "filters_or_extract"
                if i in dt_read
                else "not_read_by_datatrove"
                for i in ours - theirs
            ).most_common()
        ),
        "common_input_pages": len(common),
        "refine_read_only": len(set(refine["read_ids"]) - dt_read),
        "datatrove_read_only": len(dt_read - set(refine["read_ids"])),
        "jaccard_common_input": round(len(ours_c & theirs_c) / len(union_c), 4) if union_c else 1.0,
        "refine_only_common_input": len(ours_c - theirs_c),
        "datatrove_only_common_input": len(theirs_c - ours_c),
        # the same, with each of refine's near-duplicate clusters counted once whichever member
        # a side kept (datatrove keeps its union-find root, refine its ``keep``): what is
        # left are documents one side filtered out and the other kept
        "jaccard_common_input_by_cluster": _jaccard(
            {refine["survivor"].get(i, i) for i in ours_c},
            {refine["survivor"].get(i, i) for i in theirs_c},
        ),
    }


def _jaccard(a: set, b: set) -> float:
    return round(len(a & b) / len(a | b), 4) if a | b else 1.0


def text_difference(default: list, fast: list, sample: int = 100, seed: int = 0) -> dict:
    """Page-by-page comparison of two extractions of the same pages (same order): how many are
    identical, empty on one side only, and how similar the texts are where both have one
    (difflib's ``quick_ratio``, an upper bound of ``ratio``, on every pair; ``ratio`` itself, the
    real character-level similarity, on a seeded sample of ``sample`` pairs), then the same over
    the pairs that differ."""
    from difflib import SequenceMatcher
    from statistics import median, quantiles

    if len(default) != len(fast):
        raise SystemExit(f"bench: text lists differ in length ({len(default)} vs {len(fast)})")
    pairs = [(a or "", b or "") for a, b in zip(default, fast, strict=True)]
    both = [(a, b) for a, b in pairs if a and b]
    quick = [SequenceMatcher(None, a, b, autojunk=False).quick_ratio() for a, b in both]
    differing = [(a, b) for a, b in both if a != b]
    picked = random.Random(seed).sample(both, min(sample, len(both)))
    exact = [SequenceMatcher(None, a, b, autojunk=False).ratio() for a, b in picked]
    picked = random.Random(seed).sample(differing, min(sample, len(differing)))
    exact_differing = [SequenceMatcher(None, a, b, autojunk=False).ratio() for a, b in picked]
    n = len(pairs)

    def stats(values: list[float]) -> dict:
        if not values:
            return {}
        deciles = quantiles(values, n=10) if len(values) > 1 else [values[0]] * 9
        return {
            "median": round(median(values), 4),
            "p10": round(deciles[0], 4),
            "mean": round(sum(values) / len(values), 4),
        }

    return {
        "pages": n,
        "identical": sum(a == b for a, b in pairs),
        "identical_fraction": round(sum(a == b for a, b in pairs) / n, 4) if n else 1.0,
        "both_empty": sum(not a and not b for a, b in pairs),
        "empty_default_only": sum(not a and bool(b) for a, b in pairs),
        "empty_fast_only": sum(bool(a) and not b for a, b in pairs),
        "both_text": len(both),
        "both_text_differing": len(differing),
        "chars_default": sum(len(a) for a, _ in pairs),
        "chars_fast": sum(len(b) for _, b in pairs),
        "quick_ratio_both_text": stats(quick),
        "ratio_sample": {"n": len(exact), **stats(exact)},
        # the same over the pages whose two texts differ (both non-empty)
        "chars_default_differing": sum(len(a) for a, _ in differing),
        "chars_fast_differing": sum(len(b) for _, b in differing),
        "chars_default_empty_fast_only": sum(len(a) for a, b in pairs if a and not b),
        "quick_ratio_differing": stats(
            [SequenceMatcher(None, a, b, autojunk=False).quick_ratio() for a, b in differing]
        ),
        "ratio_differing_sample": {"n": len(exact_differing), **stats(exact_differing)},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--input", nargs="+", type=Path, help="WARC files (default: the shared data)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="interleaved runs of each; best kept")
    ap.add_argument("--max-records", type=int, help="first K response records of each file")
    ap.add_argument("--slice-mb", type=float, default=1.0, help="refine's partition size")
    ap.add_argument("--timeout", type=float, default=10.0, help="extraction seconds per page")
    ap.add_argument(
        "--trafilatura-dedup",
        choices=["on", "off"],
        default="on",
        help="trafilatura's deduplicate option on every side (on: FineWeb's setting; its "
        "cross-document cache makes the output depend on which pages share a process)",
    )
    ap.add_argument(
        "--refine-fast",
        action="store_true",
        help="refine extracts with trafilatura's fast=True (datatrove unchanged: NOT the "
        "equivalent configuration); the bare loop runs with and without it, texts compared",
    )
    ap.add_argument(
        "--refine-prefilter",
        action="store_true",
        help="refine skips trafilatura on pages whose quick (resiliparse) text is confidently "
        "not English (extract: prefilter_languages: [en]); datatrove unchanged: NOT the "
        "equivalent configuration, agreement says what it costs",
    )
    ap.add_argument(
        "--fixed-cost",
        action="store_true",
        help="also run each side on one small input file (--repeat times, interleaved) and "
        "report the per-page CPU of the remaining pages: the fixed cost (start-up, imports, Dask, "
        "per-stage set-up) taken out, what a long run converges to",
    )
    ap.add_argument(
        "--minhash-keep",
        choices=["first", "smallest_id"],
        default="first",
        help="refine's dedup_minhash survivor (keep): first in reading order (default here: "
        "the member datatrove keeps of a two-document cluster) or refine's default smallest_id",
    )
    ap.add_argument("--fixed-input", type=Path, help="the small file of --fixed-cost")
    ap.add_argument("--keep", type=Path, help="keep the outputs of the last repeat here")
    ap.add_argument("--datatrove-child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.datatrove_child:
        datatrove_child(args.datatrove_child)
        return 0
    if not args.input:
        data = Path(os.environ.get("REFINE_TEST_DATA") or REPO.parent / "shared" / "data")
        args.input = sorted((data / "warc").glob("*.warc.gz"))
    missing = [str(p) for p in args.input if not p.is_file()]
    if missing or not args.input:
        print(f"bench: input not found: {missing or 'no WARC files'}", file=sys.stderr)
        return 2

    runs: dict[str, list] = {"bare": [], "refine": [], "datatrove": []}
    if args.refine_fast:
        runs["bare_fast"] = []
    texts: dict[str, list] = {}
    with tempfile.TemporaryDirectory(prefix="bench_vs_datatrove_") as tmp_name:
        tmp = Path(tmp_name)
        staged = stage_inputs(args.input, tmp / "inputs", args.max_records)
        for r in range(args.repeat):
            bare_sides = ["bare", "bare_fast"] if args.refine_fast else ["bare"]
            for side in bare_sides if r % 2 == 0 else bare_sides[::-1]:
                got: list = []
                pages, wall, cpu = bare_trafilatura_loop(
                    staged, args.trafilatura_dedup == "on", fast=side == "bare_fast", texts=got
                )
                runs[side].append({"pages": pages, "seconds": wall, "cpu_seconds": cpu})
                if side in texts and texts[side] != got:
                    print(f"bench: {side} texts differ between repeats", file=sys.stderr)
                texts[side] = got
            order = ("refine", "datatrove") if r % 2 == 0 else ("datatrove", "refine")
            for side in order:
                side_tmp = tmp / f"{side}-{r}"
                side_tmp.mkdir()
                if side == "refine":
                    runs[side].append(run_refine(staged, side_tmp, args))
                else:
                    runs[side].append(run_datatrove(tmp / "inputs", side_tmp, args))
                if args.keep is not None and r == args.repeat - 1:
                    shutil.copytree(side_tmp, args.keep / side, dirs_exist_ok=True, symlinks=True)
                else:
                    shutil.rmtree(side_tmp)
        dt_read = datatrove_read_ids(staged)
        fixed = measure_fixed_cost(args, tmp) if args.fixed_cost else None

    pages = runs["bare"][0]["pages"]
    best = {side: min(rs, key=lambda x: x["seconds"]) for side, rs in runs.items()}
    cpu = {side: min(x["cpu_seconds"] for x in rs) for side, rs in runs.items()}
    rate = {side: pages / best[side]["seconds"] for side in runs}
    cpu_rate = {side: pages / cpu[side] for side in runs}
    w = args.workers
    ref, dt = best["refine"], best["datatrove"]
    if any(x["pages"] != pages for rs in runs.values() for x in rs if "pages" in x):
        raise SystemExit("bench: the bare loops counted different page numbers")
    stable = all(
        set(x["ids"]) == set(runs[side][0]["ids"])
        for side in ("refine", "datatrove")
        for x in runs[side]
    )

    def side_entry(side: str) -> dict:
        b = best[side]
        return {
            "docs_per_s": round(rate[side], 2),
            "docs_per_s_per_worker": round(rate[side] / w, 2),
            "docs_per_cpu_s": round(cpu_rate[side], 2),
            "seconds": round(b["seconds"], 2),
            "process_seconds": round(b["process_seconds"], 2),
            "cpu_seconds": round(cpu[side], 2),
            "all_seconds": [round(x["seconds"], 2) for x in runs[side]],
            "all_cpu_seconds": [round(x["cpu_seconds"], 2) for x in runs[side]],
            "peak_rss_mb": round(max(x["peak_rss"] for x in runs[side]) / 2**20, 1),
            "pages_in": b["pages_in"],
            "kept": len(set(b["ids"])),
        }

    result = {
        "inputs": [p.name for p in args.input],
        "max_records": args.max_records,
        "pages": pages,
        "pages_definition": "HTML response records (fastwarc, HTTP Content-Type *html*)",
        "workers": w,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "trafilatura_dedup": args.trafilatura_dedup,
        "minhash_keep": args.minhash_keep,
        # refine with trafilatura fast=True, datatrove without: not the equivalent configuration
        "refine_fast": args.refine_fast,
        # refine skips trafilatura on confidently non-English pages: not the equivalent config
        "refine_prefilter": args.refine_prefilter,
        "chain": "read,trafilatura,language(en>0.65),gopher_repetition,gopher_quality,"
        "c4(no terminal-punct rule),fineweb,minhash(14x8,5-grams)",
        "refine": side_entry("refine"),
        "datatrove": side_entry("datatrove"),
        # wall: pipeline time, best of --repeat; cpu: CPU of each whole process tree (imports,
        # Dask scheduler and nannies included), least of --repeat: steadier on a busy machine
        "ratio": round(rate["refine"] / rate["datatrove"], 3),
        "ratio_process": round(dt["process_seconds"] / ref["process_seconds"], 3),
        "ratio_cpu": round(cpu["datatrove"] / cpu["refine"], 3),
        "ratio_target": 2.0,
        "agreement": agreement(ref, dt, dt_read),
        "agreement_target": 0.98,
        "kept_sets_stable_across_repeats": stable,
        "bare_trafilatura": {
            "docs_per_s": round(rate["bare"], 2),
            "docs_per_cpu_s": round(cpu_rate["bare"], 2),
            "seconds": round(best["bare"]["seconds"], 2),
            "cpu_seconds": round(cpu["bare"], 2),
            "all_seconds": [round(x["seconds"], 2) for x in runs["bare"]],
        },
        # refine's whole chain per worker against the one-process bare loop (target < 0.10)
        "refine_overhead_vs_bare": round(rate["bare"] / (rate["refine"] / w) - 1, 4),
        "refine_overhead_vs_bare_cpu": round(cpu["refine"] / cpu["bare"] - 1, 4),
        "refine_stages": ref["stages"],
        "datatrove_steps": dt["steps"],
        "datatrove_executors_seconds": dt["executors"],
    }
    if args.refine_fast:
        result["bare_trafilatura_fast"] = {
            "docs_per_s": round(rate["bare_fast"], 2),
            "docs_per_cpu_s": round(cpu_rate["bare_fast"], 2),
            "cpu_ms_per_page": round(1000 * cpu["bare_fast"] / pages, 2),
            "seconds": round(best["bare_fast"]["seconds"], 2),
            "cpu_seconds": round(cpu["bare_fast"], 2),
            "all_seconds": [round(x["seconds"], 2) for x in runs["bare_fast"]],
            "all_cpu_seconds": [round(x["cpu_seconds"], 2) for x in runs["bare_fast"]],
        }
        result["bare_trafilatura"]["cpu_ms_per_page"] = round(1000 * cpu["bare"] / pages, 2)
        result["bare_trafilatura"]["all_cpu_seconds"] = [
            round(x["cpu_seconds"], 2) for x in runs["bare"]
        ]
        # CPU per page of the bare loop: without fast / with fast (least of --repeat each)
        result["bare_fast_speedup_cpu"] = round(cpu["bare"] / cpu["bare_fast"], 3)
        # refine's chain (fast) per worker against the like-for-like bare loop (fast)
        result["refine_overhead_vs_bare_fast_cpu"] = round(cpu["refine"] / cpu["bare_fast"] - 1, 4)
        # text of every page, bare loop without fast ("default", what datatrove runs) vs with
        result["text_difference"] = text_difference(texts["bare"], texts["bare_fast"])
    if fixed is not None:
        # Per page with each side's own one-page run subtracted: what a long run converges to.
        steady = {
            side: (cpu[side] - fixed[side]["cpu_seconds"]) / (pages - fixed[side]["pages"])
            for side in ("refine", "datatrove")
        }
        result["fixed_cost"] = {
            **fixed,
            "refine_cpu_ms_per_page_without_fixed": round(1000 * steady["refine"], 2),
            "datatrove_cpu_ms_per_page_without_fixed": round(1000 * steady["datatrove"], 2),
            "bare_cpu_ms_per_page": round(1000 * cpu["bare"] / pages, 2),
            "ratio_cpu_without_fixed": round(steady["datatrove"] / steady["refine"], 3),
            "refine_overhead_vs_bare_cpu_without_fixed": round(
                steady["refine"] / (cpu["bare"] / pages) - 1, 4
            ),
        }
    print(json.dumps(result))
    return 0


def measure_fixed_cost(args, tmp: Path) -> dict:
    """CPU of each side's whole process tree on one small input file, least of ``--repeat``
    interleaved runs. The file must leave documents for every stage (datatrove's MinHash stages
    fail on an empty input): ``--fixed-input``, else wget-sample-0000 when it is an input, else
    the smallest input."""
    if args.fixed_input is not None:
        src = args.fixed_input
    else:
        named = [p for p in args.input if p.name == "wget-sample-0000.warc.gz"]
        src = named[0] if named else min(args.input, key=lambda p: p.stat().st_size)
    staged = stage_inputs([src], tmp / "fixed-inputs", None)
    pages, _, _ = bare_trafilatura_loop(staged, args.trafilatura_dedup == "on")
    got: dict[str, list[float]] = {"refine": [], "datatrove": []}
    for r in range(args.repeat):
        for side in ("refine", "datatrove") if r % 2 == 0 else ("datatrove", "refine"):
            side_tmp = tmp / f"fixed-{side}-{r}"
            side_tmp.mkdir()
            if side == "refine":
                got[side].append(run_refine(staged, side_tmp, args)["cpu_seconds"])
            else:
                got[side].append(run_datatrove(tmp / "fixed-inputs", side_tmp, args)["cpu_seconds"])
            shutil.rmtree(side_tmp)
    out: dict = {"input": src.name, "pages": pages}
    for side, v in got.items():
        out[side] = {"pages": pages, "cpu_seconds": round(min(v), 2)}
        out[side]["all"] = [round(x, 2) for x in v]
    return out


if __name__ == "__main__":
    sys.exit(main())
