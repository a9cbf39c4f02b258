"""Progress of long steps (a stage over documents, an ingest over rows): a rich bar on a terminal."""

from __future__ import annotations

from typing import Any


class Progress:
    """`with Progress("ingest", total, enabled) as bar: bar(n)` advances by n; silent when not enabled.
    `bar.describe(text)` shows what is being worked on (a shard's name)."""

    def __init__(self, name: str, total: int, enabled: bool, unit: str = "docs"):
        self.name, self.total, self.unit = name, total, unit
        self.bar: Any = None
        if enabled and total:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Rich

            self.bar = Rich(TextColumn(f"{name:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TextColumn("{task.description}"), console=Console(stderr=True))
            self.task = self.bar.add_task("", total=total)

    def __enter__(self) -> Progress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    def __call__(self, n: int) -> None:
        if self.bar:
            self.bar.advance(self.task, n)

    def describe(self, text: str) -> None:
        if self.bar:
            self.bar.update(self.task, description=text)
