"""DuckDB helpers. DuckDB 2 keeps a connection busy until a result is read to the end, so read whole results."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from typing import Any


class _HiddenPandas(importlib.abc.MetaPathFinder):
    """Makes `import pandas` fail as if pandas were not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if name.split(".")[0] == "pandas":
            raise ModuleNotFoundError(f"No module named {name!r} (hidden by curate)", name=name)


def hide_pandas() -> None:
    """DuckDB 1.5 imports pandas (0.6 s) at a process's first bound parameter, only to compare the value
    with pandas.NaT. A process that never uses pandas hides it: DuckDB and pyarrow then do without."""
    if "pandas" not in sys.modules and not any(isinstance(f, _HiddenPandas) for f in sys.meta_path):
        sys.meta_path.insert(0, _HiddenPandas())


def one(result: Any) -> tuple | None:
    """The first row of an executed query, or None; the result is read to the end."""
    rows = result.fetchall()
    return rows[0] if rows else None


def fetch_by_rowid(con: Any, table: str, columns: str, where: str, params: list | None = None,
                   batch: int = 2048) -> Iterator[tuple]:
    """Rows of `table` matching `where`, located on narrow columns, then fetched by rowid: a plain filter
    or join on a few keys reads every text of the table (about 10x slower for a few thousand rows)."""
    rowids = con.execute(f"SELECT rowid FROM {table} WHERE {where} ORDER BY rowid", params or []).fetchall()
    for i in range(0, len(rowids), batch):
        chunk = [r for (r,) in rowids[i:i + batch]]
        yield from con.execute(f"SELECT {columns} FROM {table} WHERE rowid IN (SELECT unnest(?::BIGINT[]))",
                               [chunk]).fetchall()
