"""Live progress: one bar per segment of map stages (parts done, documents out, keep rate so far,
documents/s), one bar per phase of a global stage (its Dask tasks done), and a closing line per
global stage (documents in -> out)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichProgress:
    """One bar per segment (a fused chain of stages): parts done, documents out, the keep rate so
    far, and documents/s counting only work done in this run, not resumed parts."""

    def __init__(self, console: Console):
        self.console = console

    def __call__(self, name: str, total: int) -> _Bar:
        return _Bar(self.console, name, total)

    def global_stage(self, name: str) -> _GlobalBar:
        """One display for a global stage: a bar per phase (its Dask tasks done)."""
        return _GlobalBar(self.console, name)

    def finished(self, name: str, docs_in: int, docs_out: int, seconds: float) -> None:
        """The closing line of a global stage."""
        keep = f"{100 * docs_out / docs_in:.1f}%" if docs_in else "-"
        rate = f"{docs_in / seconds:,.1f}" if seconds > 0 else "-"
        self.console.print(
            f"[bold]{name}[/bold]: {docs_in:,} -> {docs_out:,} docs  keep {keep}  "
            f"{seconds:,.1f} s  {rate} docs/s"
        )


class _Bar:
    def __init__(self, console: Console, name: str, total: int):
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "parts  {task.fields[docs]} docs out  keep {task.fields[keep]}  "
                "{task.fields[rate]} docs/s"
            ),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(name, total=total, docs=0, rate="-", keep="-")
        self.t0 = time.perf_counter()
        self.docs = 0
        self.docs_in = 0
        self.new_docs = 0
        self.progress.start()

    def advance(self, docs: int, docs_in: int = 0, resumed: bool = False) -> None:
        """One part done: ``docs`` out of the segment, ``docs_in`` into its first stage."""
        self.docs += docs
        self.docs_in += docs_in
        if not resumed:
            self.new_docs += docs
        elapsed = time.perf_counter() - self.t0
        rate = f"{self.new_docs / elapsed:.1f}" if elapsed > 0 and self.new_docs else "-"
        keep = f"{100 * self.docs / self.docs_in:.1f}%" if self.docs_in else "-"
        self.progress.update(self.task, advance=1, docs=self.docs, rate=rate, keep=keep)

    def close(self) -> None:
        self.progress.stop()


class _GlobalBar:
    def __init__(self, console: Console, name: str):
        self.name = name
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("tasks"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tasks: dict[str, Any] = {}
        self.progress.start()

    def phase(self, label: str, total: int) -> Callable[[], None]:
        """Count ``total`` more tasks under ``label``; returns the callback for one task done
        (called from the Dask client's event-loop thread; rich's Progress locks itself)."""
        description = f"{self.name} · {label}"
        if label in self.tasks:
            task = self.tasks[label]
            self.progress.update(task, total=self.progress.tasks[task].total + total)
        else:
            task = self.tasks[label] = self.progress.add_task(description, total=total)
        return lambda: self.progress.update(task, advance=1)

    def close(self) -> None:
        self.progress.stop()
