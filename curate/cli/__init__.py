"""`curate` on the command line: each command is a thin shell over the Python method of its name.

One module per command group: `pipeline` (init, ingest, run, decide, dedup, manifest, verify, diff, export),
`audit` (explain, stages, signals, sql, report, validate, card, bias), `quality`, `optout`; `app` holds the
shared parts (the Typer app, consoles, the error wrapper).
"""

from __future__ import annotations

import importlib
import logging
import sys
import traceback

from curate.cli.app import app

# Each group registers its commands, in `curate --help` order.
for _group in ("pipeline", "audit", "quality", "optout", "config", "portal"):
    importlib.import_module(f"curate.cli.{_group}")


def main() -> None:
    from curate.util.hidden import hide

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    # DuckDB 1.5 imports pandas (0.6 s) at a process's first bound parameter, only to compare the value with
    # pandas.NaT. Great Expectations (`validate`) needs pandas; no other command does.
    if sys.argv[1:2] != ["validate"]:
        hide("pandas")
    try:
        app()
    except Exception:  # a bug, not a user error (those exit 2 with one line): the traceback, and exit 3
        traceback.print_exc()
        sys.exit(3)


if __name__ == "__main__":
    main()
