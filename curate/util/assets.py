"""Where curate's data files live, and how they are named in a manifest (version + hash)."""

from __future__ import annotations

import hashlib
import os
import tomllib
from pathlib import Path

PACKAGED = Path(__file__).resolve().parents[1] / "_rules"  # the wheel's copy of rules/ (curate/_rules)
CHECKOUT = Path(__file__).resolve().parents[2]  # the repository root, when running from a source checkout


def rules_source() -> tuple[Path, str]:
    """The `rules/` directory and where it came from: $CURATE_RULES_DIR ("environment"), else the source
    checkout's `rules/` (an editable install, or running from the repository: "source checkout"), else the copy
    the wheel ships as package data, `curate/_rules/` ("package")."""
    env = os.environ.get("CURATE_RULES_DIR")
    if env:
        return Path(env), "environment"
    if (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "rules" / "default.toml").is_file():
        return CHECKOUT / "rules", "source checkout"
    return PACKAGED, "package"


def rules_dir() -> Path:
    """The `rules/` directory: $CURATE_RULES_DIR, else the source checkout's, else the packaged copy."""
    return rules_source()[0]


def rules_file_candidates(path: str | os.PathLike[str]) -> list[Path]:
    """Where a `--rules` path is looked for, in order: as given (a relative path from the current directory),
    then, for a relative path, the same path inside rules_dir() (so `--rules default.toml` works anywhere)."""
    p = Path(path)
    if p.is_absolute():
        return [p]
    inside = rules_dir() / p
    return [p] if inside.resolve() == p.resolve() else [p, inside]


def find_rules_file(path: str | os.PathLike[str]) -> tuple[Path, list[Path]]:
    """The first of rules_file_candidates(path) that is a file (else the first), and all the places tried."""
    tried = rules_file_candidates(path)
    return next((c for c in tried if c.is_file()), tried[0]), tried


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_asset(kind: str, path: str | os.PathLike[str], version: str | None = None) -> dict[str, str]:
    """A lexicon, model or list as run.json records it."""
    p = Path(path)
    base = rules_dir().resolve()
    try:
        # inside the rules directory: "rules/..." whether it is the checkout's or the packaged copy
        shown = str(Path("rules" if base == PACKAGED.resolve() else base.name) / p.resolve().relative_to(base))
    except ValueError:
        try:
            shown = str(p.resolve().relative_to(base.parent))
        except ValueError:
            shown = str(p)
    return {"kind": kind, "path": shown, "version": version or "", "sha256": sha256_file(p)}


def read_toml(path: str | os.PathLike[str], what: str, error: type[Exception]) -> tuple[dict, str]:
    """A data file of the rules directory as (its TOML table, the SHA-256 of its bytes); a file that cannot be read
    or parsed raises `error` naming it and `what` it is (callers cache what they build by path and hash)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise error(f"{p}: cannot read the {what}: {e.strerror}") from None
    try:
        return tomllib.loads(data.decode("utf-8")), hashlib.sha256(data).hexdigest()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p}: not a valid TOML file: {e}") from None
