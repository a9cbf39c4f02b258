"""DuckDB helpers. DuckDB 2 keeps a connection busy until a result is read to the end, so read whole results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


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
