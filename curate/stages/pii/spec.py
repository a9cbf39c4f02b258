"""The recognizers file (rules/pii/recognizers.toml): read and checked without importing Presidio."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import regex

from curate.core.errors import ConfigError
from curate.util.assets import rules_dir

DEFAULT_RECOGNIZERS = "pii/recognizers.toml"


def recognizers_path(config: Any = None) -> Path:
    """`[stages.pii] recognizers` (relative to rules/) or rules/pii/recognizers.toml; `config` is the stage's
    typed settings or the `[stages.pii]` table as a dict."""
    given = config.get("recognizers") if isinstance(config, dict) else getattr(config, "recognizers", None)
    p = Path(given or DEFAULT_RECOGNIZERS)
    return p if p.is_absolute() else rules_dir() / p


def load_recognizers(path: Path) -> dict[str, Any]:
    """Parse and check the recognizers file; an error names the file and the entry."""
    try:
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: cannot read the PII recognizers file: {e}") from None
    if not isinstance(spec.get("entities"), dict) or not spec.get("model"):
        raise ConfigError(f"{path}: needs `model` and an [entities] table")
    seen = set(spec["entities"])
    for i, s in enumerate(spec.get("secrets", [])):
        where = f"{path}: [[secrets]] #{i + 1}"
        missing = [k for k in ("entity", "version", "regex", "score") if k not in s]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(missing)}")
        if not regex.fullmatch(r"[A-Z][A-Z0-9_]*", s["entity"]) or s["entity"] in seen:
            raise ConfigError(f"{where}: entity must be a new UPPER_CASE name, not {s['entity']!r}")
        seen.add(s["entity"])
        for key in ("regex", "ignore"):
            try:
                regex.compile(s.get(key, ""))
            except regex.error as e:
                raise ConfigError(f"{where} ({s['entity']}): bad {key}: {e}") from None
    return spec


def secret_types(spec: dict[str, Any]) -> list[str]:
    return [s["entity"] for s in spec.get("secrets", [])]


def entity_set(spec: dict[str, Any]) -> list[str]:
    return list(spec["entities"]) + secret_types(spec)
