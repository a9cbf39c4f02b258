"""The licence rules files and the scanner: the template index, use-class and references tables loaded once per
process from `rules/licenses/`, the assets that fingerprint them, and `Scanner.rows` (documents -> license_signals).
"""

from __future__ import annotations

import functools
import hashlib
import tomllib
from pathlib import Path

from curate.stages.licenses.expressions import UseClasses
from curate.stages.licenses.fulltext import TemplateIndex
from curate.stages.licenses.notices import scan
from curate.stages.licenses.references import load_names
from curate.util.assets import file_asset, rules_dir, sha256_file

COLUMNS = ("doc_id", "license", "use_class", "evidence", "start", "end", "score", "form", "scope", "family")


def licenses_dir() -> Path:
    return rules_dir() / "licenses"


@functools.lru_cache(maxsize=4)
def load_index(directory: str, min_recall: float, min_precision: float) -> TemplateIndex:
    base = Path(directory)
    meta = tomllib.loads((base / "templates.toml").read_text(encoding="utf-8"))
    templates = {}
    for t in meta["template"]:
        text = (base / "templates" / t["file"]).read_text(encoding="utf-8")
        templates[t["file"].removesuffix(".txt")] = (t["license"], text)
    return TemplateIndex(templates, min_recall, min_precision)


@functools.lru_cache(maxsize=4)
def load_classes(directory: str) -> UseClasses:
    return UseClasses.load(Path(directory) / "use_classes.toml")


def templates_asset(directory: Path | None = None) -> dict[str, str]:
    """The templates as one asset: the version of templates.toml, and a sha256 over templates.toml and every
    template file it lists (each file's name and sha256, in order), so editing any template recomputes the stage."""
    base = directory or licenses_dir()
    index = base / "templates.toml"
    meta = tomllib.loads(index.read_text(encoding="utf-8"))
    tree = hashlib.sha256()
    for p in [index, *(base / "templates" / t["file"] for t in meta["template"])]:
        tree.update(f"{p.relative_to(base).as_posix()}\0{sha256_file(p)}\n".encode())
    asset = file_asset("license-templates", index, str(meta.get("version", "")))
    return {**asset, "path": str(Path(asset["path"]).with_name("templates")), "sha256": tree.hexdigest()}


def classes_asset(directory: Path | None = None) -> dict[str, str]:
    """The use-class table as an asset (its version and sha256)."""
    base = directory or licenses_dir()
    return file_asset("license-use-classes", base / "use_classes.toml", load_classes(str(base)).version)


def references_asset(directory: Path | None = None) -> dict[str, str]:
    """The references table (DEP-5 short names, licence names) as an asset (its version and sha256)."""
    base = directory or licenses_dir()
    path = base / "references.toml"
    return file_asset("license-references", path, load_names(str(path)).version)


class Scanner:
    """What a worker needs: the template index and the use-class table, loaded once."""

    def __init__(self, min_recall: float = 0.75, min_precision: float = 0.75, directory: Path | None = None):
        d = str(directory or licenses_dir())
        self.index = load_index(d, min_recall, min_precision)
        self.classes = load_classes(d)
        self.names = load_names(str(Path(d) / "references.toml"))

    def rows(self, doc_ids: list[str], texts: list[str | None]) -> dict[str, list]:
        """The license_signals columns for these documents: every finding, with its use class."""
        out: dict[str, list] = {k: [] for k in COLUMNS}
        texts = [t or "" for t in texts]
        for doc_id, text, full in zip(doc_ids, texts, self.index.find_batch(texts), strict=True):
            for f in scan(text, self.index, full, self.names):
                cls = {"all_rights_reserved": "all-rights-reserved", "restrictive_notice": "all-rights-reserved",
                       "copyright_notice": "unknown"}.get(f.evidence) or self.classes.of(f.license)
                for key, value in zip(out, (doc_id, f.license, cls, f.evidence, f.start, f.end, f.score, f.form,
                                            f.scope, f.family), strict=True):
                    out[key].append(value)
        return out
