"""Property tests of what comes from outside or from a rules file: the rule checker, URL normalisation and the
opt-out import's validation never crash, never let anything but the expression language through, and agree with
themselves."""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.core.policy import FUNCTIONS, Rule, RuleError, compile_rule
from curate.stages.optout import registry
from curate.stages.optout.normalize import canonical_url, entry_domain, normalize_url

COLUMNS = {"text_chars": "BIGINT", "domain": "VARCHAR", "optout_matched": "BOOLEAN", "quality_score": "DOUBLE"}
FAST = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# what compiled SQL may contain: our column quotes, literals, operators, keywords and allowed function names
NUMBER = r"(?<![A-Za-z0-9_])\d+(?:\.\d*)?(?:[eE][+-]?\d+)?"  # whole, so 0E0's exponent is not read as a word
WORDS = re.compile(rf"'(?:[^']|'')*'|\"[a-z_]+\"|{NUMBER}|[A-Za-z_][A-Za-z0-9_]*")
ALLOWED = {w.upper() for w in ("and", "or", "not", "in", "is", "null", "true", "false", "between", "like")} \
    | {f.upper() for f in FUNCTIONS}


@FAST
@given(st.text(max_size=80))
def test_any_text_as_a_rule_compiles_or_is_refused_as_a_rule_error(when):
    try:
        sql = compile_rule(Rule("r", "1", "d", when, "drop"), COLUMNS)
    except RuleError:
        return
    for word in WORDS.findall(sql):
        if word.startswith(("'", '"')):
            assert word.startswith("'") or word.strip('"') in COLUMNS
        else:
            assert word.upper() in ALLOWED or re.fullmatch(NUMBER, word), word


expr = st.recursive(
    st.sampled_from(["text_chars", "quality_score", "1", "0.5", "'x'", "domain"]),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["+", "-", "*", "<", ">=", "=", "and", "or"]), inner).map(" ".join),
        inner.map(lambda e: f"({e})"), inner.map(lambda e: f"not {e}"),
        st.tuples(st.sampled_from(["abs", "lower", "length", "coalesce"]), inner).map(lambda t: f"{t[0]}({t[1]})")),
    max_leaves=12)


@FAST
@given(expr)
def test_expressions_of_the_language_compile_and_nest_in_parentheses(when):
    try:
        sql = compile_rule(Rule("r", "1", "d", when, "drop"), COLUMNS)
    except RuleError:
        return  # e.g. a comparison of comparisons: refused, never crashing
    assert sql.count("(") == sql.count(")")


@FAST
@given(st.text(max_size=120))
def test_url_normalisation_never_crashes_and_is_idempotent(url):
    try:
        canonical = canonical_url(url)
    except ValueError:
        return
    assert canonical_url(canonical) == canonical
    assert normalize_url(canonical) == normalize_url(normalize_url(canonical))


@FAST
@given(st.from_regex(r"https?://[a-zA-Z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-zA-Z0-9%._~-]{0,10}){0,3}(\?[a-z=&]{0,10})?",
                     fullmatch=True))
def test_urls_that_parse_keep_their_canonical_form(url):
    try:
        canonical = canonical_url(url)
    except ValueError:
        return
    assert canonical == canonical_url(canonical) and "://" in canonical


@FAST
@given(st.text(max_size=60))
def test_domain_entries_are_refused_with_a_reason_or_accepted_stably(value):
    try:
        d = entry_domain(value)
    except ValueError as e:
        assert str(e)
        return
    assert entry_domain(d) == d


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=8)
lines = st.lists(st.one_of(
    st.fixed_dictionaries({"kind": st.sampled_from(["domain", "url", "url_prefix", "sha256", "author", "work", "x"]),
                           "value": st.text(max_size=40) | st.sampled_from(["example.org", "https://a.example/x"]),
                           "creator": st.text(max_size=12)}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4)), max_size=6)


@settings(max_examples=25, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(lines)
def test_an_import_accepts_or_rejects_every_line_and_never_crashes(ws, tmp_path, requests):
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in requests))
    before = ws.sql("SELECT count(*) FROM optout_events").item()
    report = registry.import_file(ws, path)
    lines_read = len(requests) or 1  # an empty file is one error ("empty file", line 0)
    assert report.added + report.revoked + report.unchanged + len(report.errors) == lines_read
    assert all(reason for _, reason in report.errors)
    assert ws.sql("SELECT count(*) FROM optout_events").item() == before + report.added + report.revoked
    with ws.connect() as con:
        assert registry.check_chain(con) == []  # the hash chain holds whatever came in
