"""The policy: an ordered list of rules in a TOML file turns signals into one decision per document.

Each rule's `when` is a small expression language over the columns of the `signals` view. It is
parsed and re-emitted as SQL by this module (never spliced): only view columns, literals,
comparisons, boolean and arithmetic operators and an allow-list of pure scalar functions exist in it.

Deciding: every rule is evaluated; `rule_ids` lists all that fired. The first fired rule whose action
is terminal (`drop` or `keep`) settles drop-or-not; a document not dropped is `redact` when any
`redact` rule fired, else `keep`. `flag` rules only annotate. So a `keep` rule exempts a document from
later drop rules but never from redaction.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from curate.core.db import one
from curate.core.errors import UserError
from curate.util.assets import find_rules_file, rules_dir
from curate.util.sql import literal

if TYPE_CHECKING:
    pass

RULE_ACTIONS = ("drop", "redact", "keep", "flag")  # what a rule may do (`flag` only annotates)
DECISIONS = ("keep", "redact", "drop")  # what a document gets: `decisions.action`
FUNCTIONS = {
    "abs", "round", "floor", "ceil", "ln", "log10", "sqrt", "power", "least", "greatest", "coalesce",
    "nullif", "length", "strlen", "lower", "upper", "trim", "starts_with", "ends_with", "contains",
    "regexp_matches", "json_extract_string", "list_contains", "list_has_any", "len",
}
KEYWORDS = {"and", "or", "not", "in", "is", "null", "true", "false", "between", "like"}


class RuleError(UserError):
    """A rule that cannot be used; names the rule and the offending token."""


@dataclass(frozen=True)
class Rule:
    id: str
    version: str
    description: str
    when: str
    action: str


@dataclass
class Ruleset:
    path: Path
    sha256: str
    rules: list[Rule]
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def version(self) -> str:
        return str(self.raw.get("policy", {}).get("version", ""))


def default_rules_path() -> Path:
    return rules_dir() / "default.toml"


def load_rules(path: str | os.PathLike[str] | None = None) -> Ruleset:
    p, tried = find_rules_file(path) if path else (default_rules_path(), [])
    try:
        data = p.read_bytes()
    except OSError as e:
        places = f"; tried {', '.join(os.path.abspath(t) for t in tried)}" if len(tried) > 1 else ""
        raise RuleError(f"{p}: cannot read the rules file ({e.strerror or e}){places}") from None
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RuleError(f"{p}: not a valid TOML file: {e}") from None
    _check_names(raw, p)
    if not raw:
        raise RuleError(f"{p}: the rules file is empty")
    if not isinstance(raw.get("rules", []), list):
        raise RuleError(f"{p}: `rules` must be an array of tables ([[rules]])")
    rules, seen = [], set()
    for i, r in enumerate(raw.get("rules", [])):
        if not isinstance(r, dict):
            raise RuleError(f"{p}: rule #{i + 1} is not a table ([[rules]])")
        rid = r.get("id") if isinstance(r.get("id"), str) else ""
        where = f"{p}: rule #{i + 1}" + (f" '{rid}'" if rid else "")
        missing = [k for k in ("id", "version", "description", "when", "action") if k not in r]
        if missing:
            raise RuleError(f"{where}: missing {', '.join(missing)}")
        wrong = [k for k in ("id", "description", "when", "action") if not isinstance(r[k], str)]
        if wrong or not isinstance(r["version"], str | int) or isinstance(r["version"], bool):
            raise RuleError(f"{where}: {', '.join(wrong or ['version'])} must be a string "
                            "(`when` is an expression in quotes)")
        if not r["when"].strip():
            raise RuleError(f"{where}: `when` is empty")
        if not re.fullmatch(r"[a-z0-9][a-z0-9_.\-]*", rid):
            raise RuleError(f"{where}: id must be lower-case letters, digits, '_', '.', '-'")
        if rid in seen:
            raise RuleError(f"{where}: duplicate id")
        if r["action"] not in RULE_ACTIONS:
            raise RuleError(f"{where}: action {r['action']!r} is not one of {', '.join(RULE_ACTIONS)}")
        seen.add(rid)
        rules.append(Rule(rid, str(r["version"]), str(r["description"]), str(r["when"]), r["action"]))
    return Ruleset(p, hashlib.sha256(data).hexdigest(), rules, raw)


# -- the expression language -------------------------------------------------------------------
TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<num>\d+\.\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|\d+(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|==|[=<>+\-*/%(),])
""", re.VERBOSE)


def tokenize(text: str, rule_id: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m:
            raise RuleError(f"rule '{rule_id}': unexpected character {text[pos]!r} at column {pos + 1}")
        kind = m.lastgroup
        if kind != "ws":
            value = m.group()
            if kind == "name" and value.lower() in KEYWORDS:
                kind, value = "kw", value.lower()
            out.append((kind, value, pos + 1))
        pos = m.end()
    out.append(("end", "", len(text) + 1))
    return out


class _Parser:
    """Recursive descent over the tokens; emits fully parenthesised DuckDB SQL."""

    def __init__(self, rule: Rule, columns: dict[str, str]):
        self.rule, self.columns = rule, columns
        self.toks = tokenize(rule.when, rule.id)
        self.i = 0
        self.used: set[str] = set()

    def fail(self, why: str) -> RuleError:
        kind, value, col = self.toks[self.i]
        token = "end of expression" if kind == "end" else repr(value)
        return RuleError(f"rule '{self.rule.id}': {why} at {token} (column {col})")

    def peek(self, *values: str) -> bool:
        kind, value, _ = self.toks[self.i]
        return kind in ("kw", "op") and value in values

    def take(self, *values: str) -> str:
        if not self.peek(*values):
            raise self.fail(f"expected {' or '.join(values)}")
        self.i += 1
        return self.toks[self.i - 1][1]

    def parse(self) -> str:
        sql = self.or_()
        if self.toks[self.i][0] != "end":
            raise self.fail("unexpected token")
        return sql

    def or_(self) -> str:
        parts = [self.and_()]
        while self.peek("or"):
            self.take("or")
            parts.append(self.and_())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def and_(self) -> str:
        parts = [self.not_()]
        while self.peek("and"):
            self.take("and")
            parts.append(self.not_())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def not_(self) -> str:
        if self.peek("not"):
            self.take("not")
            return f"(NOT {self.not_()})"
        return self.comparison()

    def comparison(self) -> str:
        left = self.additive()
        if self.peek("=", "==", "!=", "<>", "<", "<=", ">", ">="):
            op = self.take("=", "==", "!=", "<>", "<", "<=", ">", ">=")
            op = {"==": "=", "!=": "<>"}.get(op, op)
            return f"({left} {op} {self.additive()})"
        if self.peek("is"):
            self.take("is")
            neg = " NOT" if self.peek("not") and self.take("not") else ""
            self.take("null")
            return f"({left} IS{neg} NULL)"
        neg = ""
        if self.peek("not"):
            self.take("not")
            neg = "NOT "
            if not self.peek("in", "between", "like"):
                raise self.fail("expected in, between or like after not")
        if self.peek("in"):
            self.take("in")
            self.take("(")
            items = [self.literal()]
            while self.peek(","):
                self.take(",")
                items.append(self.literal())
            self.take(")")
            return f"({left} {neg}IN ({', '.join(items)}))"
        if self.peek("between"):
            self.take("between")
            low = self.additive()
            self.take("and")
            return f"({left} {neg}BETWEEN {low} AND {self.additive()})"
        if self.peek("like"):
            self.take("like")
            kind = self.toks[self.i][0]
            if kind != "str":
                raise self.fail("like needs a string pattern")
            return f"({left} {neg}LIKE {self.literal()})"
        return left

    def additive(self) -> str:
        sql = self.multiplicative()
        while self.peek("+", "-"):
            op = self.take("+", "-")
            sql = f"({sql} {op} {self.multiplicative()})"
        return sql

    def multiplicative(self) -> str:
        sql = self.unary()
        while self.peek("*", "/", "%"):
            op = self.take("*", "/", "%")
            sql = f"({sql} {op} {self.unary()})"
        return sql

    def unary(self) -> str:
        if self.peek("-"):
            self.take("-")
            return f"(- {self.unary()})"
        return self.primary()

    def literal(self) -> str:
        kind, value, _ = self.toks[self.i]
        if kind == "num":
            self.i += 1
            return value
        if kind == "str":
            self.i += 1
            return literal(value[1:-1].replace("''", "'"))
        if kind == "kw" and value in ("true", "false", "null"):
            self.i += 1
            return value.upper()
        if kind == "op" and value == "-" and self.toks[self.i + 1][0] == "num":
            self.i += 2
            return "-" + self.toks[self.i - 1][1]
        raise self.fail("expected a literal")

    def primary(self) -> str:
        kind, value, _ = self.toks[self.i]
        if kind in ("num", "str") or (kind == "kw" and value in ("true", "false", "null")):
            return self.literal()
        if kind == "op" and value == "(":
            self.take("(")
            sql = self.or_()
            self.take(")")
            return f"({sql})"
        if kind == "name":
            self.i += 1
            if self.peek("("):
                if value.lower() not in FUNCTIONS:
                    self.i -= 1
                    raise self.fail(f"function not allowed (allowed: {', '.join(sorted(FUNCTIONS))})")
                self.take("(")
                args = []
                if not self.peek(")"):
                    args.append(self.or_())
                    while self.peek(","):
                        self.take(",")
                        args.append(self.or_())
                self.take(")")
                return f"{value.lower()}({', '.join(args)})"
            if value not in self.columns:
                self.i -= 1
                close = difflib.get_close_matches(value, list(self.columns), n=3, cutoff=0.6)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise self.fail(f"unknown column (see `curate signals` for the columns of the signals view){hint}")
            self.used.add(value)
            return f'"{value}"'
        raise self.fail("unexpected token")


MAX_DEPTH = 64  # nested parentheses, functions and `not`s in one `when`; beyond it the rule is refused


def compile_rule(rule: Rule, columns: dict[str, str]) -> str:
    """SQL for a rule's `when`, checked against the columns of the signals view."""
    depth = max_nesting(rule.when)
    if depth > MAX_DEPTH:
        raise RuleError(f"rule '{rule.id}': the expression nests {depth} levels deep (at most {MAX_DEPTH})")
    try:
        return _Parser(rule, columns).parse()
    except RecursionError:
        raise RuleError(f"rule '{rule.id}': the expression is too deeply nested") from None


def max_nesting(text: str) -> int:
    """Deepest nesting of parentheses and `not` in an expression (a cheap bound before parsing it)."""
    depth = deepest = nots = 0
    for tok in re.finditer(r"[()]|\bnot\b", text, re.IGNORECASE):
        if tok.group() == "(":
            depth += 1
        elif tok.group() == ")":
            depth -= 1
        else:
            nots += 1
        deepest = max(deepest, depth + nots)
    return deepest


NAME_SECTIONS = {"pii.entities": "entity types"}  # tables of a rules file whose keys become SQL column names


def _check_names(raw: dict[str, Any], path: Path) -> None:
    """Keys a stage splices into SQL as names (e.g. `[pii.entities]` -> `pii_<type>` columns) must be plain
    identifiers: a rules file can then never smuggle SQL through a key."""
    for dotted, what in NAME_SECTIONS.items():
        table: Any = raw
        for part in dotted.split("."):
            table = table.get(part, {}) if isinstance(table, dict) else {}
        for key in table if isinstance(table, dict) else ():
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}", str(key)):
                raise RuleError(f"{path}: [{dotted}] key {key!r}: {what} are letters, digits and '_' only")


# -- the signals view and the decisions -------------------------------------------------------------
BASE_SIGNALS = """d.doc_id, d.shard_id, d."row", d.seq, d.url, d.domain, d.meta,
    d.chars AS text_chars, d.bytes AS text_bytes, d.blank AS text_empty,
    coalesce(f.stages, []::VARCHAR[]) AS stage_failed,
    coalesce(list_has_any(f.stages, {safety}), false) AS stage_failed_safety"""
# Fail closed: a stage that raised on a document leaves it unchecked, not clean. `stage_failed` lists the stages
# that failed on it (stage_errors); `stage_failed_safety` says whether one of them is a safety stage
# (`[policy] safety_stages`), which the default rule `stage-error` drops.
SAFETY_STAGES = ("optout", "pii", "licenses", "confidential", "phi")
FAILED = ("LEFT JOIN (SELECT doc_id, list(DISTINCT stage ORDER BY stage) AS stages FROM stage_errors "
          "GROUP BY doc_id) f USING (doc_id)")


def safety_stages(rules: dict[str, Any]) -> list[str]:
    """The stages whose failure on a document holds it back: `[policy] safety_stages`, else SAFETY_STAGES."""
    stages = rules.get("policy", {}).get("safety_stages", list(SAFETY_STAGES))
    if not isinstance(stages, list) or not all(isinstance(x, str) for x in stages):
        raise RuleError("[policy] safety_stages must be a list of stage names")
    return stages


def build_signals_view(con: duckdb.DuckDBPyConnection, rules: dict[str, Any] | None = None,
                       only: str | None = None, temp: bool = False) -> dict[str, str]:
    """(Re)create the `signals` view: documents joined with every stage's per-document signals.

    With `only` (a table of doc_ids) the temp view `signals_subset` is made instead, over those documents
    alone, so re-deciding a few documents does not recompute the per-document base columns of all. With
    `temp`, the view is a temporary one of this connection (a read-only connection can make it)."""
    from curate.core.stage import instances

    existing = {r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
    rules = rules if rules is not None else load_rules().raw
    parts = [(f"s{i}", sql) for i, det in enumerate(instances(rules))
             if set(det.tables) <= existing and (sql := det.signals_sql(rules))]
    safety = "[" + ", ".join(literal(x) for x in safety_stages(rules)) + "]::VARCHAR[]"
    selects = ", ".join([BASE_SIGNALS.format(safety=safety)] + [f"{alias}.* EXCLUDE (doc_id)" for alias, _ in parts])
    joins = " ".join([FAILED] + [f"LEFT JOIN ({sql}) {alias} USING (doc_id)" for alias, sql in parts])
    docs, view = ("documents", "TEMP VIEW signals" if temp else "VIEW signals") if only is None else \
        (f"(SELECT * FROM documents SEMI JOIN {only} USING (doc_id))", "TEMP VIEW signals_subset")
    con.execute(f"CREATE OR REPLACE {view} AS SELECT {selects} FROM {docs} d {joins}")
    return {name: typ for name, typ, *_ in con.execute(f"DESCRIBE {view.split()[-1]}").fetchall()}


def decisions_sql(ruleset: Ruleset, columns: dict[str, str], source: str = "signals") -> str:
    """A SELECT producing (doc_id, action, rule_ids, reasons) for every document, written nowhere."""
    fired = {r.id: f"coalesce({compile_rule(r, columns)}, false)" for r in ruleset.rules}

    ids = ", ".join(f"CASE WHEN f{i} THEN {literal(r.id)} END" for i, r in enumerate(ruleset.rules))
    reasons = ", ".join(f"CASE WHEN f{i} THEN {literal(r.description)} END" for i, r in enumerate(ruleset.rules))
    terminal = " ".join(f"WHEN f{i} THEN '{r.action}'" for i, r in enumerate(ruleset.rules)
                        if r.action in ("drop", "keep"))
    redact = " OR ".join(f"f{i}" for i, r in enumerate(ruleset.rules) if r.action == "redact") or "false"
    flags = ", ".join(f"{sql} AS f{i}" for i, sql in enumerate(fired.values()))
    action = (f"CASE WHEN (CASE {terminal} END) = 'drop' THEN 'drop' " if terminal else "CASE ") + \
        f"WHEN {redact} THEN 'redact' ELSE 'keep' END"
    empty = "[]::VARCHAR[]"
    return f"""SELECT doc_id, {action} AS action,
                      {f'list_filter([{ids}], lambda x: x IS NOT NULL)' if ids else empty} AS rule_ids,
                      {f'list_filter([{reasons}], lambda x: x IS NOT NULL)' if reasons else empty} AS reasons
               FROM (SELECT doc_id{', ' + flags if flags else ''} FROM {source})"""


def check_rules(con: duckdb.DuckDBPyConnection, ruleset: Ruleset) -> dict[str, str]:
    """Compile every rule against the signals view and evaluate it on the documents there are now: a rule
    that cannot be used (an unknown column, a type error, `sqrt(-1)`, an invalid regex or JSON path) is a
    RuleError naming it, raised before any detector runs or any decision is written."""
    columns = build_signals_view(con, ruleset.raw, temp=True)
    try:
        # every column used, or DuckDB would prune the rules' expressions away unevaluated
        con.execute(f"SELECT count(action), sum(len(rule_ids)) FROM ({decisions_sql(ruleset, columns)})").fetchall()
    except duckdb.Error:
        for rule in ruleset.rules:  # which rule: each alone, first failure named
            try:
                con.execute(f"SELECT count(*) FILTER ({compile_rule(rule, columns)}) FROM signals").fetchall()
            except duckdb.Error as e:
                raise RuleError(f"rule '{rule.id}': {_duckdb_reason(e)} (when {rule.when})") from None
        raise
    finally:
        con.execute("DROP VIEW IF EXISTS temp.signals")
    return columns


def _duckdb_reason(e: BaseException) -> str:
    text = str(e).split("\n\nLINE ")[0].strip()
    return " ".join(re.sub(r"^[A-Za-z ]+ Error: ", "", text).split())


def current_rules(con: duckdb.DuckDBPyConnection) -> Ruleset:
    """The rules file behind the current decisions (the latest `policy_runs` row; the default file before any
    decision). A file that is gone or was edited since is an error: its hash would not be the one used."""
    row = one(con.execute("SELECT rules_sha256, rules_path FROM policy_runs ORDER BY decided_at DESC LIMIT 1"))
    if not row:
        return load_rules()
    sha, path = row
    for candidate in (path, None):  # None: the default file, which may live elsewhere than when it was used
        try:
            ruleset = load_rules(candidate)
        except RuleError:
            continue
        if ruleset.sha256 == sha:
            return ruleset
    raise RuleError(f"the rules file behind the current decisions ({path}, sha256 {sha[:12]}…) is gone or was "
                    "edited since: decide again with `curate decide WS --rules FILE`")
