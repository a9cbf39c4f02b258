"""Presidio, offline and fast: the recognizers of rules/pii/recognizers.toml over batches of documents.

The naive use, one `AnalyzerEngine.analyze(text)` per document, spends most of its time in spaCy
components NER does not need and in recognizers scanning text that cannot hold what they look for.
`BatchAnalyzer` keeps Presidio's recognizers and scoring, and changes only what they are run on:
- spaCy runs only its `ner` pipe (it has its own tok2vec: tagger, parser, lemmatizer are not needed for
  entities), with `nlp.pipe` over a batch, only on the lines that can hold a name (`name_lines`); the
  entities are handed to Presidio as NlpArtifacts, so nothing is parsed twice.
- Phone numbers (python-phonenumbers, once per region) are looked for only on lines with a digit run
  long enough to be a valid number of that region, e-mail addresses only on lines with an '@', and a
  recognizer whose trigger does not occur in a text is not run at all.
- Context words are read from a small window around each finding, not by walking every token of the
  document for every finding (Presidio's enhancer is quadratic in the document length).
- Documents longer than CHUNK_CHARS are analysed in overlapping chunks.
`fix` then removes Presidio's systematic errors on real text (see there).
Nothing is fetched: the model is an installed package and tldextract uses its bundled suffix list.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
import regex
import spacy
import tldextract
from presidio_analyzer import (
    AnalysisExplanation,
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer, SpacyRecognizer
from spacy.lang.en.stop_words import STOP_WORDS
from spacy.lang.lex_attrs import is_punct
from thinc.api import NumpyOps, set_current_ops

from curate.core.errors import ConfigError
from curate.stages.pii.spec import entity_set, load_recognizers, recognizers_path, secret_types  # noqa: F401 (re-exported)

NON_NER_PIPES = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer", "senter")
CHUNK_CHARS = 100_000  # a longer document is analysed in pieces of about this size ...
CHUNK_OVERLAP = 5_000  # ... each extended by this much on both sides, so a finding on a cut is seen whole
NER_CACHE = 5_000  # NER results remembered per process, by text (boilerplate and copies repeat)
RELOAD_EVERY = 100_000  # texts; spaCy's string store only grows, so the model is reloaded to free it

# A regex every text holding a finding of Presidio's recognizer for the entity matches (derived from
# Presidio 2.2's patterns, which match case-insensitively): without a match the recognizer is not run.
# Each is a necessary part of every pattern of its recognizer: a card number is 4 digits, an optional
# separator and 3 or 4 more; every SSN pattern holds 3 digits, an optional '-', ' ' or '.', and 2 more; an
# IPv4 address (also inside the mapped and embedded IPv6 forms) holds d.d.d.d, and every IPv6 form two
# colons with at most 4 hex digits between them. On short man-page and changelog documents the IP
# recognizer ran on 1,251 of 3,000 documents with the old `\d\.\d|[0-9A-Fa-f]:|::` and runs on 99.
TRIGGERS = {
    "CREDIT_CARD": r"\d{4}[- ]?\d{3}",
    "US_SSN": r"\d{3}[- .]?\d{2}",
    "IBAN_CODE": r"(?i)[A-Z]{2}\d{2}",
    "IP_ADDRESS": r"\d\.\d{1,3}\.\d{1,3}\.\d|:[0-9A-Fa-f]{0,4}:",
    "EMAIL_ADDRESS": r"@",
    "CRYPTO": r"(?i)[13][a-z0-9]{25}",  # '1', '3' or 'bc1', then 25 or more of the base58/bech32 characters
}


@dataclass(frozen=True)
class Span:
    """One finding; offsets are code points into the document text."""

    entity_type: str
    start: int
    end: int
    score: float
    recognizer: str


# -- Presidio, offline -------------------------------------------------------------------------------
# tldextract without suffix-list URLs or cache: the snapshot shipped in the package, never the network.
OFFLINE_TLD = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())


class OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's e-mail recognizer, checking the domain against the bundled suffix list. With
    lines_only, it reads only the lines holding an '@' (its pattern never crosses a line)."""

    def __init__(self, lines_only: bool = False, **kw):
        super().__init__(**kw)
        self.lines_only = lines_only

    def validate_result(self, pattern_text: str) -> bool:
        return OFFLINE_TLD(pattern_text).fqdn != ""

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        if not self.lines_only:
            return super().analyze(text, entities, nlp_artifacts, regex_flags)
        out = []
        for start, end in lines_around(text, [(m, m + 1) for m in _find_all(text, "@")]):
            out.extend(_shifted(super().analyze(text[start:end], entities, nlp_artifacts, regex_flags), start))
        return out


class LinePhoneRecognizer(PhoneRecognizer):
    """Presidio's phone recognizer, run per region only on the lines holding a digit run long enough to
    be a valid number of that region. phonenumbers' candidates never cross a line break and its checks
    look only at a candidate and its neighbouring characters: it finds what the whole-text run finds."""

    def analyze(self, text, entities, nlp_artifacts=None):
        results, runs = [], _digit_runs(text)
        for region in self.supported_regions:
            least = _min_phone_digits(region)
            for start, end in lines_around(text, [(s, e) for s, e, digits in runs if digits >= least]):
                for match in CachedPhoneMatcher(text[start:end], region, leniency=self.leniency):
                    match.start, match.end = match.start + start, match.end + start
                    try:  # as Presidio does: the region the number itself names, else the one searched
                        found = phonenumbers.region_code_for_number(phonenumbers.parse(text[match.start:match.end]))
                    except phonenumbers.NumberParseException:
                        found = region
                    results.append(self._get_recognizer_result(match, text, found, nlp_artifacts))
        return EntityRecognizer.remove_duplicates(results)


PHONE_CACHE: dict[tuple[str, str, int, str, str], Any] = {}  # per process; cleared when it grows past 200k


class CachedPhoneMatcher(phonenumbers.PhoneNumberMatcher):
    """phonenumbers' matcher remembering what each candidate parses to: changelogs and logs repeat their
    dates, times and version numbers, and parsing them once per region is most of the phone cost. A
    verdict depends only on the candidate, region, leniency and the characters either side of it."""

    def _parse_and_verify(self, candidate, offset):
        end = offset + len(candidate)
        key = (candidate, self.preferred_region, self.leniency,
               self.text[offset - 1] if offset > 0 else "", self.text[end] if end < len(self.text) else "")
        if key not in PHONE_CACHE:
            if len(PHONE_CACHE) > 200_000:
                PHONE_CACHE.clear()
            match = super()._parse_and_verify(candidate, offset)
            PHONE_CACHE[key] = None if match is None else match.number
        number = PHONE_CACHE[key]
        return None if number is None else phonenumbers.PhoneNumberMatch(offset, candidate, number)


def required_literals(pattern: str) -> list[tuple[str, bool]] | None:
    """Strings of which every match of the regex holds one, each with whether it matches without regard to
    case (then it is given case-folded); None when that cannot be told (a construct Python's own regex parser
    does not read, or a branch with no literal at all). Read from the parse tree: in a sequence, each run of
    parts that match one of a few known strings ('gh', [pousr], '_' give 'ghp_', 'gho_', ...), a group, a
    repeat of at least one; for an alternation, one string of each branch. Of a sequence's candidates the one
    whose shortest string is longest is kept."""
    import re._constants as C
    import re._parser as P

    try:  # group names may repeat in `regex` (the connection-string entry has two `secret` groups)
        tree = P.parse(regex.sub(r"(?<!\\)\(\?P<\w+>", "(?:", pattern))
    except Exception:  # noqa: BLE001 (any construct `re` does not know: no gate, the regex always runs)
        return None
    most = 64  # strings an exact set may hold

    def flags(ci: bool, av) -> bool:
        return (ci or bool(av[1] & C.SRE_FLAG_IGNORECASE)) and not av[2] & C.SRE_FLAG_IGNORECASE

    def exact(op, av, ci: bool) -> tuple[set[str], bool] | None:
        """The strings this part matches, when they are few and known, and whether case is ignored in it."""
        if op is C.LITERAL:
            return {chr(av)}, ci
        if op is C.IN and all(o is C.LITERAL for o, _ in av) and len(av) <= 8:
            return {chr(a) for _, a in av}, ci
        if op is C.SUBPATTERN:
            return exact_seq(av[3], flags(ci, av))
        if op is C.BRANCH:
            parts = [exact_seq(b, ci) for b in av[1]]
            if any(x is None for x in parts):
                return None
            return set().union(*(x for x, _ in parts)), any(c for _, c in parts)
        return None

    def exact_seq(items, ci: bool) -> tuple[set[str], bool] | None:
        out, any_ci = {""}, False
        for op, av in items:
            part = exact(op, av, ci)
            if part is None or len(out) * len(part[0]) > most:
                return None
            out, any_ci = {a + b for a in out for b in part[0]}, any_ci or part[1]
        return out, any_ci

    def seq(items, ci: bool) -> list[tuple[str, bool]] | None:
        found: list[list[tuple[str, bool]]] = []
        run, run_ci = {""}, False  # a run with any part matched without regard to case is compared folded
        for op, av in list(items) + [(None, None)]:
            part = exact(op, av, ci) if op is not None else None
            if part is not None and len(run) * len(part[0]) <= most:
                run, run_ci = {a + b for a in run for b in part[0]}, run_ci or part[1]
                continue
            if "" not in run:
                found.append([(x.casefold() if run_ci else x, run_ci) for x in sorted(run)])
            run, run_ci = part if part is not None else ({""}, False)
            if part is not None:
                continue
            if op is C.SUBPATTERN:
                inner = seq(av[3], flags(ci, av))
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT) and av[0] >= 1:
                inner = seq(av[2], ci)
            elif op is C.ATOMIC_GROUP:
                inner = seq(av, ci)
            elif op is C.BRANCH:
                branches = [seq(b, ci) for b in av[1]]
                inner = None if any(b is None for b in branches) else [x for b in branches for x in b]
            else:
                inner = None
            if inner:
                found.append(inner)
        return max(found, key=lambda c: (min(len(x) for x, _ in c), -len(c)), default=None)

    return seq(tree, bool(tree.state.flags & C.SRE_FLAG_IGNORECASE))


class SecretRecognizer(PatternRecognizer):
    """One [[secrets]] entry: its regex (the `secret` group, when there is one, is the span, so a key's
    name stays readable); values matching `ignore` are placeholders, not secrets."""

    def __init__(self, spec: dict[str, Any], language: str):
        super().__init__(supported_entity=spec["entity"], name=f"Secret:{spec['entity']}",
                         version=str(spec["version"]), supported_language=language,
                         patterns=[Pattern(spec["entity"].lower(), spec["regex"], float(spec["score"]))],
                         context=list(spec.get("context", [])), global_regex_flags=regex.MULTILINE)
        self.compiled = regex.compile(spec["regex"], regex.MULTILINE)
        self.ignore = regex.compile(spec["ignore"]) if spec.get("ignore") else None
        self.group = "secret" if "secret" in self.compiled.groupindex else 0
        self.literals = required_literals(spec["regex"])

    def may_match(self, text: str) -> bool:
        """False only when the text holds none of the literals every match of the regex holds (a substring
        test: the connection-string regex alone scanned a short document in 0.1 ms, a third of all secrets)."""
        if self.literals is None:
            return True
        folded = None
        for literal, ignore_case in self.literals:
            if not ignore_case and literal in text:
                return True
            if ignore_case:
                folded = text.casefold() if folded is None else folded
                if literal in folded:
                    return True
        return False

    def analyze(self, text, entities, nlp_artifacts=None, regex_flags=None):
        pattern = self.patterns[0]
        out = []
        for m in self.compiled.finditer(text):
            start, end = m.span(self.group)
            if start == end or (self.ignore and self.ignore.match(text[start:end])):
                continue
            explanation = AnalysisExplanation(self.name, pattern.score, pattern.name, pattern.regex,
                                              textual_explanation=f"Detected by `{self.name}`")
            out.append(RecognizerResult(self.supported_entities[0], start, end, pattern.score, explanation,
                                        {RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                         RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return out


class NerOnlyNlpEngine(SpacyNlpEngine):
    """spaCy with only its `ner` pipe (which has its own tok2vec): the same entities, a third of the work."""

    def load(self) -> None:
        # thinc's default matrix multiply (blis) runs at a sixth of numpy's on these machines: the same
        # entities, NER 20% faster (one thread per worker process: see curate.core.executors.local)
        set_current_ops(NumpyOps(use_blis=False))
        self.nlp = {m["lang_code"]: spacy.load(m["model_name"], exclude=list(NON_NER_PIPES)) for m in self.models}

    def _doc_to_nlp_artifact(self, doc, language):
        ents, scores = self._get_updated_entities(doc.ents, self._get_scores_for_entities(doc))
        return Artifacts(doc.text, [Entity(e.label_, e.start_char, e.end_char) for e in ents], scores, self, language)


@dataclass(frozen=True)
class Entity:
    """What Presidio's SpacyRecognizer reads of a spaCy entity."""

    label_: str
    start_char: int
    end_char: int


class Artifacts(NlpArtifacts):
    """NlpArtifacts with entities found beforehand and no tokens: FastContextEnhancer tokenises only
    around findings."""

    def __init__(self, text: str, entities: list[Entity], scores: list[float], nlp_engine, language: str):  # noqa: D107
        self.text, self.entities, self.scores = text, entities, scores
        self.nlp_engine, self.language = nlp_engine, language
        self.tokens, self.tokens_indices, self.lemmas, self.keywords = (), [], [], []

    def to_json(self) -> str:
        return "{}"  # never the text


def _is_keyword(word: str) -> bool:
    """Presidio's keyword test on a lower-cased token: with no lemmatizer the lower-cased word stands in
    for the lemma (empty lemmas would make every context word miss)."""
    return word not in STOP_WORDS and ":" not in word and word not in ("-pron-", "be") and not is_punct(word)


class FastContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's lemma context enhancer reading a window around each finding, widened until the five
    words before it are inside: linear in the text, where Presidio scans every token for every finding."""

    WINDOW = 64  # chars before the finding read first (after: a quarter of it)

    def _extract_surrounding_words(self, nlp_artifacts, word, start):
        text = nlp_artifacts.text
        tokenizer = nlp_artifacts.nlp_engine.get_nlp(nlp_artifacts.language).tokenizer
        end, width = start + len(word), self.WINDOW
        while True:
            lo, hi = max(0, start - width), min(len(text), end + width // 4)
            tokens = tokenizer(text[lo:hi])
            lemmas = [t.lower_ for t in tokens]
            index = min(bisect.bisect_right([t.idx + len(t) for t in tokens], start - lo), len(tokens) - 1)
            back, i = _collect(lemmas, index, self.context_prefix_count + 1, -1)
            fwd, j = _collect(lemmas, index, self.context_suffix_count + 1, 1)
            # a word cut by the window's edge must not count: widen until both walks stop inside
            if (lo == 0 or i > 0) and (hi == len(text) or j < len(lemmas) - 1):
                return list(set(back + fwd))
            width *= 4


def _collect(lemmas: list[str], index: int, n: int, step: int) -> tuple[list[str], int]:
    """Up to n keywords walking from index by step, and the last index looked at."""
    out, i = [], index
    while 0 <= i < len(lemmas) and len(out) < n:
        if _is_keyword(lemmas[i]):
            out.append(lemmas[i])
        i += step
    return out, i - step


def build_registry(spec: dict[str, Any], nlp_engine, fast: bool = True) -> RecognizerRegistry:
    """Presidio's predefined recognizers for the spec's entities (with its context words), and our secrets."""
    language = spec.get("language", "en")
    registry = RecognizerRegistry(supported_languages=[language])
    registry.load_predefined_recognizers(languages=[language], nlp_engine=nlp_engine)
    keep = []
    for rec in registry.recognizers:
        ents = [e for e in rec.supported_entities if e in spec["entities"]]
        if not ents:
            continue
        if isinstance(rec, SpacyRecognizer):
            rec.supported_entities = ents
        elif isinstance(rec, EmailRecognizer):
            rec = OfflineEmailRecognizer(lines_only=fast, supported_language=language)
        elif isinstance(rec, PhoneRecognizer) and fast:
            rec = LinePhoneRecognizer(supported_language=language, supported_regions=rec.supported_regions,
                                      leniency=rec.leniency)
        context = spec["entities"][ents[0]].get("context")
        if context is not None and not isinstance(rec, SpacyRecognizer):
            rec.context = list(context)
        keep.append(rec)
    missing = set(spec["entities"]) - {e for r in keep for e in r.supported_entities}
    if missing:
        raise ConfigError(f"no Presidio recognizer for {', '.join(sorted(missing))}")
    registry.recognizers = keep + [SecretRecognizer(s, language) for s in spec.get("secrets", [])]
    return registry


def analyzer(spec: dict[str, Any], fast: bool = True) -> AnalyzerEngine:
    """An AnalyzerEngine for the spec, its spaCy model named (Presidio's default downloads en_core_web_lg).
    fast=False is the naive set-up the benchmarks compare with: full spaCy pipeline, stock phone and
    e-mail scanning and context enhancer (the e-mail domain check is offline in both)."""
    language = spec.get("language", "en")
    nlp = (NerOnlyNlpEngine if fast else SpacyNlpEngine)(models=[{"lang_code": language, "model_name": spec["model"]}])
    nlp.load()
    return AnalyzerEngine(registry=build_registry(spec, nlp, fast=fast), nlp_engine=nlp, supported_languages=[language],
                          context_aware_enhancer=FastContextEnhancer() if fast else None)


# -- where to look -------------------------------------------------------------------------------------
def _find_all(text: str, needle: str) -> list[int]:
    out, i = [], text.find(needle)
    while i >= 0:
        out.append(i)
        i = text.find(needle, i + 1)
    return out


def _shifted(results: list[RecognizerResult], offset: int) -> list[RecognizerResult]:
    for r in results:
        r.start += offset
        r.end += offset
    return results


def lines_around(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """(start, end) of the lines holding the given (sorted) spans, touching lines merged."""
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if out and s < out[-1][1]:
            continue
        start = text.rfind("\n", 0, s) + 1
        end = text.find("\n", e)
        end = len(text) if end < 0 else end
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


@functools.cache
def _min_phone_digits(region: str) -> int:
    """Fewest digits a valid number of this region can have (phonenumbers' metadata; 1 if unknown)."""
    meta = phonenumbers.PhoneMetadata.metadata_for_region(region)
    lengths = meta.general_desc.possible_length if meta is not None and meta.general_desc is not None else ()
    return min(lengths) if lengths else 1


# digits with phonenumbers' punctuation between them: each of its candidates lies within one such run
_DIGIT_RUN = regex.compile(r"[+(\uFF0B\uFF08]?\p{Nd}(?:[\p{Nd}\-x\u2010-\u2015\u2212\u30FC\uFF0D-\uFF0F \u00A0"
                           r"\u00AD\u200B\u2060\u3000()\uFF08\uFF09\uFF3B\uFF3D.\[\]/~\u2053\u223C\uFF5E]*\p{Nd})?")
_RUN_GAP = ("[\\-x\u2010-\u2015\u2212\u30FC\uFF0D-\uFF0F \u00A0\u00AD\u200B\u2060\u3000()"
            "\uFF08\uFF09\uFF3B\uFF3D.\\[\\]/~\u2053\u223C\uFF5E]")  # the same punctuation, digits left out


def _digit_runs(text: str) -> list[tuple[int, int, int]]:
    return [(m.start(), m.end(), sum(c.isdigit() for c in m.group())) for m in _DIGIT_RUN.finditer(text)]


# a capitalised word standing alone: not glued to a digit, '_', '@' or '/' on either side ('IPv6', 'GPLv3')
_CAPITALISED = regex.compile(r"(?<![\p{L}\p{N}_'.\-/@])\p{Lu}[\p{L}'\u2019\-]*+(?![\p{N}_@/])")
# a part of a word (between hyphens and apostrophes) written as an identifier or an acronym: two capitals
# first ('URIs', 'IDs', 'CMake') or a capital after a small letter ('FileCheck', 'OpenSSL'), unless after a
# name prefix ('McDonald', 'DeVito', 'MacArthur')
_NOT_NAME_PART = regex.compile(r"\p{Lu}\p{Lu}|\p{Ll}(?<!^(?:Mc|Mac|De|Di|Da|Du|La|Le|Van|Von|Fitz))\p{Lu}")
_WORD_PARTS = regex.compile(r"[\-'\u2019]")
_SENTENCE_START = regex.compile(r"(?:^|[.!?]\s)[\s*\-+#>\"'(\[\u2022]*$")
_AFTER_DETERMINER = regex.compile(r"(?i:\b(?:the|a|an|this|that|these|those|any|each|every|our|your|its|their|no"
                                  r"|such|all|some))\s+(?:\p{Lu}[\p{L}'\-]*\s+)*$")
_LOWER_WORD = regex.compile(r"(?<![\p{L}\p{N}_'.\-/@])\p{Ll}[\p{L}'\u2019\-]*")
CAPITALISED_STOP_WORDS = frozenset(w.capitalize() for w in STOP_WORDS)


def name_lines(text: str) -> list[tuple[int, int]]:
    """(start, end) of the runs of lines worth giving to NER: those with a capitalised word that could be
    a name. Not: a word glued to a digit ('IPv6'), an acronym or identifier ('URIs', 'FileCheck': a fifth of
    the candidate lines of short man-page and changelog documents); a stop word; the first word of a line or
    sentence (a name there is found by its other capitalised word); a word after a determiner ('the Free
    Software Foundation'); a word the text also writes in lower case ('License' next to 'license'). The known
    misses: a one-word name opening a sentence, a camel-case name without a usual prefix ('DeShawn' is
    read, 'LaToya' is read, 'JoAnn' is not)."""
    lower: set[str] | None = None
    out: list[tuple[int, int]] = []
    pos = 0
    for line in text.split("\n"):
        end = pos + len(line)
        for m in _CAPITALISED.finditer(line):
            word = m.group()
            if word.isupper() or any(_NOT_NAME_PART.search(w) for w in _WORD_PARTS.split(word)):
                continue
            if word in CAPITALISED_STOP_WORDS or _SENTENCE_START.search(line, 0, m.start()):
                continue
            if _AFTER_DETERMINER.search(line, max(0, m.start() - 60), m.start()):
                continue
            if lower is None:
                lower = set(_LOWER_WORD.findall(text))
            if word.lower() in lower:
                continue
            if out and out[-1][1] + 1 >= pos:
                out[-1] = (out[-1][0], end)
            else:
                out.append((pos, end))
            break
        pos = end + 1
    return out


def _cut(text: str, lo: int, hi: int) -> int:
    """A cut point in text[lo:hi]: after the last blank line, else line break, else space; else hi."""
    for sep in ("\n\n", "\n", " "):
        i = text.rfind(sep, lo, hi)
        if i > lo:
            return i + len(sep)
    return hi


def chunks(text: str, size: int = CHUNK_CHARS, overlap: int = CHUNK_OVERLAP) -> list[tuple[int, int, int, int]]:
    """(start, end, own_start, own_end) per piece of a text: cut at blank lines, line breaks or spaces
    about every `size` chars and extended by `overlap` on both sides. A finding belongs to the piece
    owning its start, so each is reported once, and whole unless longer than the overlap."""
    cuts = [0]
    while len(text) - cuts[-1] > size:
        cuts.append(_cut(text, cuts[-1] + size // 2, cuts[-1] + size))
    cuts.append(len(text))
    return [(max(0, a - overlap), min(len(text), b + overlap), a, b) for a, b in zip(cuts, cuts[1:], strict=False)]


# -- cheap systematic errors ---------------------------------------------------------------------------
_NAME_EDGE = regex.compile(r"^[^\p{L}]+|[^\p{L}.]+$")
_NOT_A_NAME = regex.compile(r"[\p{N}_/@()\[\]{}<>=|\\#$%&*+:;]|^[^\p{Lu}]*$"
                            r"|^(?:(?:Mon|Tues?|Wed(?:nes)?|Thu(?:rs)?|Fri|Sat(?:ur)?|Sun)(?:day)?|Jan(?:uary)?|Feb(?:ruary)?|March|April|June|July|Aug(?:ust)?|Sept?(?:ember)?"
                            r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\.?$")
_URL_USERINFO = regex.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@]*:$")
_GLUED_BEFORE = regex.compile(r"(?:[\w.~#/]|\d:)$")  # the digits continue a word, version, bug number or time
_VERSION_BEFORE = regex.compile(r"(?i)(?:[\w.~:\-]|version(?:\s+(?:to|is|of))?[\s:=]*)$")
_REVISION_AFTER = regex.compile(r"[\-~+][0-9A-Za-z]")
_VERSION_AFTER = regex.compile(r"[~+][0-9A-Za-z]")  # '(20220623.1-1+deb12u1)': a Debian version, not a phone


def fix(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """Presidio's systematic errors on real text, cheaply fixed. PERSON: leading or trailing punctuation
    ('-- Jane Doe') trimmed; dropped when it has digits or code characters ('amd64', 'hostname(1'), no
    capital letter, or is a day or month name. PHONE_NUMBER: dropped when glued to a word, version, bug
    number or time ('3.1-20210419-1', '#338490', '13:07:03 -0400'), holding '~' or followed by a '+'/'~'
    revision ('(20220623.1-1+deb12u1)'). IP_ADDRESS (v4):
    dropped when it is a version ('Standards-Version: 4.6.1.1', '1:0.2.2.2', '1.2.6.3-1'). EMAIL_ADDRESS:
    dropped when it is a URL's password@host. URL: dropped inside an e-mail address. A PHONE_NUMBER or
    CREDIT_CARD overlapping a more specific, validated finding (an IBAN, card, IP address, or an SSN
    with context) is that finding, not a second one."""
    results = resolve_numbers(text, results)
    emails = [(r.start, r.end) for r in results if r.entity_type == "EMAIL_ADDRESS"]
    specific = [(r.start, r.end, r.entity_type) for r in results
                if r.entity_type in ("IBAN_CODE", "CREDIT_CARD", "IP_ADDRESS") or (r.entity_type == "US_SSN"
                                                                                    and r.score >= 0.5)]
    out = []
    for r in results:
        outranked = {"PHONE_NUMBER": ("IBAN_CODE", "CREDIT_CARD", "IP_ADDRESS", "US_SSN"),
                     "CREDIT_CARD": ("IBAN_CODE",)}.get(r.entity_type, ())
        if any(k in outranked and s < r.end and r.start < e for s, e, k in specific):
            continue
        before = text[max(0, r.start - 30):r.start]
        if r.entity_type == "PERSON":
            value = text[r.start:r.end]
            name = _NAME_EDGE.sub("", value)
            if not name or _NOT_A_NAME.search(name) or NOT_PERSON.search(name):
                continue
            r.start += value.index(name)
            r.end = r.start + len(name)
        elif r.entity_type == "PHONE_NUMBER":
            if _GLUED_BEFORE.search(before) or "~" in text[r.start:r.end] or _VERSION_AFTER.match(text, r.end):
                continue
        elif r.entity_type == "IP_ADDRESS" and ":" not in text[r.start:r.end]:
            if _VERSION_BEFORE.search(before) or _REVISION_AFTER.match(text, r.end):
                continue
        elif r.entity_type == "EMAIL_ADDRESS" and _URL_USERINFO.search(text, max(0, r.start - 200), r.start):
            continue
        elif r.entity_type == "URL" and any(s < r.end and r.start < e for s, e in emails):
            continue
        out.append(r)
    return out


# -- numbers that look alike: SSN, phone number, postal code --------------------------------------------
_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY NC ND "
           "OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI").split()
_STATE_NAMES = ("Alabama|Alaska|Arizona|Arkansas|California|Colorado|Connecticut|Delaware|Florida|Georgia|Hawaii|Idaho"
                "|Illinois|Indiana|Iowa|Kansas|Kentucky|Louisiana|Maine|Maryland|Massachusetts|Michigan|Minnesota"
                "|Mississippi|Missouri|Montana|Nebraska|Nevada|New Hampshire|New Jersey|New Mexico|New York"
                "|North Carolina|North Dakota|Ohio|Oklahoma|Oregon|Pennsylvania|Rhode Island|South Carolina"
                "|South Dakota|Tennessee|Texas|Utah|Vermont|Virginia|Washington|West Virginia|Wisconsin|Wyoming")
# what stands right before a US ZIP code: a state ('Boston, MA 02110-1301', 'Massachusetts 02110') or its name
_POSTAL_BEFORE = regex.compile(rf"(?:\b(?:{'|'.join(_STATES)})\.?|\b(?:{_STATE_NAMES})|(?i:\bzip(?:\s*code)?|\bpostal"
                               rf"(?:\s*code)?|\bpost\s*code|\bpostcode))[\s,:#]*$")
_ZIP = regex.compile(r"\d{5}(?:-\d{4})?")
_SSN_SHAPE = regex.compile(r"\d{3}([- .])\d{2}\1\d{4}|\d{9}")  # 3-2-4 with one separator, or 9 digits
SSN_WORDS = frozenset({"ssn", "ssns", "social"})  # context words that name an SSN ('security' alone does not)
PHONE_WORDS = frozenset({"phone", "telephone", "tel", "cell", "cellphone", "mobile", "call", "fax"})
SSN_WITH_CONTEXT = 0.85  # an SSN-shaped number next to 'SSN': as sure as Presidio's medium pattern with context


_WORD = regex.compile(r"[\p{L}]+")


def _words_before(text: str, start: int, n: int = 5) -> set[str]:
    """The n words before an offset, lower-cased (Presidio's context window; its decision process, where it
    records the context word it used, is dropped from the results it returns)."""
    return {w.lower() for w in _WORD.findall(text, max(0, start - 60), start)[-n:]}


def resolve_numbers(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """One type for a number Presidio reads as several, by its format and the words before it:
    - a ZIP or ZIP+4 code after a US state, its name or 'zip'/'postal code' ('Boston, MA 02110-1301', in every
      GPL text) is a postal code: neither a PHONE_NUMBER (phonenumbers takes it for one at 0.4) nor a US_SSN
      (Presidio's 5-4 'very weak' pattern, 0.05);
    - an SSN-shaped number (3-2-4 digits with one separator, or 9 digits) next to 'SSN' or 'social' is a US_SSN
      at 0.85 (the bare 9-digit form gets 0.4 from Presidio, under the policy's minimum), and no PHONE_NUMBER;
    - a number found as both with only phone words before it ('call', 'tel', ...) is a PHONE_NUMBER;
      with neither, its shape decides (3-2-4: US_SSN, as no phone plan groups digits so)."""
    numbers = [r for r in results if r.entity_type in ("US_SSN", "PHONE_NUMBER")]
    if not numbers:
        return results
    drop: set[int] = set()
    for r in numbers:
        value = text[r.start:r.end]
        if _ZIP.fullmatch(value) and _POSTAL_BEFORE.search(text, max(0, r.start - 40), r.start):
            drop.add(id(r))
        elif r.entity_type == "US_SSN" and _SSN_SHAPE.fullmatch(value) and _words_before(text, r.start) & SSN_WORDS:
            r.score = max(r.score, SSN_WITH_CONTEXT)
    for ssn in (r for r in numbers if r.entity_type == "US_SSN" and id(r) not in drop):
        for ph in (r for r in numbers if r.entity_type == "PHONE_NUMBER" and id(r) not in drop):
            if not (ph.start < ssn.end and ssn.start < ph.end):
                continue
            words = _words_before(text, min(ssn.start, ph.start))
            ssn_word, phone_word = bool(words & SSN_WORDS), bool(words & PHONE_WORDS)
            shaped = _SSN_SHAPE.fullmatch(text[ssn.start:ssn.end]) is not None
            if ssn_word or (not phone_word and shaped and ssn.score >= 0.5):
                drop.add(id(ph))
            else:
                drop.add(id(ssn))
    return [r for r in results if id(r) not in drop]


# -- values broken across lines, soft hyphens, zero-width characters and markup --------------------------
INVISIBLE = "\u00ad\u200b\u200c\u200d\u2060\ufeff"  # soft hyphen, zero-width space/joiners, word joiner, BOM
# What a value can be cut by without the cut being part of it: an invisible character; a tag glued to the
# text on both sides ('exam<b>ple</b>.com'); a line break and the next line's indentation between two digits
# ('4111 1111\n    1111 1111': read as one space) or after a digit's '-' or '.' ('536-22-\n  1234'), or inside
# an e-mail address (read as nothing): right after or before its '@', after a '-' or '_' when the next line's
# word holds the '@' ('<t-\n  sato@yk.jp.nec.com>' in groff's man pages), or between the labels of its domain.
# Not after a '.' before the '@': that is a sentence ending ('Disclaims changes.\nmskala@...', 5 times in
# data/samples' copyright files); nor a '.' after an address before a capitalised word
# ('bug-coreutils@gnu.org.\nTo suggest': 'to' is a top-level domain).
_CUT = regex.compile(rf"[{INVISIBLE}]+|(?<=\S)</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>\n]{{0,200}})?/?>(?=\S)"
                     r"|(?<=\d)[ \t]*\n[ \t]*(?=\d)|(?<=\d[\-.])\n[ \t]*(?=\d)"
                     r"|(?<=[\w.\-]@)\n[ \t]*(?=\w)|(?<=[\w.\-])\n[ \t]*(?=@\w)"
                     r"|(?<=\w[\-_])\n[ \t]*(?=[\w.\-]+@\w)"
                     r"|(?<=@[\w\-]+(?:\.[\w\-]+)*\.)\n[ \t]*(?=[a-z0-9][a-z0-9\-]*(?:\.[a-z0-9\-]+)*(?![\w@.]))"
                     r"|(?<=@[\w\-]+(?:\.[\w\-]+)*)\n[ \t]*(?=\.[a-z0-9])")
# What every cut holds (a superset, scanned much faster than _CUT: its look-behinds are tried at every
# position): an invisible character, a '<', an '@', or digits either side of a line break.
_MAY_CUT = regex.compile(rf"[{INVISIBLE}<@]|\d[\-.]?[ \t]*\n[ \t]*\d")
JOINED_ENTITIES = ("CREDIT_CARD", "IBAN_CODE", "EMAIL_ADDRESS", "PHONE_NUMBER", "US_SSN", "IP_ADDRESS", "CRYPTO")


def joined(text: str) -> tuple[str, list[int], list[tuple[int, int]]] | None:
    """The text with its cuts closed (a line break between digits read as one space, any other cut as
    nothing), the original offset of each of its characters (and one past the end), and the cuts' spans in
    the original; None when the text has no cut."""
    cuts = [(m.start(), m.end()) for m in _CUT.finditer(text)]
    if not cuts:
        return None
    parts, where, pos = [], [], 0
    for a, b in cuts:
        parts.append(text[pos:a])
        where.extend(range(pos, a))
        if "\n" in text[a:b] and text[a - 1:a].isdigit() and text[b:b + 1].isdigit():
            parts.append(" ")
            where.append(a)
        pos = b
    parts.append(text[pos:])
    where.extend(range(pos, len(text) + 1))
    return "".join(parts), where, cuts


def _region(text: str, cuts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The line runs around the cuts (the line before a line-break cut through the line after it)."""
    return lines_around(text, [(max(0, a - 1), min(len(text), b + 1)) for a, b in cuts])


# -- names by where they stand: trailers, sign-offs, `Name <mail>`, copyright lines --------------------------
# The small model misses or cuts a third of the names in these places (benchmarks/pii_quality.py); their
# structure says a person's name stands there. A token of a name: a capitalised word (Unicode, with ' - .),
# or a particle between such words.
_TOKEN = r"\p{Lu}[\p{L}\p{M}'\u2019\-]*\.?"
_PARTICLE = r"(?:van|von|der|den|de|da|di|du|del|della|la|le|dos|das|do|bin|ibn|al|zu|ten|ter|y)"
_NAME = rf"{_TOKEN}(?:[ \t]+(?:{_PARTICLE}[ \t]+)*{_TOKEN}){{0,4}}"
# words that make a run of capitalised words a team, project or company rather than a person
NOT_PERSON = regex.compile(r"(?i)\b(?:team|maintainers?|project|force|group|foundation|inc|ltd|llc|gmbh|corp"
                            r"|corporation|company|developers?|packagers?|list|janitor|bot|robot|support|security"
                            r"|qa|debian|ubuntu|gnu|software|university|institute|contributors|authors|community"
                            r"|consortium|systems|technologies|labs?|the|and|org|net|com|copyright)\b")
STRUCTURAL_NAMES = [
    # Debian changelog trailer: ' -- Name <mail>  date' (Debian Policy 4.4): any name, lower case too
    regex.compile(r"^ -- (?P<name>[^<>\n]*?\S)[ \t]+<[^<>\s@]+@[^<>\s]+>", regex.M),
    # a team upload's section header: '  [ Name ]'
    regex.compile(r"^[ \t]*\[ (?P<name>[^\[\]\n\d]*?\S) \][ \t]*$", regex.M),
    # 'Name <mail>' / 'Name (mail)' anywhere: copyright lines, sign-offs, AUTHORS, Author-email fields
    regex.compile(rf"(?<![\p{{L}}\p{{N}}_@.\-])(?P<name>{_NAME})[ \t]+[<(\u27e8]?[ \t]*[\w.+\-]+@[\w\-]+\.[\w.\-]+"),
    # 'Signed-off-by: Name', 'Maintainer: Name', 'Written by Name', 'Copyright (C) 2003, 2004 Name'
    regex.compile(rf"(?:^|(?<=\s))(?:(?:Signed-off|Reviewed|Acked|Tested|Reported|Suggested|Co-authored|Written"
                  rf"|Contributed|Maintained|Patch)[ \-]by|Thanks(?:[ \t]+to)?|Maintainer|Uploaders?|Changed-By|Author)"
                  rf"[ \t]*:?[ \t]+"
                  rf"(?P<name>{_NAME})(?=[ \t]*(?:[<(,;\n]|$|\.[ \t]*$|\.\s|and[ \t]|for[ \t]))", regex.M),
    regex.compile(rf"(?i:copyright)(?:[ \t]*(?:\(c\)|\u00a9))?:?[ \t]+"
                  rf"(?:\d{{4}}(?:[ \t]*[\-\u2013,][ \t]*\d{{2,4}})*,?[ \t]+)+"
                  rf"(?:by[ \t]+)?(?P<name>{_NAME})(?=[ \t]*(?:[<(,;\n]|$|\.[ \t]*$))", regex.M),
]
_CODE_CHARS = regex.compile(r"[\p{N}_/@\[\]{}<>=|\\#$%&*+:;]")
STRUCTURAL_SCORE = 0.85  # the policy's PERSON minimum: found where the text's structure puts a name


def structural_names(text: str) -> list[tuple[int, int]]:
    """(start, end) of the names standing where a text's structure puts a person's name (STRUCTURAL_NAMES):
    two or more words, or one word in a changelog trailer or team header; not a team or company."""
    out = set()
    for i, pattern in enumerate(STRUCTURAL_NAMES):
        for m in pattern.finditer(text):
            name = m.group("name").strip()
            start = m.start("name") + m.group("name").index(name)
            name = name.rstrip(".") if i > 1 else name
            bare = name.split(" (")[0]  # 'Laszlo Boszormenyi (GCS)': the nickname does not decide
            wrong = _CODE_CHARS if i < 2 else _NOT_A_NAME  # a trailer's or team header's: lower case too
            if not name or NOT_PERSON.search(name) or wrong.search(bare):
                continue
            if i > 1 and " " not in name:
                continue
            out.add((start, start + len(name)))
    return sorted(out)


def add_structural_names(text: str, results: list[RecognizerResult]) -> list[RecognizerResult]:
    """The structural names as PERSON findings; a PERSON found by NER overlapping one gives way to it (the
    model cuts 'Johannes Schauer Marin Rodrigues' to its last three words)."""
    names = structural_names(text)
    if not names:
        return results
    kept = [r for r in results if r.entity_type != "PERSON" or not any(s < r.end and r.start < e for s, e in names)]
    meta = {RecognizerResult.RECOGNIZER_NAME_KEY: "StructuralName", RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: "sn"}
    return kept + [RecognizerResult("PERSON", s, e, STRUCTURAL_SCORE, None, dict(meta)) for s, e in names]


# -- the batch analyzer ----------------------------------------------------------------------------
class BatchAnalyzer:
    """Analyzes many documents at a time: `analyze_batch(texts)` gives each one's spans."""

    def __init__(self, spec: dict[str, Any], batch_size: int = 256):
        self.language = spec.get("language", "en")
        self.engine = analyzer(spec, fast=True)
        self.nlp = self.engine.nlp_engine.get_nlp(self.language)
        self.batch_size = batch_size
        self.cache: dict[str, tuple[tuple[int, int, str], ...]] = {}
        self.seen = 0
        recs = self.engine.registry.recognizers
        self.entities = sorted({e for r in recs for e in r.supported_entities})
        self.ner_entities = {e for r in recs if isinstance(r, SpacyRecognizer) for e in r.supported_entities}
        self.triggers = {e: regex.compile(t) for e, t in TRIGGERS.items() if e in self.entities}
        self.secrets = {r.supported_entities[0]: r for r in recs if isinstance(r, SecretRecognizer)}
        # types only NER finds (Presidio's spaCy recognizer also lists PHONE_NUMBER, which its patterns find)
        self.ner_only = self.ner_entities - {e for r in recs if not isinstance(r, SpacyRecognizer)
                                             for e in r.supported_entities}
        # a phone number is a digit run at least as long as the shortest valid number of a searched region
        regions = [reg for r in recs if isinstance(r, PhoneRecognizer) for reg in r.supported_regions]
        least = min((_min_phone_digits(reg) for reg in regions), default=1)
        self.phone_trigger = regex.compile(rf"\p{{Nd}}(?:{_RUN_GAP}*\p{{Nd}}){{{least - 1}}}")
        cfg = self.engine.nlp_engine.ner_model_configuration
        self.labels, self.ignored, self.ner_score = (cfg.model_to_presidio_entity_mapping, set(cfg.labels_to_ignore),
                                                     cfg.default_score)

    def analyze_batch(self, texts: Sequence[str], english: Sequence[bool] | None = None) -> list[list[Span]]:
        """Spans per document, sorted; english[i] False skips NER on document i (another language)."""
        english = english if english is not None else [True] * len(texts)
        pieces = [(i, *c) for i, text in enumerate(texts) for c in chunks(text)]
        ner_in = [self._ner_input(texts[i][a:b]) if english[i] and self.ner_entities else ("", [])
                  for i, a, b, _, _ in pieces]
        entities = self._ner([t for t, _ in ner_in])
        out: list[set[Span]] = [set() for _ in texts]
        for (i, start, end, own_start, own_end), (_, segments), found in zip(pieces, ner_in, entities, strict=True):
            text = texts[i][start:end]
            ents = _map_back(found, segments)
            for r in self._analyze(text, ents):
                if own_start <= start + r.start < own_end:
                    out[i].add(Span(r.entity_type, start + r.start, start + r.end, round(float(r.score), 4),
                                    r.recognition_metadata.get(RecognizerResult.RECOGNIZER_NAME_KEY, "")))
        return [sorted(repeats(texts[i], spans), key=lambda s: (s.start, s.end, s.entity_type, s.recognizer))
                for i, spans in enumerate(out)]

    @staticmethod
    def _ner_input(text: str) -> tuple[str, list[tuple[int, int, int]]]:
        """The lines worth NER joined by blank lines, and (joined start, text start, length) per run: NER reads
        a document's runs together, as each run's neighbours help the model (read alone, 2 of 1,110 labelled
        names were missed in benchmarks/pii_quality.py)."""
        parts, segments, pos = [], [], 0
        for s, e in name_lines(text):
            s = e - len(text[s:e].lstrip(" \t"))  # the model misses 'Florian Weimer' after an indentation
            parts.append(text[s:e])
            segments.append((pos, s, e - s))
            pos += e - s + 2
        return "\n\n".join(parts), segments

    def _ner(self, texts: list[str]) -> list[tuple[tuple[int, int, str], ...]]:
        """(start, end, Presidio entity) per text, one nlp.pipe over the batch; repeats come from a cache."""
        todo = sorted({t for t in texts if t and t not in self.cache})
        if len(self.cache) + len(todo) > NER_CACHE:
            self.cache.clear()
        self.seen += len(todo)
        if self.seen > RELOAD_EVERY:  # same results (hashed features), memory back to a fresh model's
            self.engine.nlp_engine.load()
            self.nlp, self.seen = self.engine.nlp_engine.get_nlp(self.language), len(todo)
        for text, doc in zip(todo, self.nlp.pipe(todo, batch_size=self.batch_size), strict=True):
            ents = ((e.start_char, e.end_char, self.labels.get(e.label_, e.label_)) for e in doc.ents)
            self.cache[text] = tuple(e for e in ents if e[2] in self.ner_entities and e[2] not in self.ignored)
        return [self.cache[t] if t else () for t in texts]

    def _wanted(self, text: str, has_entities: bool) -> list[str]:
        """The entity types a recognizer could find in the text: not those whose trigger does not occur, no
        secret whose literals do not occur, no NER type without NER entities."""
        return [e for e in self.entities
                if (e not in self.triggers or self.triggers[e].search(text))
                and (e not in self.secrets or self.secrets[e].may_match(text))
                and (e != "PHONE_NUMBER" or self.phone_trigger.search(text))
                and (e not in self.ner_only or has_entities)]

    def _analyze(self, text: str, ents: list[Entity]) -> list[RecognizerResult]:
        """Presidio's analyze over one text, handed our NER entities; untriggered recognizers left out, and
        Presidio not called at all when none is left (most short documents: its fixed cost per call, context
        enhancer and result checks, was a fifth of the stage's time on them)."""
        wanted = self._wanted(text, bool(ents))
        found = []
        if wanted:
            arts = Artifacts(text, ents, [self.ner_score] * len(ents), self.engine.nlp_engine, self.language)
            found = fix(text, self.engine.analyze(text, self.language, entities=wanted, nlp_artifacts=arts))
        if "PERSON" in self.ner_entities:
            found = add_structural_names(text, found)
        return self._across_cuts(text, found)

    def _across_cuts(self, text: str, found: list[RecognizerResult]) -> list[RecognizerResult]:
        """Findings of the pattern types across a cut (`joined`), at their offsets in the text; a finding of
        the plain pass inside one of the same type (the part of an e-mail after a soft hyphen) gives way."""
        if not _MAY_CUT.search(text) or not _CUT.search(text):
            return found
        extra: list[RecognizerResult] = []
        for lo, hi in _region(text, [(m.start(), m.end()) for m in _CUT.finditer(text)]):
            piece = joined(text[lo:hi])
            if piece is None:
                continue
            clean, where, cuts = piece
            wanted = [e for e in self._wanted(clean, False) if e in JOINED_ENTITIES]
            if not wanted:
                continue
            arts = Artifacts(clean, [], [], self.engine.nlp_engine, self.language)
            for r in fix(clean, self.engine.analyze(clean, self.language, entities=wanted, nlp_artifacts=arts)):
                start, end = where[r.start] + lo, where[r.end - 1] + 1 + lo
                if any(start - lo < b and a < end - lo for a, b in cuts):  # only what a cut hid
                    r.start, r.end = start, end
                    extra.append(r)
        if not extra:
            return found
        kept = [r for r in found if not any(x.entity_type == r.entity_type and x.start <= r.start and r.end <= x.end
                                            for x in extra)]
        return kept + extra


def repeats(text: str, spans: set[Span]) -> set[Span]:
    """The spans, and each value found once at its other places in the document (whole words, same type and
    score): the model finds a name in one sentence and not in the next, and a redacted document must not keep
    the value elsewhere (2 of 300 changelog entries of data/samples did)."""
    values: dict[str, Span] = {}
    for s in sorted(spans, key=lambda s: (-s.score, s.start)):
        value = text[s.start:s.end]
        if len(value.strip()) >= 3 and "\n" not in value:
            values.setdefault(value, s)
    if not values:
        return spans
    out = set(spans)
    for value in sorted(values, key=len, reverse=True):  # str.find: a third of the cost of one regex alternation
        first, at = values[value], text.find(value)
        while at >= 0:
            end = at + len(value)
            before, after = text[at - 1:at], text[end:end + 2]
            if not (_glued(before, "@.-") or (after[:1] and _glued(after[:1], "@-"))
                    or (after[:1] == "." and after[1:2].isalnum())
                    or any(s.start < end and at < s.end for s in out)):
                out.add(Span(first.entity_type, at, end, first.score, first.recognizer))
            at = text.find(value, at + 1)
    return out


def _glued(char: str, extra: str) -> bool:
    return bool(char) and (char.isalnum() or char == "_" or char in extra)


def _map_back(ents: Sequence[tuple[int, int, str]], segments: list[tuple[int, int, int]]) -> list[Entity]:
    """Entities of the joined NER input at their offsets in the text; any crossing a join is dropped."""
    starts = [j for j, _, _ in segments]
    out = []
    for s, e, label in ents:
        k = bisect.bisect_right(starts, s) - 1
        if k >= 0:
            j, t, n = segments[k]
            if e <= j + n:
                out.append(Entity(label, t + s - j, t + e - j))
    return out
