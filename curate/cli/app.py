"""The command line's shared parts: the Typer app, its consoles and argument types, and the error wrapper."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from curate.core.errors import CurateError, disk_full

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Curate: training-data curation and audit. Signals first, decisions later.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

@app.callback()
def options(
    log_format: Annotated[str | None, typer.Option(
        "--log-format", help="text or json: one JSON object per event on stderr (default: $CURATE_LOG or text).")]
    = None,
    log_file: Annotated[Path | None, typer.Option(help="Write the events to this file instead of stderr.")] = None,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="More events (-v info, -vv debug).")]
    = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=lambda v: _version(v))] = False,
) -> None:
    """Curate: training-data curation and audit. Signals first, decisions later."""
    from curate.util import log

    try:
        log.configure(log_format, log_file, -1 if quiet else verbose)
    except CurateError as e:
        err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
        raise typer.Exit(2) from None


def _version(value: bool) -> None:
    if value:
        from curate import __version__

        out.print(f"curate {__version__}")
        raise typer.Exit(0)


WS = Annotated[Path, typer.Argument(help="Workspace directory.")]
Rules = Annotated[Path | None, typer.Option(
    "--rules", help="Rules file: ./FILE, else FILE in the rules directory (default: its default.toml).")]


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A user error (curate.core.errors.CurateError) prints one plain line and exits 2; anything else is a
    bug and keeps its traceback."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CurateError as e:
            err.print(f"[red]error:[/red] {escape(str(e))}", highlight=False)
            raise typer.Exit(2) from None
        except Exception as e:
            full = disk_full(e)
            if full is None:
                raise  # a bug: its traceback (exit 3)
            err.print(f"[red]error:[/red] {escape(str(full))}", highlight=False)
            raise typer.Exit(2) from None

    return wrapper


def table(title: str, columns: list[str], rows: list[list[Any]]) -> Table:
    """A rich table of values that are data, never markup (ids and values like `[/bold]` are shown as written)."""
    t = Table(title=escape(title), title_justify="left")
    for c in columns:
        t.add_column(escape(str(c)), overflow="fold")
    for r in rows:
        t.add_row(*["" if v is None else escape(str(v)) for v in r])
    return t


FORMATS = ("table", "plain", "csv", "json")
Format = Annotated[str | None, typer.Option(
    "--format", help="table, plain (tab-separated), csv or json (default: table on a terminal, else plain).")]


def emit(title: str, columns: list[str], rows: list[list[Any]], fmt: str | None) -> None:
    """Rows for a person (a rich table on a terminal) or a program (tab-separated when piped, CSV, JSON)."""
    import csv
    import json
    import sys

    fmt = fmt or ("table" if sys.stdout.isatty() else "plain")
    if fmt not in FORMATS:
        from curate.core.errors import UserError

        raise UserError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if fmt == "table":
        out.print(table(title, columns, rows))
    elif fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str,
                                    ensure_ascii=False) + "\n")
    else:
        writer = csv.writer(sys.stdout, delimiter="\t" if fmt == "plain" else ",", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else v for v in r] for r in rows])
