"""DuckDB helpers. DuckDB 2 keeps a connection busy until a result is read to the end, so read whole results."""

from __future__ import annotations

from typing import Any


def one(result: Any) -> tuple | None:
    """The first row of an executed query, or None; the result is read to the end."""
    rows = result.fetchall()
    return rows[0] if rows else None
