"""`curate` on the command line: each command is a thin shell over the Python method of its name.

One module per command group: `pipeline` (init, ingest, run, decide, dedup, manifest, verify, diff, export),
`audit` (explain, stages, signals, sql, report, validate, card, bias), `quality`, `optout`; `app` holds the
shared parts (the Typer app, consoles, the error wrapper).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

# Before numpy loads: the stages' parallelism is the worker pool, and a stage that runs in this process (small
# work, --workers 1) lost to two BLAS threads spinning on two cores: the PII name model took 7.5 s with two
# threads against 2.8 s with one on the same input (measured). A value set by the user wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from curate.cli.app import app  # noqa: E402

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
