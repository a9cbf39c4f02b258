"""The stage contract: a Detector is one small class with typed settings, registered by name.

A detector names the tables it writes, turns a batch of documents (Arrow) into rows with `__call__`,
and may finish with set work in SQL (`finalize`). It never deletes or decides anything; the policy
does. It also declares what the audit surface may show of it (`explain_exclude`, `categories`,
`explain_extra`, `audit`), so explain, facts, report, card and validate never name a stage's tables.
Running stages over shards is `runner.py`'s job, on an executor (`executors/`); the sequence
stages -> policy -> manifest is `pipeline.py`'s.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import json
import logging
import sys
import types
import typing
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import duckdb
import pyarrow as pa

from curate.core.errors import ConfigError, MissingDependency, UserError
from curate.core.schema import ensure_stage_tables

log = logging.getLogger("curate")

# Packages of the stages that ship with curate (`curate/stages/<name>/`); each registers its Detector.
BUILTIN = ("dedup_exact", "dedup_fuzzy", "quality", "licenses", "optout", "bias", "pii", "confidential", "phi",
           "brands")
BUILTIN_MODULES = tuple(f"curate.stages.{name}" for name in BUILTIN)


@dataclasses.dataclass(frozen=True)
class StageConfig:
    """Settings every stage takes. A stage's `Config` subclasses this dataclass with its own fields, so a
    key that is not a field (a typo) or a value of the wrong type is refused with the file and key named."""

    enabled: bool = True


class Detector:
    """Base class of a stage. Subclasses set the class attributes and override what they need.

    The audit surface reads a stage through the registry: explain shows its tables' rows but the columns in
    `explain_exclude`, plus `explain_extra`; the report's and validation's table summaries show the values of
    its `categories` columns only. `audit` names a module (e.g. "curate.stages.pii.audit") with what the stage
    adds to the report, the cards and validation; each name is optional, and `curate.audit.facts.Context`
    (workspace path, run.json, rules in force, tables present, totals) comes with a read-only connection:

    - `report_sections(con, ctx) -> list[curate.audit.report.Section]`: its report sections; `Section.order`
      places each among the others (overview 0, waterfall 10, domains 30, signal tables 90, provenance 100);
      a section whose table is absent is returned as `curate.audit.report.absent(...)` (shown as skipped).
    - `report_provenance(con, ctx) -> list[tuple[str, str]]`: rows (label, HTML) of the report's provenance.
    - `card_facts(con, ctx) -> dict`: what the cards say of it, by topic (`curate.audit.card.TOPICS`); list
      values from several stages are joined, and a topic no stage fills is "not measured".
    - `EXPECTATIONS = {table: {"one_row_per_doc": bool, "required": (column, ...), "value_sets": {column:
      [value, ...]}}}`: what `curate validate` checks beyond what the column names imply.
    """

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when the rows it writes would change: forces a recompute
    schema_version: ClassVar[int] = 1  # bump when its tables' DDL changes: forces a rebuild
    Config: ClassVar[type[StageConfig]] = StageConfig  # its `[stages.<name>]` settings
    tables: ClassVar[dict[str, str]] = {}  # table name -> CREATE TABLE statement
    output: ClassVar[str | None] = None  # the table `__call__` rows go to (None: SQL-only stage)
    columns: ClassVar[tuple[str, ...]] = ("doc_id", "text")  # document columns a batch carries
    after: ClassVar[tuple[str, ...]] = ()  # stages whose signals this one reads
    lookups: ClassVar[dict[str, str]] = {}  # extra batch column -> "table.column" by doc_id (NULL if absent)
    signals: ClassVar[str | None] = None  # SELECT doc_id, ... feeding the policy's `signals` view
    # Rough chars per second of `__call__` on one core (0: unknown). A process pool costs about a second to
    # start: work this stage would finish in under executors.local.POOL_MIN_SECONDS runs in-process instead.
    throughput: ClassVar[float] = 0.0
    # Modules its workers import (spaCy, Presidio, ...): the worker server imports them once, not each pool.
    preload: ClassVar[tuple[str, ...]] = ()
    # What one worker of this stage needs on a cluster engine (Ray): CPUs, and bytes of memory for its models
    # plus one batch (0: not declared). The engine reserves them per stage instance; it never guesses them.
    cpus: ClassVar[float] = 1.0
    batch_memory: ClassVar[int] = 0
    # Import name -> what to install, checked when the stage is built: a missing one fails with the hint.
    requires: ClassVar[dict[str, str]] = {}
    # -- what the audit surface may show (explain, facts, report, card) ---------------------------
    explain_exclude: ClassVar[tuple[str, ...]] = ()  # columns never shown (signatures, values, text)
    categories: ClassVar[tuple[str, ...]] = ()  # columns whose values are categories: shown as value counts
    audit: ClassVar[str | None] = None  # module of its report sections, card facts and expectations (above)

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        self.config = dict(config or {})
        self.settings = parse_config(self.Config, self.config, f"{source}: [stages.{self.name}]")
        for module, install in sorted(self.requires.items()):
            if not installed(module):
                raise MissingDependency(
                    f"stage {self.name} needs {install} (`pip install {install}`), or set "
                    f"[stages.{self.name}] enabled = false in the rules file")

    # -- identity --------------------------------------------------------------------------------
    def fingerprint_config(self) -> dict[str, Any]:
        """The settings the rows of `output` depend on (settings used only by `finalize` can be left out)."""
        return self.config

    def fingerprint(self) -> str:
        """Identifies what this stage would compute: version, settings and the hash of every asset it uses.
        Results with another fingerprint are stale."""
        blob = json.dumps({"version": self.version, "config": self.fingerprint_config(),
                           "assets": [a.get("sha256", "") for a in self.assets()]}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def assets(self) -> list[dict[str, str]]:
        """Versions and hashes of the lexicons, models and lists it uses; they go into run.json and the
        fingerprint (editing one recomputes the stage)."""
        return []

    def workspace_assets(self, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        """Assets that live in the workspace (e.g. the opt-out registry snapshot); they go into run.json too."""
        return []

    # -- work ------------------------------------------------------------------------------------
    def __call__(self, batch: pa.RecordBatch) -> pa.Table | None:
        """Per-document work over one batch; returns rows for `output`."""
        raise NotImplementedError

    def finalize(self, con: duckdb.DuckDBPyConnection) -> None:
        """Set work over all documents after new rows were written (e.g. clustering)."""

    # -- the policy ------------------------------------------------------------------------------
    def signals_sql(self, rules: dict[str, Any]) -> str | None:
        """SQL (one row per doc_id) for the `signals` view; may read policy settings from the rules file."""
        return self.signals

    def redactions(self, rules: dict[str, Any]) -> str | None:
        """SQL: SELECT doc_id, entity_type, "start", "end" -- spans to replace when a doc is redacted."""
        return None

    # -- the audit surface -----------------------------------------------------------------------
    @staticmethod
    def explain_extra(con: duckdb.DuckDBPyConnection, doc_id: str) -> dict[str, Any]:
        """Extra entries for `curate explain` (name -> rows), beyond this stage's own table rows."""
        return {}


REGISTRY: dict[str, type[Detector]] = {}
UNAVAILABLE: dict[str, str] = {}  # built-in stage -> why its module could not be imported


def register(cls: type[Detector]) -> type[Detector]:
    """Add a stage to the registry; a second stage of the same name is refused."""
    old = REGISTRY.get(cls.name)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"stage name {cls.name!r} is taken by {old.__module__}.{old.__qualname__}")
    REGISTRY[cls.name] = cls
    return cls


def load_builtin() -> dict[str, type[Detector]]:
    """Import the built-in stages. One whose module cannot be imported is recorded in UNAVAILABLE: it fails
    when it is enabled (`detectors`), not before."""
    for name, module in zip(BUILTIN, BUILTIN_MODULES, strict=True):
        if name in REGISTRY or name in UNAVAILABLE:
            continue
        try:
            importlib.import_module(module)
        except ImportError as e:
            UNAVAILABLE[name] = f"{type(e).__name__}: {e}"
    return REGISTRY


def ordered(names: Iterable[str]) -> list[str]:
    """Names in dependency order (a stage after those it reads), ties by name."""
    names = sorted(set(names))
    done: list[str] = []

    def visit(n: str, path: tuple[str, ...]) -> None:
        if n in done:
            return
        if n in path:
            raise ValueError(f"stage dependency cycle: {' -> '.join(path + (n,))}")
        for dep in sorted(REGISTRY[n].after):
            if dep in names:
                visit(dep, path + (n,))
        done.append(n)

    for n in names:
        visit(n, ())
    return done


def ensure_all_tables(con: duckdb.DuckDBPyConnection) -> None:
    for name, cls in load_builtin().items():
        ensure_stage_tables(con, name, cls.schema_version, list(cls.tables.values()), list(cls.tables))


def instances(rules: dict[str, Any], source: str = "rules file") -> list[Detector]:
    """Every registered stage, configured from the rules file, in dependency order. A stage that cannot be
    built here (a missing dependency) is left out: its signals are absent, as if it had never run."""
    load_builtin()
    config = rules.get("stages", {})
    out = []
    for n in ordered(REGISTRY):
        try:
            out.append(REGISTRY[n](config.get(n, {}), source))
        except MissingDependency:
            continue
    return out


def detectors(rules: dict[str, Any], names: Sequence[str] | None = None, source: str = "rules file") -> list[Detector]:
    """Build the selected stages (every enabled one by default) with their rules-file settings. An enabled
    stage that cannot load fails here, with what to install."""
    load_builtin()
    config = rules.get("stages", {})
    unknown_sections = sorted(set(config) - set(REGISTRY) - set(UNAVAILABLE))
    if unknown_sections:
        raise ConfigError(f"{source}: unknown stage section(s) {', '.join(f'[stages.{n}]' for n in unknown_sections)}"
                          f"; stages: {', '.join(sorted(REGISTRY))}")
    known = set(REGISTRY) | set(UNAVAILABLE)
    wanted = list(names) if names else [n for n in sorted(known) if config.get(n, {}).get("enabled", True)]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise UserError(f"unknown stage(s) {', '.join(unknown)}; available: {', '.join(sorted(known))}")
    missing = [n for n in wanted if n in UNAVAILABLE]
    if missing:
        n = missing[0]
        raise MissingDependency(f"stage {n} is enabled but cannot be loaded ({UNAVAILABLE[n]}): install what it "
                                f"needs, or set [stages.{n}] enabled = false in the rules file")
    return [REGISTRY[n](config.get(n, {}), source) for n in ordered(wanted)]


# -- typed settings ----------------------------------------------------------------------------------
def installed(module: str) -> bool:
    """Whether `module` (an import name, dotted or not) can be imported, without importing it. A module whose
    parent package is missing, or that curate hides (util/hidden.py), counts as not installed."""
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a missing parent package; a module without a spec
        return False


def parse_config(cls: type[StageConfig], raw: Any, where: str) -> StageConfig:
    """`raw` (a TOML table) as an instance of the dataclass `cls`. `where` names the rules file and the section
    ("rules.toml: [stages.x]"): a key that is not a field (listing the known ones) or a value of the wrong type
    is a ConfigError naming both. A list for a tuple field becomes a tuple, an integer for a float a float."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a table of settings, not {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    known = set(fields)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown setting{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(fields))}")
    values = {}
    for key, value in raw.items():
        hint = hints.get(key, Any)
        if not _fits(value, hint):
            raise ConfigError(f"{where}: {key} = {value!r} is not {_describe(hint)}")
        if key in fields:
            values[key] = _convert(value, hint)
    return cls(**values)


def _convert(value: Any, hint: Any) -> Any:
    """A TOML value that fits `hint` in the type the field declares: list -> tuple, int -> float."""
    if _origin(hint) in (types.UnionType, typing.Union):
        fitting = [h for h in typing.get_args(hint) if _fits(value, h)]
        return _convert(value, fitting[0]) if fitting else value
    if hint is float and isinstance(value, int):
        return float(value)
    if _origin(hint) is tuple and isinstance(value, list | tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return tuple(_convert(v, args[0]) for v in value) if args else tuple(value)
    return value


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint) or hint


def _fits(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = _origin(hint)
    if origin in (types.UnionType, typing.Union):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return isinstance(value, list | tuple) and all(_fits(v, args[0]) for v in value) if args else \
            isinstance(value, list | tuple)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, origin) if isinstance(origin, type) else True


def _describe(hint: Any) -> str:
    if _origin(hint) in (types.UnionType, typing.Union):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "absent",
             list: "a list", tuple: "a list", dict: "a table"}
    return names.get(_origin(hint), str(hint))
