"""Events of a command for people and schedulers: one JSON object per line (`--log-format json`, or
CURATE_LOG=json) or a plain line, on stderr or in `--log-file`.

Every event has `ts` (UTC, ISO 8601), `event` (its name) and `level`; the rest are its fields: stage start
and end with counts and seconds, each committed shard, the policy's counts, the manifest's root, ingest per
shard, progress every few seconds, warnings. Events never carry document text or personal-data values.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from datetime import UTC, datetime
from typing import IO, Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
FORMATS = ("text", "json")


class _Sink:
    def __init__(self) -> None:
        self.format = os.environ.get("CURATE_LOG", "text") if os.environ.get("CURATE_LOG") in FORMATS else "text"
        self.stream: IO[str] | None = None
        self.level = LEVELS["warning"]  # until `configure` (the CLI calls it): warnings only
        self.explicit = False
        self.lock = threading.Lock()


_SINK = _Sink()


def configure(fmt: str | None = None, file: str | os.PathLike[str] | None = None, verbosity: int = 0) -> None:
    """Where events go: `fmt` text or json (default: CURATE_LOG, else text), `file` (default stderr), and
    how much: -1 (-q) errors only, 0 the default, 1 (-v) progress and info, 2 (-vv) debug."""
    if fmt is not None:
        if fmt not in FORMATS:
            from curate.core.errors import UserError

            raise UserError(f"--log-format must be one of {', '.join(FORMATS)}, not {fmt!r}")
        _SINK.format = fmt
    if file is not None:
        _SINK.stream = open(file, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - for the process
    # On a terminal the progress bars show the run: warnings only. Off a terminal (a scheduler's log file),
    # or as JSON, every event from info up: stage start and end, commits, progress lines.
    off_terminal = _SINK.stream is not None or not sys.stderr.isatty()
    base = LEVELS["info"] if _SINK.format == "json" or off_terminal else LEVELS["warning"]
    _SINK.level = {-1: LEVELS["error"], 0: base, 1: LEVELS["info"]}.get(verbosity, LEVELS["debug"])
    _SINK.explicit = True
    logging.getLogger("curate").handlers[:] = [_Handler()]
    logging.getLogger("curate").propagate = False


def is_json() -> bool:
    return _SINK.format == "json"


def enabled(level: str = "info") -> bool:
    return LEVELS[level] >= _SINK.level


def event(name: str, level: str = "info", **fields: Any) -> None:
    """Emit one event (dropped below the configured level)."""
    if LEVELS[level] < _SINK.level:
        return
    ts = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if _SINK.format == "json":
        line = json.dumps({"ts": ts, "event": name, "level": level, **fields}, default=str, ensure_ascii=False)
    else:
        detail = " ".join(f"{k}={_plain(v)}" for k, v in fields.items())
        line = f"{ts} {level.upper():<7} {name} {detail}".rstrip()
    with _SINK.lock:
        stream = _SINK.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


def _plain(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, dict | list):
        return json.dumps(v, default=str, ensure_ascii=False)
    return str(v)


class _Handler(logging.Handler):
    """Python logging records of curate's modules as events (`log.warning(...)` -> a warning event)."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "error" if record.levelno >= 40 else "warning" if record.levelno >= 30 else \
            "info" if record.levelno >= 20 else "debug"
        event("message", level, logger=record.name, message=record.getMessage())
