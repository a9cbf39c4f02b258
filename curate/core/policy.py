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
    rules, seen = [], set()
    for i, r in enumerate(raw.get("rules", [])):
        rid = str(r.get("id", "")).strip()
        where = f"{p}: rule #{i + 1}" + (f" '{rid}'" if rid else "")
        missing = [k for k in ("id", "version", "description", "when", "action") if k not in r]
        if missing:
            raise RuleError(f"{where}: missing {', '.join(missing)}")
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


def compile_rule(rule: Rule, columns: dict[str, str]) -> str:
    """SQL for a rule's `when`, checked against the columns of the signals view."""
    return _Parser(rule, columns).parse()


# -- the signals view and the decisions -------------------------------------------------------------
BASE_SIGNALS = """d.doc_id, d.shard_id, d."row", d.seq, d.url, d.domain, d.meta,
    d.chars AS text_chars, d.bytes AS text_bytes, d.blank AS text_empty"""


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
    selects = ", ".join([BASE_SIGNALS] + [f"{alias}.* EXCLUDE (doc_id)" for alias, _ in parts])
    joins = " ".join(f"LEFT JOIN ({sql}) {alias} USING (doc_id)" for alias, sql in parts)
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
