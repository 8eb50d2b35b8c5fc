"""CPU seconds of every process of a command's tree, by role: where a run's CPU goes.

    python scripts/cpu_by_process.py -- refine run out/refine.yaml --no-progress

Samples the tree with psutil every ``--interval`` seconds; a process's CPU is its user + system
time at its last sample (a process that lives less than one interval may be missed, so the
total is a lower bound; the command's own children-time from ``wait4`` is printed beside it as
the upper reference). Roles are read from the command line: the ``refine run`` driver (runner +
Dask scheduler), the nanny, the Dask worker, the extraction child, others by executable name.
Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import psutil


def role(cmdline: list[str], pid: int, root: int) -> str:
    text = " ".join(cmdline)
    if pid == root:
        return "driver"
    if "refine.extract" in text or "extract_child" in text:
        return "extraction child"
    if "multiprocessing.resource_tracker" in text:
        return "resource tracker"
    if "multiprocessing.spawn" in text:  # the nanny spawns the Dask worker this way
        return "dask process"
    return os.path.basename(cmdline[0]) if cmdline else "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=0.05)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command after --")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=sys.stderr)  # our stdout is the one JSON line
    root = psutil.Process(proc.pid)
    seen: dict[int, dict] = {}
    while proc.poll() is None:
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                with p.oneshot():
                    cpu = p.cpu_times()
                    entry = seen.setdefault(
                        p.pid, {"cmdline": p.cmdline(), "ppid": p.ppid(), "rss_peak_mb": 0.0}
                    )
                    entry["cpu"] = cpu.user + cpu.system
                    rss = p.memory_info().rss / 2**20
                    entry["rss_peak_mb"] = max(entry["rss_peak_mb"], rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        time.sleep(args.interval)
    wall = time.perf_counter() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    # a LocalCluster's nannies live in the driver; a `dask worker` CLI nanny is a process whose
    # child is the worker: name them by their place in the tree
    for pid, e in seen.items():
        e["role"] = role(e["cmdline"], pid, proc.pid)
    for pid, e in seen.items():
        if e["role"] == "dask process":
            spawned = any(o["ppid"] == pid and o["role"] == "dask process" for o in seen.values())
            e["role"] = "nanny" if spawned else "dask worker"
    by_role: dict[str, float] = {}
    for e in seen.values():
        by_role[e["role"]] = round(by_role.get(e["role"], 0.0) + e["cpu"], 2)
    print(
        json.dumps(
            {
                "returncode": proc.returncode,
                "wall_seconds": round(wall, 2),
                "cpu_seconds_sampled": round(sum(e["cpu"] for e in seen.values()), 2),
                "cpu_seconds_rusage": round(usage.ru_utime + usage.ru_stime, 2),
                "by_role": by_role,
                "processes": [
                    {
                        "pid": pid,
                        "role": e["role"],
                        "cpu": round(e["cpu"], 2),
                        "rss_peak_mb": round(e["rss_peak_mb"], 1),
                    }
                    for pid, e in sorted(seen.items())
                ],
            }
        )
    )
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
