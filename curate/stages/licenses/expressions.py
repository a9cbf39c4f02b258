"""Licence expressions and use classes: SPDX expressions parsed and normalised by license-expression, and the use
class of an expression (permissive, copyleft, noncommercial, ...) from `rules/licenses/use_classes.toml`.
"""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The use classes, from least to most restrictive ("unknown" last); the classes that grant a use.
CLASSES = ("public-domain", "permissive", "copyleft", "no-derivatives", "noncommercial", "all-rights-reserved",
           "unknown")
GRANTING = ("public-domain", "permissive", "copyleft", "no-derivatives", "noncommercial")


@functools.lru_cache(maxsize=1)
def _licensing():
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


@functools.lru_cache(maxsize=4096)
def normalize_expression(expr: str) -> str | None:
    """The canonical SPDX form of an expression (`GPL-2.0+` -> `GPL-2.0-or-later`); None if it does not parse.
    LicenseRef-* and unknown ids are kept as written."""
    try:
        parsed = _licensing().parse(expr.strip(), validate=False)
    except Exception:  # noqa: BLE001 - license-expression raises several kinds on bad input
        return None
    return parsed.render() if parsed is not None else None


@dataclass(frozen=True, eq=False)
class UseClasses:
    version: str
    by_id: dict[str, str]
    rank: dict[str, int]

    @classmethod
    def load(cls, path: Path) -> UseClasses:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        by_id = {lic.lower(): name for name, ids in raw["classes"].items() for lic in ids}
        return cls(str(raw["version"]), by_id, {c: i for i, c in enumerate(raw["order"])})

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - one instance per rules dir, cached itself
    def of(self, expr: str | None) -> str:
        """Use class of an expression: OR takes the least restrictive known option, AND the most restrictive."""
        if not expr:
            return "unknown"
        try:
            parsed = _licensing().parse(expr, validate=False)
        except Exception:  # noqa: BLE001
            return "unknown"
        return self._walk(parsed) if parsed is not None else "unknown"

    def _walk(self, node: Any) -> str:
        from license_expression import LicenseWithExceptionSymbol

        if isinstance(node, LicenseWithExceptionSymbol):  # an exception only loosens the licence
            node = node.license_symbol
        args = getattr(node, "args", None)
        if not args:
            return self.by_id.get(str(getattr(node, "key", node)).lower(), "unknown")
        classes = [self._walk(a) for a in args]
        known = [c for c in classes if c in self.rank]
        if type(node).__name__ == "OR":
            return min(known, key=self.rank.__getitem__) if known else "unknown"
        return "unknown" if len(known) < len(classes) else max(known, key=self.rank.__getitem__)
