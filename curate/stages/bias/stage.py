"""Bias signals and the bias report: which groups documents mention, and whom the policy removes.

The stage counts lexicon terms per document and group (`bias_terms`) and words per document
(`bias_docs`); it decides nothing. `report` then reads the policy's decisions and measures, in SQL,
representation per group before and after the policy, each rule's removal rate among documents that
mention a group against its overall rate (Wilson interval, flagged where it excludes parity), and how
often group mentions co-occur with toxic terms. Lexicons are TOML files in `rules/lexicons/`.

Matching: lower-cased text, whole words, a hyphen joins words ("man-made" is not "man"), a space in a
term matches any whitespace run; within one lexicon the longest phrase at a position wins and `exclude`
phrases ("man page") are matched and discarded. One regex alternation per lexicon runs over the whole
batch in polars (Rust regex), never a Python loop per term or per document. Terms are ASCII: non-ASCII
letters in the text become a placeholder letter first, so the regex can use the fast ASCII word
boundary (a Unicode `\\b` is ~30x slower) and "ümanü" still does not contain the word "man".
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from curate.core.db import one
from curate.core.errors import ConfigError, UserError
from curate.core.stage import Detector, StageConfig, register
from curate.util.assets import file_asset, rules_dir
from curate.util.sql import literal

if TYPE_CHECKING:
    import duckdb

    from curate.core.workspace import Workspace

TOXICITY = "toxicity"  # the axis whose terms count as toxic language
POLICY = "(policy)"  # pseudo-rule in the removal table: the final decision is `drop`
# A token is a run of letters, digits, marks and underscores (DuckDB RE2); "per million tokens" uses it.
TOKEN_RE = r"[\pL\pN\pM_]+"
NAME = re.compile(r"[a-z][a-z0-9_]*")
RUST_BOUNDARY = r"(?-u:\b)"  # ASCII word boundary: keeps Rust regex on its fast DFA path
PLACEHOLDER = "X"  # stands for any non-ASCII letter in lower-cased text; no lower-cased term contains it
NOT_PROSE = r"[\w.+\-]+@[\w.\-]+|\w+://\S+|\w+(?:\.\w+)+"  # e-mail addresses, URLs, dotted names (he.po, man.viewer)


class LexiconError(ConfigError):
    """A lexicon file that cannot be used; names the file and the problem."""


# -- lexicons --------------------------------------------------------------------------------------
def term_key(term: str) -> str:
    """The form a term and a matched phrase are compared in: lower case, '-' as '_', single spaces."""
    return " ".join(term.lower().replace("-", "_").split())


def _is_word(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


def term_regex(key: str, boundary: str = RUST_BOUNDARY) -> str:
    """Regex source for one term key: whole words, any whitespace run between words."""
    words = ["".join(c if _is_word(c) else "\\" + c for c in w) for w in key.split(" ")]
    body = r"\s+".join(words)
    return (boundary if _is_word(key[0]) else "") + body + (boundary if _is_word(key[-1]) else "")


@dataclass(frozen=True)
class Lexicon:
    axis: str
    version: str
    path: Path
    rationale: str
    groups: dict[str, tuple[str, ...]]
    exclude: tuple[str, ...] = ()
    sha256: str = ""
    keys: dict[str, str | None] = field(default_factory=dict, repr=False)  # term key -> group (None: exclude)

    @property
    def pattern(self) -> str:
        """One alternation over every term and exclusion, longest first (leftmost-first then means longest)."""
        return "(?:" + "|".join(term_regex(k) for k in sorted(self.keys, key=lambda k: (-len(k), k))) + ")"

    @property
    def terms(self) -> int:
        return sum(len(t) for t in self.groups.values())

    def asset(self) -> dict[str, str]:
        # the hash of the bytes this lexicon was loaded from (the file may have changed since)
        return {**file_asset("lexicon", self.path, f"{self.axis} {self.version}"), "sha256": self.sha256}


def load_lexicon(path: str | Path) -> Lexicon:
    """Parse and check one lexicon file: axis, version, rationale, groups of terms, optional exclude."""
    p = Path(path)
    data = p.read_bytes()
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise LexiconError(f"{p}: not a valid TOML file: {e}") from None
    missing = [k for k in ("axis", "version", "rationale", "groups") if not raw.get(k)]
    if missing:
        raise LexiconError(f"{p}: missing {', '.join(missing)}")
    axis = str(raw["axis"])
    if not NAME.fullmatch(axis):
        raise LexiconError(f"{p}: axis {axis!r} must be lower-case letters, digits and '_'")
    if not isinstance(raw["groups"], dict):
        raise LexiconError(f"{p}: [groups] must map group names to lists of terms")
    keys: dict[str, str | None] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for group, terms in raw["groups"].items():
        if not NAME.fullmatch(group):
            raise LexiconError(f"{p}: group {group!r} must be lower-case letters, digits and '_'")
        if not isinstance(terms, list) or not terms or not all(isinstance(t, str) and t.strip() for t in terms):
            raise LexiconError(f"{p}: group {group!r} must be a non-empty list of non-empty strings")
        for t in terms:
            k = term_key(t)
            if not k.isascii():
                raise LexiconError(f"{p}: term {t!r} is not ASCII; write it in ASCII (e.g. 'maori' for 'm\u0101ori')")
            if k in keys:
                raise LexiconError(f"{p}: term {t!r} of group {group!r} is already in group {keys[k]!r}")
            keys[k] = group
        groups[group] = tuple(terms)
    exclude = raw.get("exclude", [])
    if not isinstance(exclude, list) or not all(isinstance(t, str) and t.strip() for t in exclude):
        raise LexiconError(f"{p}: exclude must be a list of non-empty strings")
    terms_only = "|".join(term_regex(k) for k in keys)
    useful = pl.Series([term_key(t) for t in exclude], dtype=pl.String).str.contains(terms_only).to_list()
    for t, contains_a_term in zip(exclude, useful, strict=True):
        k = term_key(t)
        if k in keys:
            raise LexiconError(f"{p}: {t!r} is both a term and an exclusion")
        if not k.isascii():
            raise LexiconError(f"{p}: exclusion {t!r} is not ASCII")
        if not contains_a_term:
            raise LexiconError(f"{p}: exclusion {t!r} contains no term of this lexicon, so it excludes nothing")
        keys[k] = None
    return Lexicon(axis, str(raw["version"]), p, str(raw["rationale"]).strip(), groups, tuple(exclude),
                   hashlib.sha256(data).hexdigest(), keys)


def load_lexicons(directory: str | Path | None = None) -> list[Lexicon]:
    """Every `*.toml` lexicon in a directory (default `rules/lexicons`), sorted by axis."""
    d = Path(directory) if directory else rules_dir() / "lexicons"
    files = sorted(d.glob("*.toml"))
    if not files:
        raise LexiconError(f"no lexicon (*.toml) in {d}")
    lexicons = sorted((load_lexicon(f) for f in files), key=lambda lx: lx.axis)
    axes = [lx.axis for lx in lexicons]
    dup = sorted({a for a in axes if axes.count(a) > 1})
    if dup:
        raise LexiconError(f"{d}: axis {', '.join(dup)} defined by more than one file")
    return lexicons


def prepare(s: pl.Series) -> pl.Series:
    """Text as the lexicon patterns expect it (each step one vectorised pass over the batch)."""
    return (s.str.to_lowercase()
            .str.replace_all(r"[\u00ad\u2010]\s+", "")  # a word broken at a line end ("mini\u2010 mum") is one word
            .str.replace_all(NOT_PROSE, " ")  # e-mail addresses, URLs, dotted names: not prose about people
            .str.replace_all(r"[-\u2010\u2011]", "_")  # a hyphen joins words: "man-made" does not contain "man"
            .str.replace_all("\u2019", "'", literal=True)  # typographic apostrophe, as written in the lexicons
            .str.replace_all(r"[\w&&[^\x00-\x7F]]", PLACEHOLDER))


def match(texts: pl.Series | list[str], lexicons: list[Lexicon]) -> pl.DataFrame:
    """Term counts per text: (i, axis, group_name, count) with i the text's position; vectorised per lexicon."""
    s = prepare(pl.Series("t", texts, dtype=pl.String))
    index = pl.int_range(0, len(s), dtype=pl.Int64, eager=True).alias("i")
    parts = []
    for lx in lexicons:
        table = pl.DataFrame({"key": list(lx.keys), "group_name": list(lx.keys.values())},
                             schema={"key": pl.String, "group_name": pl.String})
        found = (pl.DataFrame([index, s.str.extract_all(lx.pattern).alias("m")])
                 .explode("m").drop_nulls("m")
                 .with_columns(key=pl.col("m").str.replace_all(r"\s+", " "))
                 .join(table, on="key", how="inner")
                 .drop_nulls("group_name")
                 .group_by("i", "group_name").agg(count=pl.len().cast(pl.Int32))
                 .with_columns(axis=pl.lit(lx.axis)))
        parts.append(found.select("i", "axis", "group_name", "count"))
    out = pl.concat(parts) if parts else pl.DataFrame(schema={"i": pl.Int64, "axis": pl.String,
                                                              "group_name": pl.String, "count": pl.Int32})
    return out.sort("i", "axis", "group_name")


# -- the stage -------------------------------------------------------------------------------------
@register
class BiasTerms(Detector):
    """Counts lexicon terms per document and group; words per document for 'per million tokens'."""

    name = "bias"
    categories = ("axis", "group_name")
    audit = "curate.stages.bias.audit"
    throughput = 20e6  # chars/s on one core, measured on data/samples
    version = "1"
    tables = {
        "bias_terms": """CREATE TABLE bias_terms (
            doc_id VARCHAR NOT NULL,
            axis VARCHAR NOT NULL,          -- lexicon axis: gender, religion, ..., toxicity
            group_name VARCHAR NOT NULL,    -- group within the axis (female, muslim, profanity, ...)
            count INTEGER NOT NULL          -- matches in the document (> 0; absent rows mean 0)
        )""",
        "bias_docs": """CREATE TABLE bias_docs (
            doc_id VARCHAR NOT NULL,
            tokens INTEGER NOT NULL         -- words: runs of letters, digits, marks, '_'
        )""",
    }
    output = "bias_terms"
    columns = ("doc_id", "text")

    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.bias]`."""

        lexicons: str = "lexicons"  # directory of lexicon files (*.toml), relative to rules/ unless absolute

    settings: Config

    def lexicon_dir(self) -> Path:
        d = Path(self.settings.lexicons)
        return d if d.is_absolute() else rules_dir() / d

    def lexicons(self) -> list[Lexicon]:
        if getattr(self, "_lexicons", None) is None:
            self._lexicons = load_lexicons(self.lexicon_dir())
        return self._lexicons

    def assets(self) -> list[dict[str, str]]:
        # Every lexicon file: editing, adding or removing one recomputes the stage (the fingerprint hashes them).
        return [lx.asset() for lx in self.lexicons()]

    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        ids = pl.from_arrow(batch.column("doc_id")).cast(pl.String).alias("doc_id")
        found = match(pl.from_arrow(batch.column("text")).cast(pl.String), self.lexicons())
        rows = found.join(pl.DataFrame([ids]).with_row_index("i").cast({"i": pl.Int64}), on="i")
        return rows.select("doc_id", "axis", "group_name", "count").to_arrow()

    def finalize(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute(f"""
            INSERT INTO bias_docs
            SELECT d.doc_id, len(regexp_extract_all(d.text, '{TOKEN_RE}'))::INTEGER FROM documents d
            WHERE NOT EXISTS (SELECT 1 FROM bias_docs b WHERE b.doc_id = d.doc_id)
              AND NOT EXISTS (SELECT 1 FROM stage_errors e WHERE e.stage = 'bias' AND e.doc_id = d.doc_id)""")

    def signals_sql(self, rules: dict[str, Any]) -> str:
        return f"""
            SELECT b.doc_id, b.tokens AS bias_tokens, coalesce(t.toxic, 0) AS bias_toxic_terms,
                   coalesce(t.toxic, 0) * 1000.0 / greatest(b.tokens, 1) AS bias_toxic_per_1k,
                   coalesce(t.groups, []::VARCHAR[]) AS bias_groups
            FROM bias_docs b LEFT JOIN (
                SELECT doc_id, sum(count) FILTER (axis = '{TOXICITY}') AS toxic,
                       list(axis || '/' || group_name ORDER BY axis, group_name)
                           FILTER (axis <> '{TOXICITY}') AS groups
                FROM bias_terms GROUP BY doc_id) t USING (doc_id)"""


# -- the report ------------------------------------------------------------------------------------
@dataclass
class BiasReport:
    """Plain numbers (no document text, no ids): what the CLI prints and notebooks plot."""

    sample: dict[str, Any]
    lexicons: pl.DataFrame
    representation: pl.DataFrame
    removal: pl.DataFrame
    cooccurrence: pl.DataFrame

    def to_dict(self) -> dict[str, Any]:
        return {"sample": self.sample, "lexicons": self.lexicons.to_dicts(),
                "representation": self.representation.to_dicts(), "removal": self.removal.to_dicts(),
                "cooccurrence": self.cooccurrence.to_dicts()}


def wilson_sql(x: str, n: str, z: float) -> tuple[str, str]:
    """SQL for the Wilson score interval of x successes in n trials (exact 0 and 1 at the ends)."""
    z2 = z * z
    p = f"({x})::DOUBLE / ({n})"
    centre = f"({p} + {z2} / (2.0 * ({n})))"
    half = f"({z} * sqrt({p} * (1 - {p}) / ({n}) + {z2} / (4.0 * ({n}) * ({n}))))"
    denom = f"(1 + {z2} / ({n}))"
    low = f"CASE WHEN ({n}) = 0 THEN NULL WHEN ({x}) = 0 THEN 0.0 ELSE ({centre} - {half}) / {denom} END"
    high = f"CASE WHEN ({n}) = 0 THEN NULL WHEN ({x}) = ({n}) THEN 1.0 ELSE ({centre} + {half}) / {denom} END"
    return low, high


MEASURE = {"drop": "dropped", "redact": "redacted", "keep": "fired", "flag": "fired"}


def report(ws: Workspace, confidence: float = 0.95) -> BiasReport:
    """The bias report over the current decisions: see the module docstring and README 'Bias'."""
    from curate.core.policy import current_rules
    from curate.core.workspace import WorkspaceError

    if not 0 < confidence < 1:
        raise UserError(f"confidence must be between 0 and 1, not {confidence}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    with ws.connect() as con:
        present = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        if not {"bias_terms", "bias_docs"} <= present or not con.execute(
                "SELECT count(*) FROM bias_docs").fetchall()[0][0]:
            raise WorkspaceError(f"no bias signals in {ws.path}: run `curate run {ws.path}` (stage bias) first")
        if not con.execute("SELECT count(*) FROM decisions").fetchall()[0][0]:
            raise WorkspaceError(f"no decisions in {ws.path}: run `curate decide {ws.path}` first")
        ruleset = current_rules(con)
        det = BiasTerms(ruleset.raw.get("stages", {}).get("bias", {}))
        lexicons = det.lexicons()
        fps = one(con.execute("SELECT list(DISTINCT fingerprint) FROM stage_runs WHERE stage = 'bias'"))
        # Rule ids and group names are checked names from our own rules files, quoted as SQL literals
        # (binding parameters would cost a pandas import in duckdb 2.0: seconds of CLI start-up).
        lists = {"rule_id": [r.id for r in ruleset.rules] + [POLICY],
                 "rule_action": [r.action for r in ruleset.rules] + ["drop"],
                 "measure": [MEASURE[r.action] for r in ruleset.rules] + ["dropped"],
                 "axis": [lx.axis for lx in lexicons for _ in lx.groups],
                 "group_name": [g for lx in lexicons for g in lx.groups]}
        docs = DOCS.format(**{k: _list_sql(v) for k, v in lists.items()})
        sample = _sample(con, docs)
        representation = con.sql(REPRESENTATION.format(docs=docs)).pl()
        removal = con.sql(_removal_sql(z).format(docs=docs)).pl()
        cooccurrence = con.sql(_cooccurrence_sql(z).format(docs=docs)).pl()
    sample.update({
        "confidence": confidence, "z": round(z, 6),
        "rules": {"path": str(ruleset.path), "sha256": ruleset.sha256},
        "lexicons_current": bool(fps and fps[0] == [det.fingerprint()]),
        "token": "a run of letters, digits, marks or '_' (" + TOKEN_RE + ")",
        "flagged": int((removal["flag"] != "").sum()),
        "comparisons": removal.height,
    })
    lex = pl.DataFrame([{"axis": lx.axis, "version": lx.version, "file": lx.asset()["path"], "sha256": lx.sha256,
                         "groups": len(lx.groups), "terms": lx.terms, "exclusions": len(lx.exclude)}
                        for lx in lexicons])
    return BiasReport(sample, lex, representation, removal, cooccurrence)


def _list_sql(values: list[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]::VARCHAR[]"


DOCS = """_bias_rules AS (SELECT unnest({rule_id}) AS rule_id, unnest({rule_action}) AS rule_action,
                                 unnest({measure}) AS measure, unnest(range(len({rule_id}))) AS ord),
          _bias_groups AS (SELECT unnest({axis}) AS axis, unnest({group_name}) AS group_name),
          docs AS (SELECT b.doc_id, b.tokens, c.action, c.rule_ids
                   FROM bias_docs b JOIN decisions c USING (doc_id)),
          mentions AS (SELECT t.doc_id, t.axis, t.group_name, t.count, d.tokens, d.action
                       FROM bias_terms t JOIN docs d USING (doc_id)),
          groups AS (SELECT axis, group_name FROM _bias_groups
                     UNION SELECT DISTINCT axis, group_name FROM mentions)"""


def _sample(con: duckdb.DuckDBPyConnection, docs: str) -> dict[str, Any]:
    cols = ("documents", "documents_in_report", "documents_without_decision", "documents_not_scanned",
            "documents_after", "tokens_before", "tokens_after", "documents_mentioning_a_group", "toxic_documents")
    row = one(con.execute(f"""
        WITH {docs}
        SELECT (SELECT count(*) FROM documents),
               (SELECT count(*) FROM docs),
               (SELECT count(*) FROM documents d ANTI JOIN decisions c USING (doc_id)),
               (SELECT count(*) FROM documents d ANTI JOIN bias_docs b USING (doc_id)),
               (SELECT count(*) FROM docs WHERE action <> 'drop'),
               (SELECT coalesce(sum(tokens), 0) FROM docs),
               (SELECT coalesce(sum(tokens) FILTER (action <> 'drop'), 0) FROM docs),
               (SELECT count(DISTINCT doc_id) FROM mentions WHERE axis <> '{TOXICITY}'),
               (SELECT count(DISTINCT doc_id) FROM mentions WHERE axis = '{TOXICITY}')"""))
    return {k: int(v) for k, v in zip(cols, row or (), strict=True)}


# Representation: term mentions per million tokens over all documents ("before") and over the documents
# the policy keeps or redacts ("after"); documents mentioning the group before and after.
REPRESENTATION = f"""
    WITH {{docs}},
    totals AS (SELECT sum(tokens) AS tokens, sum(tokens) FILTER (action <> 'drop') AS tokens_after,
                      count(*) AS docs, count(*) FILTER (action <> 'drop') AS docs_after FROM docs),
    agg AS (SELECT axis, group_name, count(*) AS docs_before, sum(count) AS terms_before,
                   count(*) FILTER (action <> 'drop') AS docs_after,
                   coalesce(sum(count) FILTER (action <> 'drop'), 0) AS terms_after
            FROM mentions GROUP BY axis, group_name)
    SELECT g.axis, g.group_name,
           coalesce(a.docs_before, 0) AS docs_before, coalesce(a.docs_after, 0) AS docs_after,
           coalesce(a.terms_before, 0)::BIGINT AS terms_before, coalesce(a.terms_after, 0)::BIGINT AS terms_after,
           coalesce(a.terms_before, 0) * 1e6 / nullif(t.tokens, 0) AS per_million_before,
           coalesce(a.terms_after, 0) * 1e6 / nullif(t.tokens_after, 0) AS per_million_after,
           (coalesce(a.terms_after, 0) * 1e6 / nullif(t.tokens_after, 0))
               / nullif(coalesce(a.terms_before, 0) * 1e6 / nullif(t.tokens, 0), 0) AS change,
           coalesce(a.docs_before, 0) / nullif(t.docs, 0) AS doc_share_before,
           coalesce(a.docs_after, 0) / nullif(t.docs_after, 0) AS doc_share_after
    FROM groups g CROSS JOIN totals t LEFT JOIN agg a USING (axis, group_name)
    ORDER BY g.axis = '{TOXICITY}', g.axis, g.group_name"""


def _removal_sql(z: float) -> str:
    """Per rule and group: removal rate among documents mentioning the group vs the overall rate."""
    low, high = wilson_sql("x", "n", z)
    return f"""
    WITH {{docs}},
    fired AS (SELECT doc_id, action, unnest(rule_ids) AS rule_id FROM docs),
    removed AS (
        SELECT f.doc_id, f.rule_id FROM fired f JOIN _bias_rules r USING (rule_id)
        WHERE CASE r.rule_action WHEN 'drop' THEN f.action = 'drop' WHEN 'redact' THEN f.action = 'redact'
                                 ELSE true END
        UNION ALL SELECT doc_id, '{POLICY}' FROM docs WHERE action = 'drop'),
    overall AS (SELECT r.rule_id, (SELECT count(*) FROM docs) AS n, count(x.doc_id) AS x
                FROM _bias_rules r LEFT JOIN removed x USING (rule_id) GROUP BY r.rule_id),
    gn AS (SELECT axis, group_name, count(*) AS n FROM mentions GROUP BY axis, group_name),
    gx AS (SELECT m.axis, m.group_name, x.rule_id, count(*) AS x
           FROM mentions m JOIN removed x USING (doc_id) GROUP BY m.axis, m.group_name, x.rule_id),
    cells AS (SELECT r.rule_id, r.rule_action, r.measure, r.ord, g.axis, g.group_name, g.n,
                     coalesce(gx.x, 0) AS x, o.n AS overall_docs, o.x AS overall_removed,
                     o.x::DOUBLE / nullif(o.n, 0) AS overall_rate
              FROM _bias_rules r JOIN overall o USING (rule_id) CROSS JOIN gn g
              LEFT JOIN gx ON gx.rule_id = r.rule_id AND gx.axis = g.axis AND gx.group_name = g.group_name),
    ci AS (SELECT *, x::DOUBLE / n AS rate, {low} AS ci_low, {high} AS ci_high FROM cells)
    SELECT rule_id, rule_action, measure, axis, group_name, n AS docs, x AS removed, rate, ci_low, ci_high,
           overall_docs, overall_removed, overall_rate, rate / nullif(overall_rate, 0) AS ratio,
           CASE WHEN ci_low > overall_rate THEN 'over' WHEN ci_high < overall_rate THEN 'under' ELSE '' END AS flag
    FROM ci ORDER BY ord, axis = '{TOXICITY}', axis, group_name"""


def _cooccurrence_sql(z: float) -> str:
    """Per group: share of its documents that also contain toxic terms, against all documents."""
    low, high = wilson_sql("x", "n", z)
    return f"""
    WITH {{docs}},
    toxic AS (SELECT doc_id, sum(count) AS toxic_terms FROM mentions WHERE axis = '{TOXICITY}' GROUP BY doc_id),
    base AS (SELECT count(*) AS n, count(t.doc_id) AS x, coalesce(sum(t.toxic_terms), 0) AS terms,
                    sum(d.tokens) AS tokens FROM docs d LEFT JOIN toxic t USING (doc_id)),
    per_group AS (SELECT m.axis, m.group_name, count(*) AS n, count(t.doc_id) AS x,
                         coalesce(sum(t.toxic_terms), 0) AS terms, sum(m.tokens) AS tokens
                  FROM mentions m LEFT JOIN toxic t USING (doc_id)
                  WHERE m.axis <> '{TOXICITY}' GROUP BY m.axis, m.group_name),
    ci AS (SELECT *, x::DOUBLE / n AS rate, {low} AS ci_low, {high} AS ci_high FROM per_group)
    SELECT ci.axis, ci.group_name, ci.n AS docs, ci.x AS toxic_docs, ci.rate, ci.ci_low, ci.ci_high,
           b.x::DOUBLE / nullif(b.n, 0) AS overall_rate, ci.rate / nullif(b.x::DOUBLE / b.n, 0) AS lift,
           ci.terms * 1e6 / nullif(ci.tokens, 0) AS toxic_per_million,
           b.terms * 1e6 / nullif(b.tokens, 0) AS overall_toxic_per_million,
           CASE WHEN ci.ci_low > b.x::DOUBLE / b.n THEN 'over' WHEN ci.ci_high < b.x::DOUBLE / b.n THEN 'under'
                ELSE '' END AS flag
    FROM ci CROSS JOIN base b ORDER BY ci.axis, ci.group_name"""
