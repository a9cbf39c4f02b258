"""A workspace is a directory holding `curate.duckdb`; this is the Python API the CLI mirrors.

Reading while a run writes: DuckDB lets one process open the file for writing, and no other process open it
at all meanwhile. So a writing command holds a writer lock of its own (`.writer.lock`, for the whole
command: a second writer is refused at once) and DuckDB's file lock only while it works: a reader that
finds the file locked leaves a marker in `.readers/` and waits (up to CURATE_LOCK_WAIT seconds, default
60); the writer, at its next commit (a shard of a stage or of an ingest), sees the marker, closes the file
and reopens it once the reader is done. A reader therefore sees the last committed state, never a partial
one, and waits at most about one shard's work.
"""

from __future__ import annotations

import fcntl
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from curate.core import schema
from curate.core.errors import CurateError, UserError
from curate.util.sql import literal

if TYPE_CHECKING:
    import polars as pl

DB_NAME = "curate.duckdb"


class WorkspaceError(CurateError, RuntimeError):
    """A problem with the workspace the user can act on (none there, busy, too new)."""


class WorkspaceBusy(WorkspaceError):
    pass


LOCK_WAIT = float(os.environ.get("CURATE_LOCK_WAIT", 60))
WRITER_LOCK = ".writer.lock"
READERS = ".readers"


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
        """One connection at a time per Workspace; a write connection also serves reads. A write connection
        is a `WriteConnection`: DuckDB's file is let go at commits when a reader waits (see the module doc)."""
        if self._con is not None:
            if write and not self._write:
                raise WorkspaceError("cannot write inside a read-only block of the same workspace")
            yield self._con
            return
        if write:
            with _writer_lock(self.path):
                con = WriteConnection(self.path)
                self._con, self._write = con, True
                try:
                    yield con  # type: ignore[misc]
                finally:
                    self._con = None
                    con.close()
            return
        con = _open_waiting(self.path, write=False)
        self._con, self._write = con, False
        try:
            yield con
        finally:
            self._con = None
            con.close()

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Run a read-only query and return a polars frame (materialised, so the lock is released). A query
        DuckDB refuses (an unknown table or column, a syntax error, a write) is a user error naming why, with
        DuckDB's suggestion of the closest names."""
        with self.connect() as con:
            try:
                rel = con.sql(query, params=params or None)
                return rel.pl() if rel is not None else _empty()
            except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                    duckdb.InvalidInputException, duckdb.ConversionException, duckdb.PermissionException) as e:
                raise UserError(f"query refused: {_duckdb_message(e)}") from None

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


class WriteConnection:
    """The write connection of a command: a DuckDB connection (every attribute is the current one's) that
    `pause()` closes and reopens at a commit when a reader in another process waits for the file."""

    def __init__(self, path: Path):
        self._path = path
        self._hooks: list[Any] = []
        self._con: duckdb.DuckDBPyConnection | None = _open_waiting(path, write=True)
        schema.migrate(self._con)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._current(), name)

    def _current(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = _open_waiting(self._path, write=True)
            for hook in self._hooks:
                hook(self._con)
        return self._con

    def on_open(self, hook: Any) -> None:
        """Run `hook(connection)` now and on every reopen (e.g. to register a function)."""
        self._hooks.append(hook)
        hook(self._current())

    def pause(self) -> bool:
        """Between transactions: if a reader waits, let the file go (it is reopened at the next use).
        Returns whether it did. Only call it when no temporary table or open result is needed after."""
        if self._con is None or not _waiting_readers(self._path):
            return False
        self._con.close()
        self._con = None
        time.sleep(0.2)  # the reader polls every 50 ms; the reopen then waits until it is done
        return True

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None


@contextmanager
def _writer_lock(path: Path) -> Iterator[None]:
    """The workspace's writer lock for this process (a second writer is refused at once, naming the holder)."""
    f = open(path / WRITER_LOCK, "a+")  # noqa: SIM115 - held for the block
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip()
            who = f" (process {holder})" if holder.isdigit() else ""
            raise WorkspaceBusy(f"workspace {path} is being written by another process{who}; "
                                "wait for it to finish and run the command again") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        f.close()  # releases the lock


def _open_waiting(path: Path, write: bool) -> duckdb.DuckDBPyConnection:
    """Open the workspace's database, waiting (up to CURATE_LOCK_WAIT s) while another process holds it; a
    reader leaves a marker so that the writer lets go at its next commit."""
    deadline = time.monotonic() + LOCK_WAIT
    marker = path / READERS / str(os.getpid())
    try:
        while True:
            try:
                return _open(path / DB_NAME, write=write, tmp=path / ".tmp")
            except WorkspaceBusy:
                if time.monotonic() > deadline:
                    raise
                if not write and not marker.exists():
                    marker.parent.mkdir(exist_ok=True)
                    marker.touch()
                time.sleep(0.05)
    finally:
        marker.unlink(missing_ok=True)


def _waiting_readers(path: Path) -> bool:
    """Whether a live process waits to read (its marker in .readers/; markers of dead processes are removed)."""
    waiting = False
    for m in (path / READERS).glob("*") if (path / READERS).is_dir() else []:
        try:
            os.kill(int(m.name), 0)
            waiting = True
        except (ValueError, ProcessLookupError):
            m.unlink(missing_ok=True)
        except PermissionError:
            waiting = True
    return waiting


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


def _duckdb_message(e: BaseException) -> str:
    """DuckDB's error without its error-class prefix and the LINE/caret block, on one line."""
    text = str(e).split("\n\nLINE ")[0].strip()
    text = re.sub(r"^[A-Za-z ]+ Error: ", "", text)
    if "read-only" in text or "read_only" in text:
        return "the workspace is opened read-only here: only queries that read are allowed"
    return " ".join(text.split())


def _empty() -> pl.DataFrame:
    import polars as pl

    return pl.DataFrame()
