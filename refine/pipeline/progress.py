"""Live progress: one bar per segment of map stages (parts done, documents out, keep rate so far,
documents/s) under a line naming its stages, one bar per phase of a global stage (its Dask tasks
done), and a closing line per global stage (documents in -> out)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Column


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
    """The segment's stages on a line of their own (wrapped, however many are fused), then a bar
    that fills what the numbers leave of the terminal: readable from 80 columns up."""

    def __init__(self, console: Console, name: str, total: int):
        console.print(f"[bold]{' + '.join(name.split('+'))}[/bold]", highlight=False)
        self.progress = Progress(
            _bar(),
            MofNCompleteColumn(),
            TextColumn(
                "parts  kept {task.fields[docs]} ({task.fields[keep]})  {task.fields[rate]}"
            ),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(name, total=total, docs="0", rate="- docs/s", keep="-")
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
        per_s = self.new_docs / elapsed if elapsed > 0 and self.new_docs else None
        rate = "- docs/s" if per_s is None else f"{per_s:,.{0 if per_s >= 100 else 1}f} docs/s"
        keep = f"{100 * self.docs / self.docs_in:.1f}%" if self.docs_in else "-"
        self.progress.update(self.task, advance=1, docs=f"{self.docs:,}", rate=rate, keep=keep)

    def close(self) -> None:
        self.progress.stop()


class _GlobalBar:
    def __init__(self, console: Console, name: str):
        self.name = name
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            _bar(),
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


def _bar() -> BarColumn:
    """A bar of what the other columns leave of the terminal, 10 to 40 columns wide."""
    return BarColumn(bar_width=None, table_column=Column(min_width=10, max_width=40))
