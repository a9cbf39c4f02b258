"""The PHI lexicon (rules/phi/lexicon.toml) and the scan of one document: identifiers, patient cues, health terms.

Identifiers and cues are regular expressions from the file; Presidio's own pattern recognizers (`UK_NHS` with its
checksum, `US_MBI`, `MEDICAL_LICENSE` with the DEA checksum) run beside them, counted only with one of their
context words just before the match. Health terms are the file's conditions and medications (whole words, any
case) and ICD-10-CM codes. A span is in clinical context when an identifier or cue and a health term stand within
`window` characters of each other. Spans carry type, offsets and score, never the value.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.core.errors import ConfigError
from curate.util.assets import file_asset, read_toml, rules_dir

PRESIDIO = {  # entity -> Presidio's recognizer class (presidio_analyzer.predefined_recognizers)
    "UK_NHS": "NhsRecognizer", "US_MBI": "UsMbiRecognizer", "MEDICAL_LICENSE": "MedicalLicenseRecognizer"}
IDENTIFIER, CUE, HEALTH = "identifier", "cue", "health"
HEALTH_TYPES = ("DIAGNOSIS", "MEDICATION", "ICD10_CODE")
CONTEXT_BOOST = 0.35  # Presidio's default context enhancement (LemmaContextAwareEnhancer)


class LexiconError(ConfigError):
    """A PHI lexicon that cannot be used; names the file and the problem."""


@dataclass(frozen=True)
class Span:
    entity_type: str
    role: str  # identifier, cue or health
    start: int
    end: int
    score: float
    recognizer: str
    clinical: bool = False


def lexicon_path(setting: str = "phi/lexicon.toml") -> Path:
    """The lexicon a `[stages.phi] lexicon` setting names (relative to rules/ unless absolute)."""
    p = Path(setting)
    return p if p.is_absolute() else rules_dir() / p


def _terms(words: list[str]) -> str:
    return r"\b(?:" + "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in sorted(words, key=lambda w: (-len(w), w))) \
        + r")\b"


@dataclass
class Lexicon:
    path: Path
    version: str
    sha256: str
    window: int
    prefilter: str
    identifiers: list[tuple[str, re.Pattern, float]]
    cues: list[tuple[str, re.Pattern, float]]
    presidio: tuple[str, ...]
    presidio_context: int
    icd10: re.Pattern
    conditions: re.Pattern
    medications: re.Pattern
    _recognizers: list[Any] | None = None

    def asset(self) -> dict[str, str]:
        return {**file_asset("phi-lexicon", self.path, self.version), "sha256": self.sha256}

    def recognizers(self) -> list[Any]:
        """Presidio's recognizers, imported on first use (the import takes seconds: workers preload it)."""
        if self._recognizers is None:
            from presidio_analyzer import predefined_recognizers as pr

            self._recognizers = [getattr(pr, PRESIDIO[e])() for e in self.presidio]
        return self._recognizers

    def scan(self, text: str) -> list[Span]:
        """Every identifier, cue and health term of `text`; `clinical` where the first two meet the third."""
        found: list[Span] = []
        for entity, rx, score in self.identifiers:
            for m in rx.finditer(text):
                found.append(Span(entity, IDENTIFIER, m.start("value"), m.end("value"), score, "phi-lexicon"))
        for entity, rx, score in self.cues:
            found += [Span(entity, CUE, m.start(), m.end(), score, "phi-lexicon") for m in rx.finditer(text)]
        low = None
        for rec in self.recognizers():
            entity = rec.supported_entities[0]
            for r in rec.analyze(text, [entity], None) or ():
                low = text.lower() if low is None else low
                before = low[max(0, r.start - self.presidio_context):r.start]
                if r.score > 0 and any(w in before for w in rec.context):
                    found.append(Span(entity, IDENTIFIER, r.start, r.end, min(1.0, r.score + CONTEXT_BOOST),
                                      type(rec).__name__))
        if not found:  # no identifier and no cue: health terms alone are not PHI, nothing is recorded
            return []
        for entity, rx in (("ICD10_CODE", self.icd10), ("DIAGNOSIS", self.conditions),
                           ("MEDICATION", self.medications)):
            found += [Span(entity, HEALTH, m.start(), m.end(), 0.8, "phi-lexicon") for m in rx.finditer(text)]
        return mark_clinical(found, self.window)


def mark_clinical(spans: list[Span], window: int) -> list[Span]:
    """The spans sorted, each marked clinical when a span of the other side (identifier or cue against a health
    term) lies within `window` characters."""
    spans.sort(key=lambda s: (s.start, s.end, s.entity_type))
    health = [s.start for s in spans if s.role == HEALTH]
    people = [s.start for s in spans if s.role != HEALTH]

    def near(starts: list[int], at: int) -> bool:
        i = bisect.bisect_left(starts, at - window)
        return i < len(starts) and starts[i] <= at + window

    return [Span(s.entity_type, s.role, s.start, s.end, s.score, s.recognizer,
                 near(people if s.role == HEALTH else health, s.start)) for s in spans]


_CACHE: dict[tuple[str, str], Lexicon] = {}


def load_lexicon(path: str | Path) -> Lexicon:
    """Parse and check the PHI lexicon (cached per path and content hash)."""
    p = Path(path)
    raw, sha = read_toml(p, "PHI lexicon", LexiconError)
    if (str(p), sha) in _CACHE:
        return _CACHE[(str(p), sha)]
    for k in ("version", "prefilter", "identifiers", "health"):
        if not raw.get(k):
            raise LexiconError(f"{p}: missing {k}")

    def compiled(what: str, src: Any) -> re.Pattern:
        try:
            return re.compile(str(src))
        except re.error as e:
            raise LexiconError(f"{p}: {what}: bad pattern: {e}") from None

    def entries(key: str, need_value: bool) -> list[tuple[str, re.Pattern, float]]:
        out = []
        for i, e in enumerate(raw.get(key, [])):
            if not {"entity", "pattern", "score"} <= set(e):
                raise LexiconError(f"{p}: [[{key}]] #{i + 1} needs entity, pattern and score")
            rx = compiled(f"[[{key}]] {e['entity']}", e["pattern"])
            if need_value and "value" not in rx.groupindex:
                raise LexiconError(f"{p}: [[{key}]] {e['entity']}: the pattern needs a (?P<value>...) group")
            if not 0 < float(e["score"]) <= 1:
                raise LexiconError(f"{p}: [[{key}]] {e['entity']}: score must be in (0, 1]")
            out.append((str(e["entity"]), rx, float(e["score"])))
        return out

    presidio = raw.get("presidio", {})
    names = tuple(presidio.get("recognizers", ()))
    unknown = [n for n in names if n not in PRESIDIO]
    if unknown:
        raise LexiconError(f"{p}: [presidio] recognizers: unknown {', '.join(unknown)}; known: {', '.join(PRESIDIO)}")
    health = raw["health"]
    for k in ("conditions", "medications"):
        words = health.get(k)
        if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
            raise LexiconError(f"{p}: [health] {k} must be a non-empty list of terms")
        if len({w.lower() for w in words}) != len(words):
            raise LexiconError(f"{p}: [health] {k} lists a term twice")
    compiled("prefilter", raw["prefilter"])
    lex = Lexicon(p, str(raw["version"]), sha, int(raw.get("window", 600)), str(raw["prefilter"]),
                  entries("identifiers", True), entries("cues", False), names, int(presidio.get("context", 120)),
                  compiled("[health] icd10", health.get("icd10", r"(?!)")),
                  re.compile(_terms(health["conditions"]), re.I), re.compile(_terms(health["medications"]), re.I))
    _CACHE[(str(p), sha)] = lex
    return lex
