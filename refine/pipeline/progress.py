"""Live progress per segment: parts done, documents out, documents per second."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class RichProgress:
    """One bar per segment (a fused chain of stages): parts done, documents out, the keep rate so
    far, and documents/s counting only work done in this run, not resumed parts."""

    def __init__(self, console: Console):
        self.console = console

    def __call__(self, name: str, total: int) -> _Bar:
        return _Bar(self.console, name, total)


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
