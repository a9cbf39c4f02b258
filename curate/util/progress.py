"""Progress of long steps (a stage over documents, an ingest over rows and bytes): a rich bar on a terminal;
off a terminal (or with JSON logs) a `progress` event every CURATE_PROGRESS_SECONDS (default 10 s)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from curate.util import log


class Progress:
    """`with Progress("ingest", total, enabled) as bar: bar(n)` advances by n; `bar.describe(text)` names what
    is being worked on (a shard). Silent when not enabled (the Python API's default)."""

    def __init__(self, name: str, total: int, enabled: bool, unit: str = "docs"):
        self.name, self.total, self.unit = name, total, unit
        self.done, self.what = 0, ""
        self.bar: Any = None
        self.lines = False
        self.every = float(os.environ.get("CURATE_PROGRESS_SECONDS", 10))
        self.started = self.last = time.monotonic()
        if not (enabled and total):
            return
        if sys.stderr.isatty() and not log.is_json():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Rich

            self.bar = Rich(TextColumn(f"{name:<12}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            TextColumn("{task.description}"), console=Console(stderr=True))
            self.task = self.bar.add_task("", total=total, rate="")
        else:
            self.lines = True

    def __enter__(self) -> Progress:
        if self.bar:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar:
            self.bar.stop()

    @property
    def active(self) -> bool:
        """Whether anything is shown (a bar or progress lines)."""
        return bool(self.bar) or self.lines

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.bar:
            self.bar.update(self.task, advance=n, rate=f"{self.rate(now):,.0f}/s")
        elif self.lines and now - self.last >= self.every:
            self.last = now
            rate = self.rate(now)
            eta = (self.total - self.done) / rate if rate > 0 else None
            log.event("progress", "info", step=self.name, done=self.done, total=self.total, unit=self.unit,
                      rate=round(rate, 1), eta_seconds=None if eta is None else round(eta, 1),
                      **({"at": self.what} if self.what else {}))

    def rate(self, now: float) -> float:
        return self.done / max(now - self.started, 1e-9)

    def describe(self, text: str) -> None:
        self.what = text
        if self.bar:
            self.bar.update(self.task, description=text)
