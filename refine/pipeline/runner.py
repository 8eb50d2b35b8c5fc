"""Run a pipeline on Dask: plan segments, skip finished parts, run the rest, write the report.

The stage list is cut into **segments** at checkpoints. A map segment is a chain of map stages
(starting with the source stage, or reading the previous checkpoint's Parquet parts) that runs as
one Dask task per partition, so a partition flows through the whole chain without being copied
once per stage. A global segment is one global stage over the previous checkpoint's dataset.

Resume: each finished part leaves a marker (written last, atomically) holding its stats; a re-run
skips parts with a marker and recomputes the rest, overwriting any half-finished files under the
same names, so no document is lost or written twice. Each segment stores a fingerprint of its
inputs and stage parameters; when it changes, that segment and everything after it is recomputed
while earlier checkpoints (e.g. extraction) are reused.

Faults: a part that fails after its retries, an input that cannot be reached at planning, or an
output storage that refuses writes (full disk, quota, read-only) stops nothing that is already
written. The run writes what it can, records the failure in ``report.json`` and raises
``RunIncomplete`` (one line, exit 1); the same command later does only what is missing.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import refine
from refine.errors import RefineError, RunIncomplete
from refine.pipeline.config import PipelineConfig, build_stages, check_source_chain
from refine.pipeline.gather import window_size
from refine.pipeline.inputs import InputFile
from refine.pipeline.memory import release_memory, releasing
from refine.pipeline.stage import FilterStage, GlobalContext, Partition, Stage, StageFailed
from refine.pipeline.stats import StageStats, merge_stats
from refine.pipeline.storage import (
    OutputLayout,
    clean_temporaries,
    list_parts,
    read_json,
    remove_tree,
    stage_folder,
    write_json_atomic,
    write_parquet_atomic,
)
from refine.pipeline.versions import versions_report

log = logging.getLogger("refine")


@dataclass
class Segment:
    key: str  # the folder name of its last stage, which is its checkpoint
    kind: str  # "map" | "global"
    stages: list[tuple[str, Stage]]  # (folder, stage)
    fingerprint: str = ""
    input_key: str | None = None  # the checkpoint it reads; None for the source segment

    @property
    def resources(self) -> dict[str, float]:
        """Dask worker resources its tasks need (the union of its stages')."""
        need: dict[str, float] = {}
        for _, stage in self.stages:
            for name, amount in stage.worker_resources().items():
                need[name] = max(need.get(name, 0), amount)
        return need

    @property
    def has_source(self) -> bool:
        return self.stages[0][1].kind == "source"


def plan_segments(stages: list[Stage], source_salt: str = "", data_salt: str = "") -> list[Segment]:
    """Cut the stage list at checkpoints.

    ``source_salt`` identifies the inputs (which files, in which order: a part id names the same
    slice of the same file in every run). ``data_salt`` identifies what was actually read; it
    enters the fingerprints from the first global stage on, which must see every document, while
    the per-part segments before it resume part by part when an input that was unreachable is
    read later."""
    segments: list[Segment] = []
    current: list[tuple[str, Stage]] = []

    def flush() -> None:
        if current:
            segments.append(Segment(key=current[-1][0], kind="map", stages=list(current)))
            current.clear()

    for i, stage in enumerate(stages):
        folder = stage_folder(i, stage.name)
        if stage.kind == "global":
            flush()
            segments.append(Segment(key=folder, kind="global", stages=[(folder, stage)]))
            continue
        if stage.worker_resources():  # a segment of its own: only its tasks need the resource
            flush()
        current.append((folder, stage))
        if stage.checkpoint or stage.worker_resources():
            flush()
    flush()
    prev_key = None
    prev_fp = source_salt
    salted = False
    for seg in segments:
        seg.input_key = prev_key
        if seg.kind == "global" and not salted:
            prev_fp, salted = f"{prev_fp}|data:{data_salt}", True
        h = hashlib.sha256(prev_fp.encode())
        for folder, stage in seg.stages:
            h.update(f"|{folder}:{stage.fingerprint()}".encode())
        seg.fingerprint = h.hexdigest()[:16]
        prev_key, prev_fp = seg.key, seg.fingerprint
    return segments


@dataclass(frozen=True)
class PartJob:
    """Everything a worker needs to run one partition through one map segment."""

    root: str
    segment_key: str
    fingerprint: str
    stages: list[tuple[str, Stage]]
    partition: Partition
    keep_intermediate: bool
    #: stage folder -> folder of that stage's decision logs from a run with the same scoring
    reuse: dict[str, str] = field(default_factory=dict)


#: errno values that mean the output storage refuses writes: retrying the part cannot help.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def storage_refuses(e: BaseException) -> bool:
    """A full disk, an exhausted quota, a file-size limit or a read-only file system."""
    return isinstance(e, OSError) and e.errno in STORAGE_ERRNOS


def run_part(job: PartJob) -> dict[str, Any]:
    """Run one partition through a fused chain of map stages (executes on a Dask worker).

    When the output storage refuses a write, the part returns ``storage_error`` instead of
    raising: Dask would retry it, redoing the work only to fail at the same write. Whatever it
    wrote is complete files or removed temporaries, and without its done marker it is redone
    by the next run."""
    try:
        return _run_part(job)
    except OSError as e:
        if not storage_refuses(e):
            raise
        return {"part": job.partition.id, "storage_error": f"{type(e).__name__}: {e}"}
    finally:
        release_memory()  # a worker's RSS then does not grow with the parts it has run


def _run_part(job: PartJob) -> dict[str, Any]:
    layout = OutputLayout(job.root)
    marker = layout.done_marker(job.segment_key, job.partition.id)
    if marker.exists():  # a retried task whose first attempt finished
        return read_json(marker)
    part_name = f"part-{job.partition.id}.parquet"
    stats: list[dict[str, Any]] = []
    table = None
    last = len(job.stages) - 1
    for i, (folder, stage) in enumerate(job.stages):
        try:
            result = _run_stage(job, folder, stage, table, part_name)
        except Exception as e:
            if storage_refuses(e):
                raise  # told apart by errno (run_part)
            raise StageFailed(folder, f"{type(e).__name__}: {e}") from e
        table = result.table
        if getattr(stage, "rewrites_text", False):
            table = without_hidden(table)
        write_parquet_atomic(result.log, layout.stage_log(folder) / part_name)
        if i == last or job.keep_intermediate:
            write_parquet_atomic(without_hidden(table), layout.documents(folder) / part_name)
        stats.append(result.stats.to_dict())
    done = {
        "part": job.partition.id,
        "fingerprint": job.fingerprint,
        "stats": stats,
        "worker": _worker_address(),
    }
    write_json_atomic(done, marker)
    return done


def _worker_address() -> str | None:
    """The Dask worker that ran the part (placement shows in its done marker)."""
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError):
        return None


def _run_stage(job: PartJob, folder: str, stage: Stage, table: Any, part_name: str) -> Any:
    if stage.kind == "source":
        return stage.read(job.partition)
    if table is None:
        table = pq.read_table(job.partition.spec)
    if isinstance(stage, FilterStage):
        previous = None
        if folder in job.reuse:
            saved = Path(job.reuse[folder]) / part_name
            previous = pq.read_table(saved) if saved.exists() else None
        return stage.process(table, previous=previous)
    return stage.process(table)


def without_hidden(table: Any) -> Any:
    """Drop ``_``-prefixed columns: per-partition scratch (e.g. ``_words``) that fused stages
    share, never written to the documents."""
    hidden = [c for c in table.column_names if c.startswith("_")]
    return table.drop_columns(hidden) if hidden else table


@dataclass
class SegmentOutcome:
    """What a segment did. Part results are added up as they arrive (``add``): the driver holds
    one StageStats per stage, never one per part (a full crawl has millions of parts)."""

    total: int = 0
    resumed: int = 0
    done: int = 0  # parts whose results were added, resumed ones included
    stats: list[StageStats] | None = None  # per stage of the segment, summed over parts
    failed: list[dict[str, str]] = field(default_factory=list)
    storage_error: str | None = None  # the output storage refused a write: the run stops

    def add(self, result: dict[str, Any]) -> None:
        parts = [StageStats.from_dict(d) for d in result["stats"]]
        self.stats = (
            parts if self.stats is None else [a + b for a, b in zip(self.stats, parts, strict=True)]
        )
        self.done += 1


@dataclass
class RunSummary:
    report: dict[str, Any]
    parts_total: int = 0
    parts_skipped: int = 0
    stage_stats: list[StageStats] = field(default_factory=list)


ProgressFactory = Callable[[str, int], Any]


class _NullProgress:
    def __init__(self, *a: Any, **k: Any):
        pass

    def advance(self, docs: int, docs_in: int = 0, resumed: bool = False) -> None:
        pass

    def close(self) -> None:
        pass


class StageClient:
    """The Dask client as a global stage sees it: the tasks of ``client.map`` and
    ``client.submit`` release Arrow's unused memory when they end (see ``refine.pipeline.memory``).
    Everything else is the client itself."""

    def __init__(self, client: Any):
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def map(self, func: Callable[..., Any], *iterables: Any, **kwargs: Any) -> list[Any]:
        return self._client.map(releasing(func), *iterables, **kwargs)

    def submit(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return self._client.submit(releasing(func), *args, **kwargs)


class TrackedClient(StageClient):
    """A ``StageClient`` whose every ``client.map`` call is a phase whose tasks are counted on
    the stage's progress display as they finish. Global stages stay unaware of progress; a
    phase is named after the mapped function.
    """

    def __init__(self, client: Any, display: Any):
        super().__init__(client)
        self._display = display

    def map(self, func: Callable[..., Any], *iterables: Any, **kwargs: Any) -> list[Any]:
        futures = super().map(func, *iterables, **kwargs)
        done = self.phase(func, len(futures))
        for fut in futures:
            fut.add_done_callback(lambda _fut: done())
        return futures

    def phase(self, func: Callable[..., Any], total: int) -> Callable[[], None]:
        """A phase of ``total`` tasks of ``func`` on the display; call the result as each one
        finishes (``refine.pipeline.gather.map_folded`` does)."""
        label = getattr(func, "__name__", "tasks").strip("_").replace("_", " ")
        return self._display.phase(label, total)


class Runner:
    def __init__(
        self,
        config: PipelineConfig,
        inputs: list[InputFile],
        *,
        progress: ProgressFactory | None = None,
    ):
        self.config = config
        self.inputs = inputs
        #: inputs that could not be reached at planning: not read, reported, retried by a re-run
        self.failed_inputs = [f for f in inputs if getattr(f, "error", None)]
        self.stages = build_stages(config.stages)
        bind_output(self.stages, config.output)
        self.layout = OutputLayout(config.output)
        # which files are read is the source segment's identity (the failed ones keep their
        # place, so part ids stay stable); their sizes tell a changed file (see _sync_state)
        salt = _digest("".join(f"|{_input_url(f)}" for f in inputs))
        read = "".join(
            f"|{_input_url(f)}:{getattr(f, 'size', None)}"
            for f in inputs
            if not getattr(f, "error", None)
        )
        self.segments = plan_segments(self.stages, source_salt=salt, data_salt=_digest(read))
        #: global stages' summaries (StageStats.summary) by stage name, as their segments finish
        self.summaries: dict[str, dict[str, Any]] = {}
        self.progress = progress or _NullProgress

    @classmethod
    def prepare(cls, config: PipelineConfig, **kwargs: Any) -> Runner:
        """Validate stages, check their models/imports and resolve inputs: all before any work."""
        stages = build_stages(config.stages)
        bind_output(stages, config.output)
        for stage in stages:
            stage.check()
        inputs = stages[0].resolve_inputs(config.input)
        output_kind = getattr(stages[0], "output_kind", None)
        if output_kind is not None:
            check_source_chain(stages, output_kind(inputs))
        OutputLayout(config.output).prepare()  # writable, no links out of it: before the cluster
        return cls(config, inputs, **kwargs)

    # -- resume bookkeeping ------------------------------------------------------------------
    def _reset_segment(self, seg: Segment) -> None:
        for folder, _ in seg.stages:
            remove_tree(self.layout.documents(folder))
            remove_tree(self.layout.stage_log(folder))
            remove_tree(self.layout.stats(folder))
        remove_tree(self.layout.done_dir(seg.key))

    def _sync_state(self) -> None:
        """Invalidate segments whose fingerprint changed, and all segments after them.

        The decision logs of filters whose scoring did not change (only thresholds, or only
        something upstream) are kept aside, so their signals are reused, not recomputed."""
        invalid = False
        for seg in self.segments:
            state_path = self.layout.segment_state(seg.key)
            state = read_json(state_path) if state_path.exists() else {}
            old = state.get("fingerprint")
            sizes = self._input_sizes(state.get("input_sizes", {})) if seg.has_source else None
            if sizes is not None and sizes[1] and old is not None and not invalid:
                log.warning("input %s changed since the last run: recomputing everything", sizes[1])
                invalid = True
            libraries = {folder: stage.library_versions() for folder, stage in seg.stages}
            if invalid or (old is not None and old != seg.fingerprint):
                changed_libs = _library_changes(state.get("libraries", {}), libraries)
                if old is not None and changed_libs and not invalid:
                    log.warning(
                        "library versions changed since the last run (%s): recomputing %s and "
                        "every stage after it",
                        ", ".join(changed_libs),
                        ", ".join(s.name for _, s in seg.stages),
                    )
                elif old is not None:
                    log.warning(
                        "stages %s or their input changed since the last run: recomputing them",
                        ", ".join(s.name for _, s in seg.stages),
                    )
                invalid = True
                self._keep_signals(seg, state.get("score_fingerprints", {}))
                self._reset_segment(seg)
            elif old is None:
                self._reset_segment(seg)  # leftovers of a run that never recorded a fingerprint
            scoring = {folder: stage.score_fingerprint() for folder, stage in seg.stages}
            new_state: dict[str, Any] = {
                "fingerprint": seg.fingerprint,
                "score_fingerprints": scoring,
                "libraries": libraries,
            }
            if sizes is not None:
                new_state["input_sizes"] = sizes[0]
            write_json_atomic(new_state, state_path)
            for folder, _ in seg.stages:
                clean_temporaries(self.layout.documents(folder))
                clean_temporaries(self.layout.stage_log(folder))

    def _input_sizes(self, old: dict[str, int | None]) -> tuple[dict[str, int | None], str | None]:
        """The sizes to remember for the inputs, and the first input whose size changed.

        An input unreachable now keeps the size it had (its parts are still valid); one that
        was unreachable before has nothing to compare."""
        sizes: dict[str, int | None] = {}
        changed = None
        for f in self.inputs:
            url, size = _input_url(f), getattr(f, "size", None)
            before = old.get(url)
            if size is None:
                size = before
            elif before is not None and before != size and changed is None:
                changed = url
            sizes[url] = size
        return sizes, changed

    def _keep_signals(self, seg: Segment, old_scoring: dict[str, str]) -> None:
        for folder, stage in seg.stages:
            saved = self.layout.saved_signals(folder)
            current = self.layout.stage_log(folder)
            same_scoring = old_scoring.get(folder) == stage.score_fingerprint()
            if isinstance(stage, FilterStage) and same_scoring and current.is_dir():
                # logs already set aside by an interrupted earlier re-run scored the same way:
                # merge, the newer part files win
                saved.mkdir(parents=True, exist_ok=True)
                for part in current.glob("part-*.parquet"):
                    os.replace(part, saved / part.name)
                remove_tree(current)
            elif not same_scoring:
                remove_tree(saved)

    def _reuse(self, seg: Segment) -> dict[str, str]:
        return {
            folder: str(self.layout.saved_signals(folder))
            for folder, _ in seg.stages
            if self.layout.saved_signals(folder).is_dir()
        }

    # -- execution -----------------------------------------------------------------------------
    def _partitions(self, seg: Segment) -> list[Partition]:
        if seg.has_source:
            # planned with the unreachable inputs in place, so every other part keeps its id
            parts = seg.stages[0][1].plan(self.inputs)
            failed = {_input_url(f) for f in self.failed_inputs}
            return [p for p in parts if getattr(p.spec, "url", None) not in failed]
        parts = list_parts(self.layout.documents(seg.input_key))
        return [
            Partition(id=p.name[len("part-") : -len(".parquet")], spec=str(p), size_hint=None)
            for p in parts
        ]

    def _run_map_segment(self, client: Any, seg: Segment) -> SegmentOutcome:
        from distributed import as_completed

        partitions = self._partitions(seg)
        out = SegmentOutcome(total=len(partitions))
        todo: list[Partition] = []
        names = "+".join(s.name for _, s in seg.stages)
        bar = self.progress(names, len(partitions))
        for part in partitions:
            marker = self.layout.done_marker(seg.key, part.id)
            if marker.exists():
                d = read_json(marker)
                out.add(d)
                bar.advance(d["stats"][-1]["docs_out"], d["stats"][0]["docs_in"], resumed=True)
            else:
                todo.append(part)
        out.resumed = out.done
        part_of: dict[str, str] = {}

        def collect(fut: Any) -> None:
            try:
                result = fut.result()
            except Exception as e:  # counted, reported, retried by the next run
                error = str(e) if isinstance(e, StageFailed) else f"{type(e).__name__}: {e}"
                out.failed.append({"part": part_of[fut.key], "error": error})
                log.error("part %s of %s failed: %s", part_of[fut.key], seg.key, error)
                bar.advance(0)
                return
            if "storage_error" in result:
                if out.storage_error is None:
                    log.error("output storage refuses writes: %s", result["storage_error"])
                out.storage_error = out.storage_error or result["storage_error"]
                out.failed.append({"part": result["part"], "error": result["storage_error"]})
                bar.advance(0)
                return
            out.add(result)
            bar.advance(result["stats"][-1]["docs_out"], result["stats"][0]["docs_in"])

        if todo and seg.resources:
            _check_resources(client, seg)
        reuse = self._reuse(seg)
        window = window_size(client)
        queue = as_completed()
        in_flight = 0
        try:
            for part in todo:
                if in_flight >= window:
                    collect(next(queue))
                    in_flight -= 1
                if out.storage_error:  # every later part would fail at its first write
                    break
                job = PartJob(
                    root=str(self.layout.root),
                    segment_key=seg.key,
                    fingerprint=seg.fingerprint,
                    stages=seg.stages,
                    partition=part,
                    keep_intermediate=self.config.keep_intermediate,
                    reuse=reuse,
                )
                key = f"{seg.key}-{part.id}-{uuid.uuid4().hex[:8]}"
                part_of[key] = part.id
                fut = client.submit(
                    run_part,
                    job,
                    pure=False,
                    key=key,
                    retries=self.config.cluster.retries,
                    resources=seg.resources or None,
                )
                queue.add(fut)
                in_flight += 1
            for fut in queue:
                collect(fut)
        finally:
            bar.close()
        if not out.failed:
            for folder in reuse:  # every part has its new log: the saved signals are spent
                remove_tree(self.layout.saved_signals(folder))
        for folder, _ in seg.stages:  # half-written files of attempts lost with a worker
            clean_temporaries(self.layout.documents(folder))
            clean_temporaries(self.layout.stage_log(folder))
        return out

    def _run_global_segment(self, client: Any, seg: Segment) -> SegmentOutcome:
        folder, stage = seg.stages[0]
        marker = self.layout.done_marker(seg.key, "global")
        if marker.exists():
            outcome = SegmentOutcome(total=1, resumed=1)
            done = read_json(marker)
            outcome.add(done)
            self._remember_summary(stage.name, done)
            return outcome
        # a global stage is one unit of resume: whatever a killed attempt wrote is redone
        remove_tree(self.layout.documents(folder))
        remove_tree(self.layout.stage_log(folder))
        ctx = GlobalContext(
            input_dir=str(self.layout.documents(seg.input_key)),
            output_dir=str(self.layout.documents(folder)),
            log_dir=str(self.layout.stage_log(folder)),
            work_dir=str(self.layout.root / "_state" / "work" / folder),
            client=StageClient(client),
            output_root=str(self.layout.root),
            extra={"summaries": dict(self.summaries)},
        )
        display = None
        if hasattr(self.progress, "global_stage"):
            display = self.progress.global_stage(stage.name)
            ctx.client = TrackedClient(client, display)
        try:
            stats = stage.run(ctx)
        finally:
            if display is not None:
                display.close()
        if hasattr(self.progress, "finished"):
            self.progress.finished(stage.name, stats.docs_in, stats.docs_out, stats.seconds)
        done = {"part": "global", "fingerprint": seg.fingerprint, "stats": [stats.to_dict()]}
        write_json_atomic(done, marker)
        self._remember_summary(stage.name, done)
        outcome = SegmentOutcome(total=1)
        outcome.add(done)
        return outcome

    def _remember_summary(self, name: str, done: dict[str, Any]) -> None:
        """A global stage's summary (``mix``'s shares), for the stages after it (tokenize's
        manifest) and report.json."""
        summary = done["stats"][0].get("summary")
        if summary:
            self.summaries[name] = summary

    def _run_global_guarded(self, client: Any, seg: Segment) -> SegmentOutcome:
        """A global stage that fails (a task error, a full disk) is reported like a failed
        part; it is one unit of resume, so the next run redoes it whole."""
        try:
            return self._run_global_segment(client, seg)
        except RefineError:
            raise
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
            log.error("global stage %s failed: %s", seg.key, error)
            log.info("traceback of the failure in %s", seg.key, exc_info=True)
            return SegmentOutcome(
                total=1,
                failed=[{"part": "global", "error": error}],
                storage_error=error if storage_refuses(e) else None,
            )

    def _publish_dataset(self, client: Any) -> dict[str, Any] | None:
        """``OUT/dataset/``: the final documents as ``output_format`` shards, redone only when
        the documents or the format changed since it was last written."""
        from refine.pipeline.dataset import write_dataset

        final = None
        for seg in reversed(self.segments):
            for folder, _ in reversed(seg.stages):
                if list_parts(self.layout.documents(folder)):
                    final = (seg, folder)
                    break
            if final:
                break
        if final is None:
            return None
        seg, folder = final
        fmt = self.config.output_format
        state_path = self.layout.root / "_state" / "dataset.json"
        key = {"fingerprint": seg.fingerprint, "folder": folder, "format": fmt}
        if state_path.exists():
            state = read_json(state_path)
            if {k: state.get(k) for k in key} == key and self.layout.dataset().is_dir():
                return state["summary"]
        parts = list_parts(self.layout.documents(folder))
        summary = {
            "from": folder,
            **write_dataset(parts, self.layout.dataset(), fmt, client=client),
        }
        write_json_atomic({**key, "summary": summary}, state_path)
        return summary

    def run(self, client: Any) -> RunSummary:
        """Run every segment that is not done yet; write stats and ``report.json``.

        Raises ``RunIncomplete`` (after writing the report) when parts failed, inputs could not
        be reached or the output storage refused a write; what is finished is kept."""
        try:
            return self._run(client)
        except OSError as e:  # a write of the driver's own (state, stats, report)
            if not storage_refuses(e):
                raise
            raise RunIncomplete(self._storage_message(f"{type(e).__name__}: {e}")) from None

    def _ship_worker_files(self, client: Any) -> None:
        """Upload the code files stages need on every worker (``Stage.worker_files``)."""
        files = [
            f for seg in self.segments for _, stage in seg.stages for f in stage.worker_files()
        ]
        for path in dict.fromkeys(files):
            client.upload_file(path)
            log.info("shipped %s to the workers", path)

    def _storage_message(self, error: str) -> str:
        return (
            f"the output storage refuses writes ({error}); finished parts are kept and nothing "
            f"half-written counts as done: free space under {self.layout.root} and re-run the "
            f"same command to resume"
        )

    def _run(self, client: Any) -> RunSummary:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        self.layout.prepare()
        self._sync_state()
        self._ship_worker_files(client)
        stage_stats: dict[str, list[StageStats]] = {
            folder: [] for seg in self.segments for folder, _ in seg.stages
        }
        parts_total = parts_skipped = 0
        failed: list[dict[str, str]] = []
        storage_error = None
        for seg in self.segments:
            if seg.kind == "map":
                outcome = self._run_map_segment(client, seg)
            else:
                outcome = self._run_global_guarded(client, seg)
            parts_total += outcome.total
            parts_skipped += outcome.resumed
            for (folder, _), s in zip(seg.stages, outcome.stats or [], strict=False):
                stage_stats[folder].append(s)
            if outcome.failed:
                # later stages would see an incomplete checkpoint: stop here
                failed = [{"segment": seg.key, **f} for f in outcome.failed]
                storage_error = outcome.storage_error
                break
        merged: list[StageStats] = []
        entries = []
        for seg in self.segments:
            for folder, stage in seg.stages:
                items = stage_stats[folder]
                s = merge_stats(items) if items else StageStats(name=stage.name)
                s.check_balance()
                if stage.kind == "source" and self.failed_inputs:
                    s.counters["inputs_unreachable"] = len(self.failed_inputs)
                    for f in self.failed_inputs:
                        s.error("input_unreachable", _input_url(f), f.error)
                merged.append(s)
                entry = {"folder": folder, "kind": stage.kind, **s.to_dict()}
                write_json_atomic(entry, self.layout.stats(folder))
                entries.append(entry)
        unreachable = [{"url": _input_url(f), "error": f.error} for f in self.failed_inputs]
        dataset = None
        if not failed:
            dataset = self._publish_dataset(client)
        report = {
            "refine_version": refine.__version__,
            "versions": versions_report(),
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "wall_seconds": round(time.perf_counter() - t0, 3),
            "output": str(self.layout.root),
            "config": self.config.model_dump(mode="json"),
            # the config strings that held ${VAR}s, as written (`config` has the values)
            "config_env": self.config.as_written,
            "inputs": {
                "files": len(self.inputs),
                "bytes": sum(f.size or 0 for f in self.inputs),
                "urls": [f.url for f in self.inputs[:1000]],
                "unreachable": len(unreachable),
            },
            "cluster": _cluster_facts(client),
            "complete": not failed and not unreachable,
            "parts": {"total": parts_total, "resumed": parts_skipped, "failed": len(failed)},
            "failed_parts": failed,
            "failed_inputs": unreachable,
            "stages": entries,
            "dataset": dataset,
        }
        if "mix" in self.summaries:  # target vs achieved shares (documents and tokens)
            report["mix"] = self.summaries["mix"]
        write_json_atomic(report, self.layout.report())
        if storage_error:
            raise RunIncomplete(self._storage_message(storage_error))
        if failed:
            first = failed[0]
            retries = self.config.cluster.retries
            retried = "" if first["part"] == "global" else f" after {retries} retries"
            raise RunIncomplete(
                f"{len(failed)} part(s) failed{retried} "
                f"(first: part {first['part']} of {first['segment']}: {first['error']}); "
                f"finished parts are kept, re-run the same command to retry the failed ones; "
                f"see {self.layout.report()}"
            )
        if unreachable:
            first_input = unreachable[0]
            raise RunIncomplete(
                f"{len(unreachable)} input(s) could not be reached and were not read (first: "
                f"{first_input['url']}: {first_input['error']}); everything else is written; "
                f"re-run the same command to read them; see {self.layout.report()}"
            )
        return RunSummary(report, parts_total, parts_skipped, merged)


def bind_output(stages: list[Stage], output: str) -> None:
    """Tell the stages that keep driver-built files for their workers (``bind_output``) where
    the run's output folder is: the storage every worker sees."""
    for stage in stages:
        bind = getattr(stage, "bind_output", None)
        if bind is not None:
            bind(Path(output).absolute())


def _library_changes(
    old: dict[str, dict[str, str | None]], new: dict[str, dict[str, str | None]]
) -> list[str]:
    """``"trafilatura 2.2.0 -> 2.3.1"`` for each library whose version differs from the one a
    stage of the segment recorded in the last run."""
    out = []
    for folder, libs in new.items():
        for name, version in libs.items():
            before = old.get(folder, {}).get(name, version)
            if before != version:
                out.append(f"{name} {before} -> {version}")
    return list(dict.fromkeys(out))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _input_url(f: Any) -> str:
    """An input's identity: InputFile.url, or the input itself for other source stages."""
    return getattr(f, "url", None) or str(f)


def _check_resources(client: Any, seg: Segment) -> None:
    """Refuse, in one line, a segment whose tasks need worker resources no worker declares:
    Dask would otherwise hold them forever."""
    workers = client.scheduler_info().get("workers", {}).values()
    need = seg.resources
    for w in workers:
        have = w.get("resources") or {}
        if all(have.get(name, 0) >= amount for name, amount in need.items()):
            return
    wanted = ", ".join(f"{k}={v:g}" for k, v in sorted(need.items()))
    names = "+".join(stage.name for _, stage in seg.stages)
    raise RefineError(
        f"{names} needs Dask workers with resources {wanted}, and none of the cluster's "
        f"{len(workers)} workers declares them (start GPU workers with `dask worker "
        f'--resources "{wanted.replace(", ", " ")}"`, or set cluster.resources for the workers '
        "refine starts)"
    )


def _cluster_facts(client: Any) -> dict[str, Any]:
    try:
        info = client.scheduler_info()
        workers = info.get("workers", {})
        return {
            "scheduler": info.get("address"),
            "workers": len(workers),
            "threads": sum(w.get("nthreads", 0) for w in workers.values()),
        }
    except Exception:
        return {}
