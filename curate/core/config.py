"""The configuration in force, in one place: every environment variable curate reads, the rules directory and
rules file, and every rules-file setting, each with its effective value and where it came from.

`curate config --show` prints `show()`. The variables are listed here by hand (from every `os.environ` read in
the package); the settings come from the stages' `Config` dataclasses and the rules file itself.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENVIRONMENT = "environment"
DEFAULT = "default"
RULES_FILE = "rules file"


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str  # as documented (the value used when the variable is unset)
    what: str
    secret: bool = False  # never show the value, only whether it is set
    valid: Callable[[str], bool] | None = None  # a value curate ignores when this says no

    def effective(self) -> dict[str, Any]:
        raw = os.environ.get(self.name)
        if raw is None or raw == "":
            value, source = self.default, DEFAULT
        elif self.valid is not None and not self.valid(raw):
            value, source = self.default, f"{DEFAULT} (the environment's {raw!r} is not valid: ignored)"
        else:
            value, source = ("(set)" if self.secret else raw), ENVIRONMENT
        return {"name": self.name, "value": value, "source": source, "default": self.default, "what": self.what}


def _default_rules_dir() -> str:
    from curate.util.assets import CHECKOUT, PACKAGED

    checkout = CHECKOUT / "rules"
    if (CHECKOUT / "pyproject.toml").is_file() and (checkout / "default.toml").is_file():
        return str(checkout)
    return str(PACKAGED)


def variables() -> list[EnvVar]:
    """Every environment variable curate reads (or sets for its workers when unset)."""
    return [
        EnvVar("CURATE_RULES_DIR", _default_rules_dir(),
               "The rules directory: default.toml, lexicons/, licenses/, pii/, optout/, models/. Default: the "
               "source checkout's rules/ when running from one, else the copy installed with the package."),
        EnvVar("CURATE_MEMORY_LIMIT", "1500MB",
               "DuckDB's memory limit per workspace connection (DuckDB syntax: 1500MB, 4GB); it spills to the "
               "workspace's .tmp beyond it."),
        EnvVar("CURATE_WORKERS", "0",
               "Worker processes of a stage's pool; 0: one per core, and small work runs in-process. "
               "`--workers N` wins.", valid=lambda v: v.isdigit()),
        EnvVar("CURATE_LOG", "text",
               "Event format on stderr: text or json. `--log-format` wins.", valid=lambda v: v in ("text", "json")),
        EnvVar("CURATE_PORTAL_TOKEN", "",
               "operator token `curate optout sync --from URL` sends to a running portal (`--token` wins)"),
        EnvVar("CURATE_LOCK_WAIT", "60",
               "seconds a reader waits for a workspace that a command is writing (the writer lets it in at its "
               "next commit)"),
        EnvVar("CURATE_PROGRESS_SECONDS", "10",
               "Seconds between progress events when stderr is not a terminal (or logs are JSON)."),
        EnvVar("OPENBLAS_NUM_THREADS", "1 (on the command line and in workers)",
               "BLAS threads per process; the `curate` command and its worker pool set 1 unless set."),
        EnvVar("RAY_ADDRESS", "", "The Ray cluster's head (host:port) for `--engine ray` when neither "
               "`--ray-address` nor the rules file's [engine] address is given."),
        EnvVar("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0 (set by curate)", "Ray's switch that keeps a loopback "
               "address as given; curate sets 0 before importing Ray unless it is set."),
        EnvVar("AWS_ENDPOINT_URL_S3", "",
               "S3-compatible endpoint for s3:// inputs (then AWS_ENDPOINT_URL); `--endpoint` wins."),
        EnvVar("AWS_ENDPOINT_URL", "", "S3-compatible endpoint when AWS_ENDPOINT_URL_S3 is unset."),
        EnvVar("AWS_REGION", "us-east-1", "Region of s3:// inputs (then AWS_DEFAULT_REGION)."),
        EnvVar("AWS_DEFAULT_REGION", "us-east-1", "Region when AWS_REGION is unset."),
        EnvVar("AWS_ACCESS_KEY_ID", "", "S3 credentials (with AWS_SECRET_ACCESS_KEY), read by Arrow's S3 client.",
               secret=True),
        EnvVar("AWS_SECRET_ACCESS_KEY", "", "S3 credentials, read by Arrow's S3 client.", secret=True),
        EnvVar("AWS_PROFILE", "", "The AWS profile whose credentials Arrow's S3 client uses."),
        EnvVar("GX_ANALYTICS_ENABLED", "False", "Great Expectations' telemetry (`curate validate`); curate turns "
               "it off unless set."),
    ]


# [pii] keys and the values curate.stages.pii.stage.entity_policy uses when a key is absent.
PII_DEFAULTS: dict[str, Any] = {"min_score": 0.5, "dense_min_count": 5, "secret_action": "drop",
                                "secret_min_score": 0.5, "default_action": "redact"}


def _train_defaults() -> dict[str, Any]:
    try:
        from curate.stages.quality.train import TRAIN_DEFAULTS
    except ImportError:
        return {}
    return dict(TRAIN_DEFAULTS)


def _plain(value: Any) -> Any:
    """A setting as JSON has it (tuples as lists, paths as strings)."""
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _rows(section: str, defaults: dict[str, Any], configured: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [{"section": section, "key": k, "value": _plain(configured.get(k, v)),
             "source": RULES_FILE if k in configured else DEFAULT, "default": _plain(v)} for k, v in defaults.items()]
    rows += [{"section": section, "key": k, "value": _plain(v), "source": RULES_FILE, "default": None}
             for k, v in configured.items() if k not in defaults]
    return rows


def _stage_rows(raw_stages: dict[str, Any], where: str) -> tuple[list[dict[str, Any]], list[str]]:
    from curate.core.errors import CurateError
    from curate.core.stage import UNAVAILABLE, load_builtin, parse_config

    registry = load_builtin()
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for name in sorted(set(registry) | set(UNAVAILABLE) | set(raw_stages)):
        section = f"stages.{name}"
        configured = raw_stages.get(name, {})
        if not isinstance(configured, dict):
            problems.append(f"[{section}] must be a table of settings, not {configured!r}")
            continue
        if name not in registry:
            why = f"stage cannot be loaded ({UNAVAILABLE[name]})" if name in UNAVAILABLE else "no such stage"
            problems.append(f"[{section}]: {why}")
            rows += [{"section": section, "key": k, "value": _plain(v), "source": RULES_FILE, "default": None}
                     for k, v in configured.items()]
            continue
        cls = registry[name].Config
        defaults = {f.name: f.default if f.default is not dataclasses.MISSING else
                    f.default_factory() if f.default_factory is not dataclasses.MISSING else None
                    for f in dataclasses.fields(cls)}
        try:
            settings = parse_config(cls, configured, f"{where}: [{section}]")
            effective = {k: getattr(settings, k) for k in defaults}
        except CurateError as e:  # shown as configured, with the error
            problems.append(str(e))
            effective = {k: configured.get(k, v) for k, v in defaults.items()}
        rows += [{"section": section, "key": k, "value": _plain(effective[k]),
                  "source": RULES_FILE if k in configured else DEFAULT, "default": _plain(v)}
                 for k, v in defaults.items()]
        rows += [{"section": section, "key": k, "value": _plain(v), "source": f"{RULES_FILE} (unknown: refused)",
                  "default": None} for k, v in configured.items() if k not in defaults]
    return rows, problems


def show(rules: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """The configuration in force for a command given `--rules rules` (None: the default rules file):
    {"environment": [...], "rules_dir": {...}, "rules_file": {...}, "settings": [...], "problems": [...]}.
    Each variable and setting has its effective `value` and its `source`: environment or default for a
    variable, rules file or default for a setting."""
    from curate.core.policy import default_rules_path, load_rules
    from curate.util.assets import find_rules_file, rules_source

    directory, dir_source = rules_source()
    if rules is None:
        path, found, tried = default_rules_path(), "the default: default.toml in the rules directory", []
    else:
        path, tried = find_rules_file(rules)
        found = "as given, from the current directory" if path == tried[0] else \
            "in the rules directory: not in the current directory"
    ruleset = load_rules(path)  # a missing or broken file: its error, with the places tried
    raw = ruleset.raw
    settings = _rows("policy", {}, raw.get("policy", {}))
    pii = raw.get("pii", {})
    settings += _rows("pii", PII_DEFAULTS, {k: v for k, v in pii.items() if k != "entities"})
    settings += [{"section": "pii.entities", "key": k, "value": _plain(v), "source": RULES_FILE, "default": None}
                 for k, v in pii.get("entities", {}).items()]
    settings += _rows("quality_model", _train_defaults(), raw.get("quality_model", {}))
    stage_rows, problems = _stage_rows(raw.get("stages", {}), str(ruleset.path))
    settings += stage_rows
    known = {"policy", "rules", "pii", "quality_model", "stages"}
    problems += [f"[{k}]: not a section curate reads" for k in raw if k not in known]
    return {
        "environment": [v.effective() for v in variables()],
        "rules_dir": {"path": str(directory), "source": dir_source},
        "rules_file": {"path": str(ruleset.path), "found": found, "tried": [os.path.abspath(t) for t in tried],
                       "sha256": ruleset.sha256, "policy": _plain(raw.get("policy", {})), "rules": len(ruleset.rules)},
        "settings": settings,
        "problems": problems,
    }
