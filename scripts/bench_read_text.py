"""Text inputs, one worker: refine's ``read`` stage vs a bare pyarrow / orjson loop vs datatrove.

    python scripts/bench_read_text.py [--mb 200] [--repeat 3] [--inner 2] [--row-group 1000]
                                      [--compression snappy] [--work DIR] [--slice-mb 16]
                                      [--formats parquet,dolma,flat] [--contenders ...] [--cpu K]

Corpus: the 697 real dolma-format records of ``shared/data/text/cc-main-2019-30-en.jsonl.gz``
(27 of them with an empty text) replicated, each copy's ids suffixed ``-<copy>`` so they stay
unique, until the dolma JSON reaches ``--mb`` MiB (the last copy may be partial). The same
records are written once (reused from ``--work`` when already there) as:

- ``parquet``: FineWeb's columns (text, id, dump, url, date, file_path, language,
  language_score, token_count; url = metadata.warc_url, date = created as ``...T..:..:..Z``,
  dump CC-MAIN-2019-30, a made-up file_path, language "en", a made-up score, token_count ~
  4/3 of the words), row groups of ``--row-group`` rows, ``--compression``. Defaults: snappy
  and 1000 rows, the defaults of datatrove's ``ParquetWriter`` (compression="snappy", one
  row group per batch_size=1000 documents), the writer whose file naming FineWeb's
  ``data/CC-MAIN-*/000_0000N.parquet`` files carry;
- ``dolma``: ``.jsonl.gz`` with every original field (nested ``metadata``, and ``attributes``,
  whose keys over the file make a 145-field struct);
- ``flat``: ``.jsonl.gz`` of the FineWeb columns above (JSON not dominated by ``attributes``).

Contenders, each run in a fresh ``python`` child (nothing imported or cached leaks between
them), one process, one thread: ``OMP_NUM_THREADS=1``, ``pyarrow.set_cpu_count(1)`` and
``set_io_thread_count(1)`` in every child, refine's included (``--cpu K`` also pins every
child to CPU K with ``taskset``). Each child first reads a small warm-up file of the same format
(first 100 records: lazy imports, Arrow kernel and fsspec registries... paid untimed), then
reads the whole file ``--inner`` times. Timed: the read itself, after imports and set-up: CPU
seconds of the child, all threads, user + system (``time.process_time``, exact; the user/system
split from ``getrusage(RUSAGE_SELF)``, which counts in clock ticks), and wall seconds. The best
of the child's reads is kept (its first read also pays the kernel for every page it touches
first, reported apart as ``first_read_cpu_s``; later reads reuse the allocator's memory, as a
long-running worker does). The whole child (imports included) is ``process_cpu_s``.

- ``bare``: the least any reader must do. Parquet: ``pq.ParquetFile(path).iter_batches()``
  over all columns, a batch per row group (``batch_size`` = its rows), each batch filtered to
  its non-empty texts (both readers drop those), into one ``pa.Table``. JSONL:
  ``gzip.open(path, "rb")``, ``orjson.loads`` per line, records with an empty text skipped,
  every top-level field appended to a Python list per field, then one ``pa.array`` per field
  (types inferred; nested objects become structs) into one ``pa.Table``.
- ``bare_core``: the same with only the fields refine maps (text, id, and url/date where the
  file has them: FineWeb's columns yes, dolma no): the bare match of ``refine_core``.
- ``refine``: the ``read`` stage as a pipeline runs it: ``ReadWarc(ReadParams(slice_mb=...))``,
  ``resolve_inputs`` and ``plan`` (driver set-up, reported as ``setup_cpu_s``, not timed), then
  ``read(part)`` for every part (timed: the documents table and the decision log of each part),
  ``metadata_fields: all`` (its default: every other field becomes a column).
- ``refine_core``: the same with ``metadata_fields: []`` (what carrying metadata costs).
- ``datatrove``: ``JsonlReader`` / ``ParquetReader`` (datatrove 0.10.1, default options: all
  fields read into ``Document.metadata``) on the file's folder, driven as an executor drives a
  reader: iterate ``reader.run(rank=0, world_size=1)``, counting the documents and their
  characters and keeping none (lighter than the tables the others build).

Every contender must give the same documents (count and total text characters), asserted.
``--repeat`` rounds run every contender once per format, the order reversed every other round
(spreads a busy machine's disturbance); each contender's minimum CPU seconds is kept (noise only
adds time) and the ratios are of those minimums, with the spread of the per-round ratios
(``ratios``; ``ratios_user_cpu`` the same with user CPU only, which page faults disturb less):

- ``refine_vs_bare`` = refine CPU / bare CPU (target <= 1.10), ``refine_core_vs_bare_core``;
- ``refine_vs_datatrove`` = datatrove CPU / refine CPU (target >= 2), ``refine_core_vs_datatrove``;
- ``metadata_cost`` = refine CPU / refine_core CPU.

Prints a table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = Path("text") / "cc-main-2019-30-en.jsonl.gz"
MiB = 2**20

FORMATS = ("parquet", "dolma", "flat")
CONTENDERS = ("bare", "bare_core", "refine", "refine_core", "datatrove")
FINEWEB_COLUMNS = (
    "text",
    "id",
    "dump",
    "url",
    "date",
    "file_path",
    "language",
    "language_score",
    "token_count",
)
#: The fields refine maps to its own columns (text_field, id_field, url_field, date_field).
CORE_FIELDS = ("text", "id", "url", "date")

BARE_DOC = {
    "parquet": "pq.ParquetFile.iter_batches(batch_size=rows of a row group; all columns, "
    "bare_core: text,id,url,date), each batch filtered to non-empty texts, "
    "pa.Table.from_batches",
    "jsonl": "gzip.open(rb) + orjson.loads per line, empty texts skipped, each top-level field "
    "(bare_core: text,id[,url,date]) into a list, one pa.array per field, pa.table",
}


# --- corpus ----------------------------------------------------------------------------------


def data_dir(arg: str | None) -> Path:
    """``--data``, ``$REFINE_TEST_DATA`` or ``../shared/data`` beside the repo (tests/support)."""
    if arg:
        return Path(arg)
    env = os.environ.get("REFINE_TEST_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_source(data: Path) -> list[dict]:
    import orjson

    with gzip.open(data / SOURCE, "rb") as f:
        return [orjson.loads(line) for line in f if line.strip()]


def fineweb_row(rec: dict, i: int) -> dict:
    """FineWeb's columns, derived from one dolma record (``i``: its index in the source)."""
    meta = rec.get("metadata") or {}
    created = rec.get("created") or ""
    text = rec["text"]
    return {
        "text": text,
        "id": rec["id"],
        "dump": "CC-MAIN-2019-30",
        "url": meta.get("warc_url"),
        "date": created[:19] + "Z" if len(created) >= 19 else None,
        "file_path": "s3://commoncrawl/crawl-data/CC-MAIN-2019-30/segments/1563195525133.20/"
        f"warc/CC-MAIN-20190717081450-20190717103450-{i % 800:05d}.warc.gz",
        "language": "en",
        "language_score": round(0.65 + (i * 7919 % 3500) / 10000, 4),
        "token_count": len(text.split()) * 4 // 3,
    }


def replicate(records: list[dict], mb: float) -> list[dict]:
    """Copies of ``records`` (ids suffixed ``-<copy>``) until their JSON reaches ``mb`` MiB."""
    import orjson

    target = mb * MiB
    out: list[dict] = []
    size = 0
    copy = 0
    while size < target:
        for rec in records:
            r = dict(rec)
            r["id"] = f"{rec['id']}-{copy}"
            out.append(r)
            size += len(orjson.dumps(r)) + 1
            if size >= target:
                break
        copy += 1
    return out


WARM_RECORDS = 100  # records of the warm-up file each child reads first (untimed)


def write_corpus(work: Path, args) -> tuple[dict[str, Path], dict[str, Path]]:
    """The files of each format and the small warm-up files (first ``WARM_RECORDS`` records,
    in a ``warm/`` folder of their own), written once: reused when their names say the same
    settings."""
    tag = f"{args.mb:g}mb"
    names = {
        "parquet": ("parquet", f"fineweb-{tag}-rg{args.row_group}-{args.compression}.parquet"),
        "dolma": ("dolma", f"dolma-{tag}-gz{args.gzip_level}.jsonl.gz"),
        "flat": ("flat", f"fineweb-{tag}-gz{args.gzip_level}.jsonl.gz"),
    }
    paths = {f: work / names[f][0] / names[f][1] for f in args.formats}
    warm = {f: work / names[f][0] / "warm" / names[f][1] for f in args.formats}
    if all(p.is_file() for p in [*paths.values(), *warm.values()]):
        return paths, warm
    source = data_dir(args.data) / SOURCE
    if not source.is_file():
        raise SystemExit(f"{source} not found: set --data or REFINE_TEST_DATA")
    base = load_source(data_dir(args.data))
    index = {r["id"]: i for i, r in enumerate(base)}
    records = replicate(base, args.mb)
    flat = [fineweb_row(r, index[r["id"].rsplit("-", 1)[0]]) for r in records]
    for fmt in args.formats:
        rows = records if fmt == "dolma" else flat
        write_file(fmt, rows, paths[fmt], args)
        write_file(fmt, rows[:WARM_RECORDS], warm[fmt], args)
    return paths, warm


def write_file(fmt: str, rows: list[dict], path: Path, args) -> None:
    import orjson
    import pyarrow as pa
    import pyarrow.parquet as pq

    if path.is_file():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "parquet":
        schema = pa.schema(
            [(c, pa.string()) for c in FINEWEB_COLUMNS[:7]]
            + [("language_score", pa.float64()), ("token_count", pa.int64())]
        )
        table = pa.Table.from_pylist(rows, schema=schema)
        pq.write_table(table, tmp, row_group_size=args.row_group, compression=args.compression)
    else:
        with gzip.open(tmp, "wb", compresslevel=args.gzip_level) as f:
            for r in rows:
                f.write(orjson.dumps(r) + b"\n")
    tmp.rename(path)


def corpus_info(paths: dict[str, Path]) -> dict:
    import pyarrow.parquet as pq

    info = {}
    for fmt, path in paths.items():
        entry = {"path": str(path), "bytes": path.stat().st_size}
        if fmt == "parquet":
            md = pq.ParquetFile(path).metadata
            entry.update(
                rows=md.num_rows,
                row_groups=md.num_row_groups,
                compression=md.row_group(0).column(0).compression,
            )
        else:
            with gzip.open(path, "rb") as f:
                n = raw = 0
                for line in f:
                    n += 1
                    raw += len(line)
            entry.update(rows=n, json_bytes=raw)
        info[fmt] = entry
    return info


# --- contenders (each in its own child process) ------------------------------------------------


def _pin_one_thread() -> None:
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)


def bare_parquet(path: str, core: bool):
    """Rows out, text characters, and the table (kept alive until timed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def run():
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
        columns = [c for c in CORE_FIELDS if c in names] if core else None
        batches = []
        rows = pf.metadata.row_group(0).num_rows if pf.metadata.num_row_groups else 1000
        for b in pf.iter_batches(batch_size=rows, columns=columns):  # one batch per row group
            keep = pc.greater(pc.binary_length(b.column("text")), 0)
            batches.append(b.filter(keep))
        return pa.Table.from_batches(batches)

    return run


def bare_jsonl(path: str, core: bool):
    import orjson
    import pyarrow as pa

    def run():
        loads = orjson.loads
        keys: list[str] | None = None
        cols: dict[str, list] = {}
        with gzip.open(path, "rb") as f:
            for line in f:
                rec = loads(line)
                if not rec.get("text"):
                    continue
                if keys is None:
                    keys = [k for k in (CORE_FIELDS if core else rec) if k in rec]
                    cols = {k: [] for k in keys}
                for k in keys:
                    cols[k].append(rec.get(k))
        arrays = {}
        for k, values in cols.items():
            if k == "text":
                arrays[k] = pa.array(values, pa.large_string())
            elif k in CORE_FIELDS:
                arrays[k] = pa.array(values, pa.string())
            else:
                arrays[k] = pa.array(values)
        return pa.table(arrays)

    return run


def prepare(who: str, path: str, jsonl: bool, slice_mb: float):
    """``(setup CPU seconds, read)`` for one contender on one file; ``read()`` returns
    ``(table or None, documents out, records seen or None, text characters or None)``."""
    import pyarrow as pa

    if who in ("bare", "bare_core"):
        run = (bare_jsonl if jsonl else bare_parquet)(path, core=who == "bare_core")

        def read_bare():
            table = run()
            return table, table.num_rows, None, None

        return 0.0, read_bare
    if who in ("refine", "refine_core"):
        from refine.extract.stages import ReadParams, ReadWarc

        params: dict = {"slice_mb": slice_mb}
        if who == "refine_core":
            params["metadata_fields"] = []
        c0 = time.process_time()
        stage = ReadWarc(ReadParams(**params))
        parts = stage.plan(stage.resolve_inputs([path]))
        setup = time.process_time() - c0

        def read_refine():
            tables, records = [], 0
            for part in parts:
                res = stage.read(part)
                tables.append(res.table)
                records += res.stats.docs_in
            table = pa.concat_tables(tables)
            return table, table.num_rows, records, None

        return setup, read_refine
    if who == "datatrove":
        from datatrove.pipeline.readers import JsonlReader, ParquetReader
        from datatrove.utils.logging import logger

        logger.remove()  # its per-file INFO lines and the empty-text warning: not measured
        folder, name = os.path.split(path)
        reader = (JsonlReader if jsonl else ParquetReader)(folder, glob_pattern=name)

        def read_datatrove():
            n = c = 0
            for doc in reader.run(rank=0, world_size=1):
                n += 1
                c += len(doc.text)
            return None, n, None, c

        return 0.0, read_datatrove
    raise SystemExit(f"unknown contender {who!r}")


def _cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime, ru.ru_stime


def run_child(spec: dict) -> dict:
    """One contender on one file, in this (fresh) process: what it read and what it cost.

    First a warm-up read of a small file of the same format (first-use costs: lazy imports,
    Arrow kernel and fsspec registries...), untimed, then ``inner`` timed reads of the whole
    file, each one's CPU seconds (every thread of the child: ``process_time``, and the
    user/system split from ``getrusage``) and wall seconds. The first read of a fresh process
    also pays the kernel for the memory it touches first (system time, page faults); later
    reads reuse the allocator's memory, as a long-running worker does. Characters are counted
    inside the timed read for datatrove (it keeps no table), after the clock for the others."""
    _pin_one_thread()
    fmt, who = spec["format"], spec["contender"]
    jsonl = fmt != "parquet"
    if spec.get("warm"):
        prepare(who, spec["warm"], jsonl, spec["slice_mb"])[1]()
    setup, read = prepare(who, spec["path"], jsonl, spec["slice_mb"])
    reads = []
    out: dict = {}
    for k in range(spec.get("inner", 1)):
        t0, c0, (u0, s0) = time.perf_counter(), time.process_time(), _cpu()
        table, docs, records, chars = read()
        wall, cpu, (u1, s1) = time.perf_counter() - t0, time.process_time() - c0, _cpu()
        reads.append(
            {"cpu_s": cpu, "user_s": u1 - u0, "sys_s": s1 - s0, "wall_s": wall, "docs": docs}
        )
        if k == 0:
            text_bytes = None
            if table is not None:  # after the clock: counted over the table the read built
                import pyarrow.compute as pc

                chars = int(pc.sum(pc.utf8_length(table["text"])).as_py() or 0)
                text_bytes = int(pc.sum(pc.binary_length(table["text"])).as_py() or 0)
            out = {"docs": docs, "records": records, "chars": chars, "text_bytes": text_bytes}
        elif docs != out["docs"]:
            raise SystemExit(f"{who}: read {k} gave {docs} documents, read 0 {out['docs']}")
        del table
    ru = resource.getrusage(resource.RUSAGE_SELF)
    best = min(reads, key=lambda r: r["cpu_s"])
    return out | {
        "cpu_s": best["cpu_s"],
        "user_s": best["user_s"],
        "sys_s": best["sys_s"],
        "wall_s": min(r["wall_s"] for r in reads),
        "first_cpu_s": reads[0]["cpu_s"],
        "reads": reads,
        "setup_cpu_s": setup,
        "process_cpu_s": ru.ru_utime + ru.ru_stime,
        "max_rss_mib": ru.ru_maxrss / 1024,
    }


def spawn(spec: dict, cpu: int | None) -> dict:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(
            f"{spec['contender']} on {spec['format']} failed (rc {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- report ------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 4),
        "min": round(min(values), 4),
        "max": round(max(values), 4),
    }


def ratio(runs: dict, num: str, den: str, key: str = "cpu_s") -> dict | None:
    """min ``key`` of ``num`` / min ``key`` of ``den``, and the spread of the same ratio in each
    round (the two measured side by side)."""
    if num not in runs or den not in runs:
        return None
    if min(r[key] for r in runs[den]) <= 0 or any(r[key] <= 0 for r in runs[den]):
        return None  # getrusage counts in clock ticks: a tiny read can show 0 user seconds
    best = min(r[key] for r in runs[num]) / min(r[key] for r in runs[den])
    per_round = [a[key] / b[key] for a, b in zip(runs[num], runs[den], strict=True)]
    return {"ratio": round(best, 4), "per_round": spread(per_round)}


RATIOS = {
    # name: (numerator, denominator)
    "refine_vs_bare": ("refine", "bare"),
    "refine_core_vs_bare_core": ("refine_core", "bare_core"),
    "refine_vs_datatrove": ("datatrove", "refine"),
    "refine_core_vs_datatrove": ("datatrove", "refine_core"),
    "metadata_cost": ("refine", "refine_core"),
}


def summarize(fmt: str, runs: dict, text_bytes: int) -> dict:
    contenders = {}
    for name, rs in runs.items():
        cpu = min(r["cpu_s"] for r in rs)
        docs = rs[0]["docs"]
        contenders[name] = {
            "docs": docs,
            "chars": rs[0]["chars"],
            "cpu_s": round(cpu, 4),
            "user_s": round(min(r["user_s"] for r in rs), 4),
            "sys_s": round(min(r["sys_s"] for r in rs), 4),
            "wall_s": round(min(r["wall_s"] for r in rs), 4),
            "first_read_cpu_s": round(min(r["first_cpu_s"] for r in rs), 4),
            "docs_per_cpu_s": round(docs / cpu, 1),
            "text_mib_per_cpu_s": round(text_bytes / MiB / cpu, 2),
            "setup_cpu_s": round(min(r["setup_cpu_s"] for r in rs), 4),
            "process_cpu_s": round(min(r["process_cpu_s"] for r in rs), 4),
            "max_rss_mib": round(max(r["max_rss_mib"] for r in rs), 1),
            "cpu_s_runs": [round(r["cpu_s"], 4) for r in rs],
        }
    ratios = {k: ratio(runs, a, b) for k, (a, b) in RATIOS.items()}
    ratios = {k: v for k, v in ratios.items() if v is not None}
    user = {k: ratio(runs, a, b, "user_s") for k, (a, b) in RATIOS.items()}
    user = {k: v for k, v in user.items() if v is not None}
    targets = {}
    if "refine_vs_bare" in ratios:
        targets["refine_vs_bare<=1.10"] = ratios["refine_vs_bare"]["ratio"] <= 1.10
    if "refine_vs_datatrove" in ratios:
        targets["refine_vs_datatrove>=2"] = ratios["refine_vs_datatrove"]["ratio"] >= 2.0
    bare = BARE_DOC["parquet" if fmt == "parquet" else "jsonl"]
    return {
        "contenders": contenders,
        "ratios": ratios,
        "ratios_user_cpu": user,
        "targets_met": targets,
        "bare_loop": bare,
    }


def print_table(result: dict) -> None:
    print(
        f"{'format':8s} {'contender':12s} {'docs':>7s} {'cpu s':>7s} {'user s':>7s} "
        f"{'sys s':>6s} {'wall s':>7s} {'docs/cpu-s':>10s} {'MiB/cpu-s':>9s} {'vs bare':>7s} "
        f"{'1st read':>8s} {'rss MiB':>7s}"
    )
    for fmt, entry in result["formats"].items():
        cs = entry["contenders"]
        for name, c in cs.items():
            base = cs.get("bare_core" if name.endswith("_core") else "bare")
            vs = f"{c['cpu_s'] / base['cpu_s']:.2f}x" if base else ""
            print(
                f"{fmt:8s} {name:12s} {c['docs']:>7,d} {c['cpu_s']:>7.3f} {c['user_s']:>7.3f} "
                f"{c['sys_s']:>6.3f} {c['wall_s']:>7.3f} {c['docs_per_cpu_s']:>10,.0f} "
                f"{c['text_mib_per_cpu_s']:>9.1f} {vs:>7s} {c['first_read_cpu_s']:>8.3f} "
                f"{c['max_rss_mib']:>7.0f}"
            )
        for k, v in entry["ratios"].items():
            pr = v["per_round"]
            u = entry["ratios_user_cpu"].get(k)
            print(
                f"{fmt:8s}   {k:25s} cpu {v['ratio']:.3f} (per round: median {pr['median']:.3f} "
                f"[{pr['min']:.3f} .. {pr['max']:.3f}])"
                + (f"; user cpu {u['ratio']:.3f}" if u else "")
            )
        for k, ok in entry["targets_met"].items():
            print(f"{fmt:8s}   target {k}: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--data", help="shared data folder (default: $REFINE_TEST_DATA or ../shared/data)"
    )
    ap.add_argument("--mb", type=float, default=200, help="MiB of dolma JSON in the corpus")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (minimum kept)")
    ap.add_argument(
        "--inner", type=int, default=2, help="timed reads of the file in each child (minimum kept)"
    )
    ap.add_argument("--row-group", type=int, default=1000, help="Parquet rows per row group")
    ap.add_argument("--compression", default="snappy", choices=["snappy", "zstd", "gzip", "none"])
    ap.add_argument("--gzip-level", type=int, default=6, help="gzip level of the .jsonl.gz files")
    ap.add_argument("--slice-mb", type=float, default=16, help="refine's read slice_mb")
    ap.add_argument("--work", type=Path, help="keep (and reuse) the corpus here")
    ap.add_argument("--formats", default=",".join(FORMATS))
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--cpu", type=int, help="run every child on this CPU (taskset -c)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        print(json.dumps(run_child(json.loads(args.child))))
        return 0

    args.formats = [f for f in args.formats.split(",") if f]
    contenders = [c for c in args.contenders.split(",") if c]
    for f in args.formats:
        if f not in FORMATS:
            ap.error(f"unknown format {f!r}: {', '.join(FORMATS)}")
    for c in contenders:
        if c not in CONTENDERS:
            ap.error(f"unknown contender {c!r}: {', '.join(CONTENDERS)}")
    if args.compression == "none":
        args.compression = "NONE"

    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_read_text-")
        work = Path(tmp.name)
    else:
        work = args.work
        work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        paths, warm = write_corpus(work, args)
        info = corpus_info(paths)
        print(
            f"corpus ready in {time.perf_counter() - t0:.1f} s: "
            + ", ".join(
                f"{fmt} {e['bytes'] / MiB:.1f} MiB ({e['rows']:,} records)"
                for fmt, e in info.items()
            ),
            flush=True,
        )
        runs: dict[str, dict[str, list[dict]]] = {f: {c: [] for c in contenders} for f in paths}
        for r in range(args.repeat):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for fmt, path in paths.items():
                for who in order:
                    spec = {
                        "path": str(path),
                        "format": fmt,
                        "contender": who,
                        "slice_mb": args.slice_mb,
                        "warm": str(warm[fmt]),
                        "inner": args.inner,
                    }
                    res = spawn(spec, args.cpu)
                    runs[fmt][who].append(res)
                    print(
                        f"round {r + 1}/{args.repeat} {fmt:8s} {who:12s} docs {res['docs']:>8,d} "
                        f"cpu {res['cpu_s']:7.3f} s wall {res['wall_s']:7.3f} s",
                        flush=True,
                    )
        # every contender, every round, every format: the same documents
        seen = {
            (fmt, who): {(x["docs"], x["chars"]) for x in rs}
            for fmt, by in runs.items()
            for who, rs in by.items()
        }
        if len(set().union(*seen.values())) != 1:
            raise SystemExit(f"contenders disagree on the documents (docs, chars): {seen}")
        docs, chars = next(iter(next(iter(seen.values()))))
        records = info[next(iter(info))]["rows"]
        for fmt, by in runs.items():
            for who, rs in by.items():
                for x in rs:
                    if x["records"] is not None and x["records"] != records:
                        raise SystemExit(f"{who} on {fmt} saw {x['records']} of {records} records")
        text_bytes = max(
            (x["text_bytes"] or 0 for by in runs.values() for rs in by.values() for x in rs),
            default=0,
        )
        result = {
            "bench": "read_text",
            "mb": args.mb,
            "records": records,
            "docs": docs,
            "chars": chars,
            "text_bytes": text_bytes,
            "repeat": args.repeat,
            "inner": args.inner,
            "row_group": args.row_group,
            "compression": args.compression,
            "slice_mb": args.slice_mb,
            "threads": 1,
            "files": {
                f: {k: v for k, v in e.items() if k != "path"} | {"name": Path(e["path"]).name}
                for f, e in info.items()
            },
            "formats": {fmt: summarize(fmt, runs[fmt], text_bytes) for fmt in paths},
        }
        print()
        print(
            f"{records:,} records, {docs:,} documents out (non-empty text), "
            f"{text_bytes / MiB:.1f} MiB of text; one process, one thread; best of "
            f"{args.repeat} interleaved rounds x {args.inner} reads; CPU s (user + sys) of the "
            f"read only"
        )
        for kind, doc in BARE_DOC.items():
            print(f"bare loop, {kind}: {doc}")
        print_table(result)
        print(json.dumps(result))
    finally:
        if tmp is not None:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
