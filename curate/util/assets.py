"""Where curate's data files live, and how they are named in a manifest (version + hash)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def rules_dir() -> Path:
    """The `rules/` directory: $CURATE_RULES_DIR, else the one next to the package (source checkout)."""
    env = os.environ.get("CURATE_RULES_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "rules"


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_asset(kind: str, path: str | os.PathLike[str], version: str | None = None) -> dict[str, str]:
    """A lexicon, model or list as run.json records it."""
    p = Path(path)
    try:
        shown = str(p.resolve().relative_to(rules_dir().resolve().parent))
    except ValueError:
        shown = str(p)
    return {"kind": kind, "path": shown, "version": version or "", "sha256": sha256_file(p)}
