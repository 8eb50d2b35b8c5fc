"""Memory of the dedup stages: the peak RSS of each worker process stays flat (within 20 %) when
the corpus grows 4x at the same partition size (issue 5).

The corpora are made in the test from the real extracted text sample (``text/cc-main-2019-30-en``)
by replicate-and-perturb (``dedup_corpus.py``, shared with scripts/bench_dedup.py): the sample
plus perturbed copies of each document (1-5 % of the words replaced, new ids and URLs), some of
them re-crawls of the same URL with a later date and some exact copies, so every stage has real
work that grows with the corpus, not only exact duplicates.

Both are written as WARC files and run through the real runner (``read`` -> ``extract`` -> the
dedup stages, resumed one stage at a time) on a LocalCluster of worker processes, with the
same ``slice_mb``: the 4x corpus has about 4x the partitions, each of the same size.

The 1x corpus is the sample and 3 perturbed copies (so a partition holds ~900 documents and the
working memory is well above noise), the 4x corpus the sample and 15 copies.

Measurement, per stage: a new LocalCluster of fresh worker processes (so that neither corpus
carries what the stages before it left behind into the next); on each worker process, freed
memory is handed back (gc, Arrow's pool, ``malloc_trim``), the kernel's peak-RSS mark is reset
(``/proc/self/clear_refs``) and the RSS read (the baseline, ~120 MiB: the fresh process with
pyarrow imported; the stage's own imports, the same at both sizes, count as working memory);
after the stage, the peak mark (``VmHWM``, this process only, not its children) is read.
Asserted per stage: the largest absolute peak over the workers is within 20 % (the issue's
words), and the working memory (peak - baseline) grows by less than what one task holding the
whole corpus adds (the control, which must itself grow with the corpus).

Allocator retention once ate most of the 20 %: Arrow's pool (mimalloc) kept the freed pages of
every part a worker had read, so a worker's RSS grew with the number of parts it ran (~50 MiB
over 12 parts), and CI saw a 4x peak at 1.201x the 1x one. Every task now hands those pages back
when it ends (``refine.pipeline.memory``); measured after that: the 4x peaks within 0-4 % of
the 1x ones. Limit: at this scale a phase that held every document's *key* (tens
of bytes each) in one task would not show; holding the documents would.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dedup_corpus import corpus, real_docs, write_corpus
from support import require_shared_data

from refine.pipeline.cluster import dask_client
from refine.pipeline.config import ClusterConfig, PipelineConfig
from refine.pipeline.runner import Runner

DEDUP_STAGES = ["dedup_url", "dedup_exact", "dedup_minhash", "dedup_lines"]
SLICE_MB = 2.0  # compressed WARC per partition: the same for both corpora
BASE_COPIES = 4  # the 1x corpus: the sample and 3 perturbed copies
TOLERANCE = 0.20


def _real_docs() -> list[dict]:
    data = require_shared_data()
    try:
        return real_docs(data)
    except FileNotFoundError as e:
        pytest.skip(f"{e.filename} not found")


# -- measurement on the workers --------------------------------------------------------------


def _status() -> dict[str, int]:
    """This process's /proc status in KiB (VmRSS: now, VmHWM: peak since the last reset)."""
    with open("/proc/self/status") as f:
        rows = dict(line.split(":", 1) for line in f)
    return {k: int(rows[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def _reset_peak() -> tuple[int, int]:
    """On a worker: give freed memory back (Python, Arrow's pool, malloc), reset the kernel's
    peak-RSS mark (``clear_refs`` 5), and return (pid, RSS now in KiB): the baseline."""
    import ctypes
    import gc
    import os

    import pyarrow as pa

    gc.collect()
    pa.default_memory_pool().release_unused()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return os.getpid(), _status()["VmRSS"]


def _peak() -> tuple[int, int]:
    import os

    return os.getpid(), _status()["VmHWM"]


def _load_everything(folder: str) -> int:
    """The control: one task holding every document of the corpus."""
    import pyarrow.parquet as pq

    return pq.read_table(folder).nbytes


class WorkerPeak:
    """The worker processes during a block: ``mib``, the largest (peak - baseline) RSS over the
    workers (working memory), and ``peak_mib``, the largest absolute peak RSS, in MiB."""

    def __init__(self, client):
        self.client = client

    def __enter__(self) -> WorkerPeak:
        self.before = self.client.run(_reset_peak)
        return self

    def __exit__(self, *exc) -> None:
        after = self.client.run(_peak)
        assert set(after) == set(self.before), "a worker left or joined during the measurement"
        growth, peaks = [], []
        for addr, (pid, base) in self.before.items():
            pid_after, peak = after[addr]
            assert pid_after == pid, f"worker {addr} was restarted during the measurement"
            growth.append(peak - base)
            peaks.append(peak)
        self.mib, self.peak_mib = max(growth) / 1024, max(peaks) / 1024


def measure(tmp: Path, docs: list[dict], label: str) -> dict[str, float]:
    warc = write_corpus(tmp / f"{label}.warc.gz", docs)
    out = tmp / f"out-{label}"
    stages: list = [{"read": {"slice_mb": SLICE_MB}}, {"extract": {"engine": "resiliparse"}}]
    result: dict[str, float] = {}

    def run(client) -> dict:
        cfg = PipelineConfig(input=[str(warc)], output=str(out), stages=stages)
        report = Runner.prepare(cfg).run(client).report
        assert report["complete"]
        return report

    with dask_client(ClusterConfig(workers=2)) as client:
        report = run(client)
    result["parts"] = report["stages"][1]["parts"]
    result["docs"] = report["stages"][1]["docs_out"]
    for name in DEDUP_STAGES:
        # the stages before resume from their checkpoints; the key stages on their shuffles
        # (their one-task path for small data is bounded by single_task_rows, not flat: see
        # the param)
        one_task = name in ("dedup_url", "dedup_exact", "dedup_minhash")
        stages.append({name: {"single_task_rows": 0} if one_task else {}})
        # a new cluster per stage: fresh worker processes, so that neither corpus carries the
        # allocator retention of the stages before into this one
        with dask_client(ClusterConfig(workers=2)) as client, WorkerPeak(client) as peak:
            entry = run(client)["stages"][-1]
        assert entry["name"] == name
        assert entry["docs_out"] < entry["docs_in"] or name == "dedup_lines"
        result[name], result[f"{name}_peak"] = peak.mib, peak.peak_mib
    with dask_client(ClusterConfig(workers=2)) as client, WorkerPeak(client) as peak:
        nbytes = client.submit(_load_everything, str(out / "documents" / "01_extract")).result()
    result["control"] = peak.mib
    result["corpus_mib"] = nbytes / 2**20
    return result


def test_peak_rss_per_worker_is_flat_when_the_corpus_grows_4x(tmp_path):
    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("needs Linux /proc/self/clear_refs to reset the peak-RSS mark")
    docs = _real_docs()
    small = measure(tmp_path, corpus(docs, BASE_COPIES), "1x")
    large = measure(tmp_path, corpus(docs, 4 * BASE_COPIES), "4x")
    figures = json.dumps({"1x": small, "4x": large}, indent=1)
    print(figures)
    assert large["parts"] >= 3.5 * small["parts"], figures  # same partition size, 4x the parts
    # the measurement sees corpus-sized state: one task holding the whole corpus grows with it
    # (at least half of the extra Arrow bytes; the 1x control also holds allocator warm-up, so
    # a ratio of the two controls is not a steady check)
    corpus_growth = large["control"] - small["control"]
    assert corpus_growth > 0.5 * (large["corpus_mib"] - small["corpus_mib"]) > 0, figures
    for name in DEDUP_STAGES:
        # the promise: each worker's peak RSS within 20 % ...
        assert large[f"{name}_peak"] <= (1 + TOLERANCE) * small[f"{name}_peak"], (name, figures)
        # ... and the stage's own working memory grows by less than holding the corpus would add
        assert large[name] - small[name] < corpus_growth, (name, figures)
