"""Quoting for the few SQL texts that cannot take bound parameters (DDL, file paths, scans DuckDB only
prunes with literals). Values from outside always go in as parameters or Arrow columns instead."""

from __future__ import annotations

import os
import re


def literal(value: str | os.PathLike[str]) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def identifier(name: str) -> str:
    """A quoted SQL identifier (a table or column name)."""
    return '"' + name.replace('"', '""') + '"'


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_name(name: str) -> bool:
    """A plain identifier: letters, digits and '_' (what a rules file may put into a column alias)."""
    return bool(NAME.fullmatch(name))
