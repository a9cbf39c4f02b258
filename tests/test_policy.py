from __future__ import annotations

from pathlib import Path

import pytest
from conftest import doc, write_jsonl

from curate.core.policy import Rule, RuleError, compile_rule, load_rules

COLUMNS = {"text_chars": "BIGINT", "domain": "VARCHAR", "dup_exact": "BOOLEAN", "score": "DOUBLE"}


def rule(when: str) -> Rule:
    return Rule("r1", "1", "test", when, "drop")


@pytest.mark.parametrize("when,sql", [
    ("text_chars < 100", '("text_chars" < 100)'),
    ("dup_exact and not domain = 'a.org'", '("dup_exact" AND (NOT ("domain" = \'a.org\')))'),
    ("domain in ('a.org', 'b.org') or score >= 0.5", '(("domain" IN (\'a.org\', \'b.org\')) OR ("score" >= 0.5))'),
    ("coalesce(score, 0) * 2 > 1", '((coalesce("score", 0) * 2) > 1)'),
    ("domain is not null", '("domain" IS NOT NULL)'),
    ("score between 0.1 and 0.9", '("score" BETWEEN 0.1 AND 0.9)'),
    ("domain like '%.gov'", "(\"domain\" LIKE '%.gov')"),
    ("domain = 'it''s'", "(\"domain\" = 'it''s')"),
])
def test_expressions_compile_to_parenthesised_sql(when, sql):
    assert compile_rule(rule(when), COLUMNS) == sql


@pytest.mark.parametrize("when,token", [
    ("read_csv('/etc/passwd') is not null", "'read_csv'"),
    ("text_chars > (select 1)", "'select'"),
    ("nosuchcolumn > 1", "'nosuchcolumn'"),
    ("text_chars > 1; drop table documents", "';'"),
    ("text_chars >", "end of expression"),
    ("domain = \"a\"", "'\"'"),
    ("getenv('HOME') = 'x'", "'getenv'"),
    ("text_chars > 1 -- comment", "'comment'"),
])
def test_bad_rules_are_refused_naming_rule_and_token(when, token):
    with pytest.raises(RuleError) as e:
        compile_rule(rule(when), COLUMNS)
    assert "rule 'r1'" in str(e.value) and token in str(e.value)


def write_rules(path: Path, rules: list[tuple[str, str, str]]) -> Path:
    body = '[policy]\nversion = "t"\n'
    for rid, when, action in rules:
        body += (f'\n[[rules]]\nid = "{rid}"\nversion = "1"\ndescription = "{rid} rule"\n'
                 f'when = "{when}"\naction = "{action}"\n')
    path.write_text(body)
    return path


def test_a_rule_reading_a_file_fails_the_run(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(1)]))])
    rules = write_rules(tmp_path / "r.toml", [("sneaky", "text_chars > length(read_text('/etc/hostname'))", "drop")])
    with pytest.raises(RuleError, match="rule 'sneaky'.*read_text"):
        ws.run(rules=rules)
    assert ws.sql("SELECT count(*) FROM decisions").item() == 0


def test_decision_precedence_and_every_fired_rule_recorded(ws, tmp_path):
    texts = ["short", "a somewhat longer text here", "x" * 60, "y" * 200]
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i, text=t) for i, t in enumerate(texts)]))])
    rules = write_rules(tmp_path / "r.toml", [
        ("tag-all", "text_chars > 0", "flag"),
        ("keep-exempt", "text_chars = 5", "keep"),
        ("too-short", "text_chars < 50", "drop"),
        ("redact-long", "text_chars > 40", "redact"),
        ("drop-huge", "text_chars > 100", "drop"),
    ])
    ws.run(rules=rules)
    got = {r[0]: (r[1], r[2]) for r in ws.sql("SELECT doc_id, action, rule_ids FROM decisions").iter_rows()}
    assert got["doc-0"] == ("keep", ["tag-all", "keep-exempt", "too-short"])   # keep before drop wins
    assert got["doc-1"] == ("drop", ["tag-all", "too-short"])
    assert got["doc-2"] == ("redact", ["tag-all", "redact-long"])
    assert got["doc-3"] == ("drop", ["tag-all", "redact-long", "drop-huge"])


def test_changing_a_threshold_reruns_only_the_policy(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i, text="z" * (10 * i)) for i in range(1, 6)]))])
    ws.run(rules=write_rules(tmp_path / "a.toml", [("short", "text_chars < 25", "drop")]))
    runs = ws.sql("SELECT count(*) FROM stage_runs").item()
    s = ws.decide(write_rules(tmp_path / "b.toml", [("short", "text_chars < 45", "drop")]))
    assert s.by_action == {"drop": 4, "keep": 1}
    assert ws.sql("SELECT count(*) FROM stage_runs").item() == runs


def test_default_rules_load():
    rs = load_rules()
    assert rs.rules and all(r.action in ("drop", "redact", "keep", "flag") for r in rs.rules)
    assert len(rs.sha256) == 64
