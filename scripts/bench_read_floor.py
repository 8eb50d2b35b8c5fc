"""The floor of reading a JSON Lines file with refine's libraries: what inflating it and parsing
it with Arrow cost alone, next to refine's whole ``read`` and datatrove's ``JsonlReader``.

    python scripts/bench_read_floor.py FILE.jsonl.gz [FILE ...] [--repeat 3]

Each contender runs in a fresh child process on one thread (``pyarrow.set_cpu_count(1)``);
each child reads the file once untimed, then ``--repeat`` times timed, and the least CPU seconds
(user + system, ``time.process_time``) is kept:

- ``inflate``: the file's decompressed bytes read into one reused 8 MiB buffer, cut at the last
  newline (python-isal's ``igzip`` for ``.gz``, as refine reads it), nothing else;
- ``inflate_parse``: the same, each block of whole lines parsed by ``pyarrow.json.read_json``
  against the schema refine's ``read`` would use for the file (every field: ``metadata_fields:
  all``), nothing kept;
- ``refine``, ``refine_core`` and ``datatrove``: as in ``scripts/bench_read_text.py``.

So ``datatrove / inflate_parse`` is the most that refine's JSON read can gain over datatrove
with these two libraries, whatever else it does. Prints one JSON line:
``{"bench": "read_floor", "files": {NAME: {CONTENDER: cpu_s, ..., "records_parsed": N}}}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CONTENDERS = ("inflate", "inflate_parse", "refine", "refine_core", "datatrove")
BLOCK = 8 << 20


def blocks(path: str):
    """The file's decompressed bytes in blocks of whole lines (a view valid until the next)."""
    from refine.pipeline.inputs import open_url

    with open_url(path).open() as raw:
        if path.endswith(".gz"):
            from isal import igzip

            f = igzip.IGzipFile(fileobj=raw)
        else:
            f = raw
        buf, have = bytearray(BLOCK), 0
        while True:
            if have == len(buf):
                buf += bytearray(len(buf))
            got = f.readinto(memoryview(buf)[have:])
            size = have + got
            cut = size if got == 0 else buf.rfind(b"\n", 0, size) + 1
            if cut:
                yield memoryview(buf)[:cut]
            if got == 0:
                return
            buf[: size - cut] = buf[cut:size]
            have = size - cut


def reader(who: str, path: str):
    if who not in ("inflate", "inflate_parse"):
        import bench_read_text

        return bench_read_text.prepare(who, path, True, 16)[1]
    import pyarrow as pa
    import pyarrow.json as pj

    schema = None
    if who == "inflate_parse":
        from refine.extract import textfiles
        from refine.extract.stages import ReadParams, ReadWarc

        stage = ReadWarc(ReadParams())
        part = stage.plan(stage.resolve_inputs([path]))[0]
        schema = textfiles._json_schema(part.spec.fields)

    def run():
        rows = 0
        for block in blocks(path):
            if schema is not None:
                rows += pj.read_json(
                    pa.BufferReader(block),
                    read_options=pj.ReadOptions(use_threads=False, block_size=len(block) + 1),
                    parse_options=pj.ParseOptions(
                        explicit_schema=schema, unexpected_field_behavior="ignore"
                    ),
                ).num_rows
        return rows

    return run


def child(who: str, path: str, repeat: int) -> dict:
    import pyarrow as pa

    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    run = reader(who, path)
    got = run()
    best = float("inf")
    for _ in range(repeat):
        c0 = time.process_time()
        run()
        best = min(best, time.process_time() - c0)
    return {"cpu_s": best, "rows": got if who == "inflate_parse" else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--contenders", default=",".join(CONTENDERS))
    ap.add_argument("--child", nargs=2, metavar=("CONTENDER", "FILE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.child[1], a.repeat)))
        return 0
    if not a.files:
        ap.error("give at least one JSON Lines file")
    out: dict[str, dict] = {}
    for path in a.files:
        res = out.setdefault(Path(path).name, {})
        for who in a.contenders.split(","):
            if who not in CONTENDERS:
                ap.error(f"unknown contender {who!r}: {', '.join(CONTENDERS)}")
            cmd = [sys.executable, __file__, "--child", who, path, "--repeat", str(a.repeat)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{who} on {path} failed:\n{proc.stderr[-2000:]}")
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            res[who] = round(got["cpu_s"], 4)
            if got["rows"] is not None:
                res["records_parsed"] = got["rows"]
            print(f"{Path(path).name} {who}: {res[who]:.3f} CPU-s", file=sys.stderr)
    print(json.dumps({"bench": "read_floor", "repeat": a.repeat, "files": out}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
