"""Modules a process can do without: a hidden module fails to import as if it were not installed, so a
library that imports it optionally (DuckDB, pyarrow, presidio-anonymizer) does not pay for loading it."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class _Hidden(importlib.abc.MetaPathFinder):
    def __init__(self, names: frozenset[str]):
        self.names = names

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by curate)", name=name)


def hide(*names: str) -> importlib.abc.MetaPathFinder:
    """Hide the named top-level modules that are not imported yet, until `sys.meta_path` drops the finder."""
    finder = _Hidden(frozenset(n for n in names if n not in sys.modules))
    sys.meta_path.insert(0, finder)
    return finder


@contextmanager
def hidden(*names: str) -> Iterator[None]:
    """Hide the named modules while the block runs (typically: while importing a library)."""
    finder = hide(*names)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
