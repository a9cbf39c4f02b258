"""A workspace is a directory holding `curate.duckdb`; this is the Python API the CLI mirrors."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from curate.core import schema
from curate.core.errors import CurateError
from curate.util.sql import literal

if TYPE_CHECKING:
    import polars as pl

DB_NAME = "curate.duckdb"


class WorkspaceError(CurateError, RuntimeError):
    """A problem with the workspace the user can act on (none there, busy, too new)."""


class WorkspaceBusy(WorkspaceError):
    pass


def _settings() -> dict[str, Any]:
    # Bounded memory whatever the corpus: DuckDB spills to the workspace's .tmp beyond this.
    return {
        "memory_limit": os.environ.get("CURATE_MEMORY_LIMIT", "1500MB"),
        "preserve_insertion_order": False,
    }


class Workspace:
    """Open an existing workspace; `Workspace.init(path)` creates one."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.db_path = self.path / DB_NAME
        if not self.db_path.exists():
            raise WorkspaceError(f"no workspace at {self.path} (create one with: curate init {self.path})")
        self._con: duckdb.DuckDBPyConnection | None = None
        self._write = False

    @classmethod
    def init(cls, path: str | os.PathLike[str]) -> Workspace:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        con = _open(path / DB_NAME, write=True, tmp=path / ".tmp")
        try:
            schema.migrate(con)
        finally:
            con.close()
        ws = cls(path)
        with ws.connect(write=True) as con:
            from curate.core.stage import ensure_all_tables

            ensure_all_tables(con)
        return ws

    # -- connections -----------------------------------------------------------------------------
    @contextmanager
    def connect(self, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """One connection at a time per Workspace; a write connection also serves reads."""
        if self._con is not None:
            if write and not self._write:
                raise WorkspaceError("cannot write inside a read-only block of the same workspace")
            yield self._con
            return
        con = _open(self.db_path, write=write, tmp=self.path / ".tmp")
        if write:
            schema.migrate(con)
        self._con, self._write = con, write
        try:
            yield con
        finally:
            self._con = None
            con.close()

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a read-only query and return a polars frame (materialised, so the lock is released)."""
        with self.connect() as con:
            return con.sql(query, params=params or None).pl()

    def table(self, name: str) -> pl.DataFrame:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise WorkspaceError(f"not a table name: {name!r}")
        return self.sql(f'SELECT * FROM "{name}"')

    def tables(self) -> list[str]:
        with self.connect() as con:
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            ).fetchall()
        return [r[0] for r in rows]

    # -- the stages (each a thin call into its module) ------------------------------------------
    def ingest(self, paths: Sequence[str], **kwargs: Any):
        from curate.io.ingest import ingest

        return ingest(self, paths, **kwargs)

    def run(self, **kwargs: Any):
        from curate.core.pipeline import run

        return run(self, **kwargs)

    def dedup(self, **kwargs: Any):
        from curate.core.pipeline import dedup

        return dedup(self, **kwargs)

    def decide(self, rules: str | os.PathLike[str] | None = None):
        from curate.core.pipeline import decide

        return decide(self, rules)

    def manifest(self, out: str | os.PathLike[str] | None = None, **kwargs: Any):
        """Write a manifest: to `out` (a directory or store URI), else as a new release WS/manifests/<n>."""
        from curate.core.manifest import write_manifest

        return write_manifest(self, out, **kwargs)

    def manifests(self) -> list[dict[str, Any]]:
        """The workspace's manifest releases, oldest first (WS/manifest points at the newest)."""
        from curate.core.manifest import releases

        return releases(self)

    def verify(self, manifest_dir: str | os.PathLike[str], shards: bool = False, **kwargs: Any):
        from curate.core.manifest import verify

        return verify(manifest_dir, workspace=self, shards=shards, **kwargs)

    def export(self, out: str | os.PathLike[str], **kwargs: Any):
        from curate.io.export import export

        return export(self, out, **kwargs)

    def explain(self, doc_id: str) -> dict[str, Any]:
        from curate.audit.explain import explain

        return explain(self, doc_id)

    # -- the analyst's surface (curate/report.py, validate.py, card.py) ------------------------------
    def report(self, out: str | os.PathLike[str], **kwargs: Any):
        from curate.audit.report import report

        return report(self, out, **kwargs)

    def validate(self, out: str | os.PathLike[str] | None = None, **kwargs: Any):
        from curate.audit.validate import validate

        return validate(self, out, **kwargs)

    def card(self, out: str | os.PathLike[str], **kwargs: Any):
        from curate.audit.card import card

        return card(self, out, **kwargs)

    def bias(self, confidence: float = 0.95):
        """The bias report over the current decisions (curate.stages.bias.stage.report)."""
        from curate.stages.bias.stage import report

        return report(self, confidence=confidence)

    def __repr__(self) -> str:
        return f"Workspace({str(self.path)!r})"


def _open(db: Path, write: bool, tmp: Path) -> duckdb.DuckDBPyConnection:
    try:
        con = duckdb.connect(str(db), read_only=not write, config=_settings())
    except duckdb.IOException as e:
        msg = str(e)
        if "lock" in msg.lower():
            pid = re.search(r"PID (\d+)", msg)
            who = f" (process {pid.group(1)})" if pid else ""
            raise WorkspaceBusy(
                f"workspace {db.parent} is being written by another process{who}; "
                "wait for it to finish and run the command again"
            ) from None
        raise
    if write:
        tmp.mkdir(exist_ok=True)
        con.execute(f"SET temp_directory = {literal(tmp)}")
    return con

