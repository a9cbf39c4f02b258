"""Reservation standards of 2026 (IETF AI preferences, Content Signals, TDMRep meta, CAWG assertions), their
dated evidence, registry governance (public suffixes, masked creators), and the hardening of the opt-out
parsers against hostile input (backtracking patterns, deeply nested JSON)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
from pathlib import Path

import pytest
from conftest import CURATE, write_jsonl

from curate import Workspace
from curate.stages.optout import registry, standards
from curate.stages.optout.normalize import entry_domain, json_depth, loads_bounded, prune_json
from curate.stages.optout.sitefiles import Glob, parse_robots, parse_tdmrep, usage_reservation
from curate.stages.optout.stage import RESERVING_MARKERS, OptOut, doc_keys

FETCHED = "2026-11-20T08:00:00Z"
ENV = {**os.environ, "COLUMNS": "250"}
AGENTS = ("GPTBot", "CCBot")


def _text(i: int) -> str:
    return " ".join(f"w{i}x{k}" for k in range(40))


def _credentials(entries: dict, active: bool = True) -> dict:
    """A C2PA manifest store (as c2patool prints it) whose active manifest carries a CAWG assertion; an older
    ingredient manifest says the opposite and must not count."""
    store = {"manifests": {
        "urn:old": {"assertions": [{"label": "cawg.training-mining",
                                    "data": {"entries": {"cawg.ai_training": {"use": "allowed"}}}}]},
        "urn:new": {"assertions": [{"label": "c2pa.actions", "data": {"actions": []}},
                                   {"label": "cawg.training-mining", "data": {"entries": entries}}]}}}
    if active:
        store["active_manifest"] = "urn:new"
    return store


DOCS = [
    {"id": "cu", "text": _text(0), "url": "https://news.example.com/a",
     "meta": {"headers": {"Content-Usage": "train-ai=n, search=y"}}},
    {"id": "cu-yes", "text": _text(1), "url": "https://news.example.com/b",
     "meta": {"headers": {"Content-Usage": "search=y, train-ai=y"}}},
    {"id": "cawg", "text": _text(2), "url": "https://photos.example.net/1",
     "meta": {"c2pa": json.dumps(_credentials({"cawg.ai_generative_training": {"use": "notAllowed"}}))}},
    {"id": "cawg-terms", "text": _text(3), "url": "https://photos.example.net/2",
     "meta": {"content_credentials": _credentials({"cawg.ai_training": {"use": "constrained",
                                                                        "constraint_info": "licence at x"}})}},
    {"id": "cawg-bare", "text": _text(4), "url": "https://photos.example.net/3",
     "meta": {"content_credentials": _credentials({"cawg.ai_training": {"use": "constrained"}})}},
    {"id": "tdm-meta", "text": _text(5), "url": "https://books.example.org/x",
     "meta": {"html_meta": {"tdm-reservation": "1", "tdm-policy": "https://books.example.org/policy.json"}}},
    {"id": "site-usage", "text": _text(6), "url": "https://shop.example.com/catalog/item"},
    {"id": "site-signal", "text": _text(7), "url": "https://shop.example.com/blog/post"},
    {"id": "site-open", "text": _text(8), "url": "https://shop.example.com/open/page"},
    {"id": "plain", "text": _text(9), "url": "https://plain.example.com/"},
]
ROBOTS = """# shop.example.com
User-agent: *
Allow: /
Content-Usage: train-ai=y
Content-Usage: /catalog/ train-ai=n, search=y
Content-Signal: /blog/ search=yes, ai-train=no
Content-Signal: /open/ search=yes, ai-train=yes
"""


@pytest.fixture
def rws(tmp_path: Path) -> Workspace:
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(tmp_path / "docs.jsonl")])
    ws.run(workers=1)
    return ws


def _signals(ws) -> dict[str, dict]:
    return {r["doc_id"]: r for r in ws.sql("SELECT doc_id, optout_reserved, optout_reservations FROM signals"
                                           ).iter_rows(named=True)}


# -- parsers -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, reserved, keys", [
    ("train-ai=n, search=y", True, ("train-ai",)),
    ("search=y", None, ()),
    ("train-genai=n", True, ("train-genai",)),
    ("train-ai=y, train-genai=n", True, ("train-genai",)),  # most restrictive of the training categories
    ("bots=n", True, ("bots",)),  # the parent category decides when no training category is stated
    ("bots=n, train-ai=y", False, ("train-ai",)),  # a narrower category overrides its parent
    ("train-ai=n;note=\"x\", search=?1", True, ("train-ai",)),  # parameters and booleans parse
    ("train-ai=\"n\"", None, ()),  # a string is not the token n
    ("train-ai=y, train-ai=n", True, ("train-ai",)),  # RFC 9651: the last value of a repeated key
])
def test_ai_preferences(text, reserved, keys):
    pref = standards.aipref(text)
    assert pref.reserved is reserved and pref.keys == keys


@pytest.mark.parametrize("bad", ["Train-AI=n", "train-ai=n,", "train-ai=n search=y", "=n", "train-ai=(n"])
def test_ai_preferences_that_do_not_parse_are_ignored(bad):
    assert standards.parse_dictionary(bad) is None and standards.aipref(bad) is None


def test_content_signals_and_most_restrictive():
    assert standards.content_signal("search=yes, ai-train=no").reserved is True
    assert standards.content_signal("Search=Yes,AI-Train=Yes").reserved is False
    assert standards.content_signal("ai-input=no").reserved is None
    assert standards.content_signal("ai-train") is None
    prefs = [standards.aipref("train-ai=y"), standards.aipref("search=y"), standards.aipref("train-ai=n")]
    assert standards.most_restrictive(prefs) is prefs[2]
    assert standards.most_restrictive(prefs[:2]) is prefs[0]


def test_robots_content_usage_and_content_signal_lines():
    r = parse_robots(ROBOTS + "\nUser-agent: GPTBot\nDisallow: /x\nContent-Usage: /gpt/ bots=n\n")
    assert usage_reservation(r, "/catalog/item", AGENTS, "content_usage").startswith(
        "group *: Content-Usage: /catalog/ train-ai=n, search=y (line 5)")
    assert usage_reservation(r, "/other", AGENTS, "content_usage") is None  # train-ai=y on every other path
    assert "Content-Usage: /gpt/ bots=n" in usage_reservation(r, "/gpt/a", AGENTS, "content_usage")
    assert usage_reservation(r, "/gpt/a", ("CCBot",), "content_usage") is None  # GPTBot's group only
    assert usage_reservation(r, "/blog/post", AGENTS, "content_signal").endswith("[ai-train]")
    assert usage_reservation(r, "/open/x", AGENTS, "content_signal") is None
    # A line outside any group applies to every agent.
    top = parse_robots("Content-Signal: ai-train=no\nUser-agent: *\nAllow: /\n")
    assert "group (none)" in usage_reservation(top, "/a", AGENTS, "content_signal")


def test_cawg_assertions():
    def markers(entries, **kw):
        return doc_keys({"c2pa": _credentials(entries, **kw)}).markers

    assert markers({"cawg.ai_training": {"use": "notAllowed"}}) == ["cawg:ai_training=notAllowed"]
    assert markers({"cawg.ai_training": {"use": "constrained"}}) == ["cawg:ai_training=notAllowed"]
    assert markers({"cawg.ai_training": {"use": "constrained", "constraint_info": "see x"}}) == \
        ["cawg:ai_training=constrained"]
    assert markers({"cawg.data_mining": {"use": "notAllowed"}}) == ["cawg:data_mining=notAllowed"]
    assert markers({"cawg.ai_training": {"use": "allowed"}}) == []
    assert markers({"cawg.ai_training": {"use": "maybe"}}) == []
    # Without active_manifest and with two manifests, none is the asset's: nothing is read.
    assert markers({"cawg.ai_training": {"use": "notAllowed"}}, active=False) == []
    assert doc_keys({"c2pa": "{not json"}).markers == []
    assert "cawg:data_mining=notAllowed" not in RESERVING_MARKERS  # only training entries reserve the text
    ev = doc_keys({"c2pa": _credentials({"cawg.ai_training": {"use": "constrained"}})}).evidence
    assert ev == [{"marker": "cawg:ai_training=notAllowed", "source": "document content credentials",
                   "value": "cawg.training-mining cawg.ai_training: constrained (no terms: read as notAllowed)"}]


def test_tdmrep_meta_tag_and_policy_are_evidence():
    keys = doc_keys({"html_meta": {"tdm-reservation": "1", "tdm-policy": "https://p.example/policy.json"},
                     "headers": {"Content-Usage": ["search=y", "train-genai=n"]}})
    assert keys.markers == ["content-usage:train-ai=n", "tdm-reservation:1"] and keys.tdm == 1
    assert keys.evidence[1]["value"] == "html_meta tdm-reservation: 1 (tdm-policy https://p.example/policy.json)"
    assert keys.evidence[0]["value"] == "headers Content-Usage: train-genai=n [train-genai]"


def test_every_reserving_marker_and_site_kind_belongs_to_a_versioned_standard():
    for marker in RESERVING_MARKERS:
        assert standards.standard_of(marker) is not None, marker
    for kind in ("robots_txt", "ai_txt", "tdmrep", "content_usage", "content_signal"):
        assert standards.standard_of(kind) is not None, kind
    assert standards.standards_version() and {s.id for s in standards.standards() if s.draft} >= \
        {"aipref", "content-signals"}
    assets = {a["kind"]: a for a in OptOut().assets()}
    path = standards.standards_file()
    assert assets["optout-standards"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# -- hardening ---------------------------------------------------------------------------------------------
def _regex(pattern: str) -> re.Pattern[str]:
    """The backtracking translation the matcher replaced, as the reference of what a pattern means."""
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    return re.compile(".*".join(re.escape(p) for p in body.split("*")) + (r"\Z" if anchored else ""), re.DOTALL)


def test_wildcard_matching_agrees_with_the_regex_and_is_linear():
    rnd = random.Random(9309)
    for _ in range(20_000):
        pattern = "".join(rnd.choice("ab*/") for _ in range(rnd.randint(0, 7))) + rnd.choice(["", "$"])
        path = "".join(rnd.choice("ab/") for _ in range(rnd.randint(0, 9)))
        assert Glob(pattern).match(path) == bool(_regex(pattern).match(path)), (pattern, path)
    # `/*a*a...*b` against a long path of a's: the regex backtracks exponentially (it never finished in
    # `optout apply`); one find per segment answers at once.
    robots = parse_robots("User-agent: *\nDisallow: /*" + "a*" * 40 + "b\n")
    assert robots.blocking_rule("GPTBot", "/" + "a" * 200_000) is None
    assert robots.blocking_rule("GPTBot", "/" + "a" * 200_000 + "b") is not None


def test_json_depth_is_bounded():
    deep = "[" * 100_000 + "]" * 100_000
    assert json_depth('{"a": "[[[[", "b": [[1]]}') == 3
    with pytest.raises(ValueError, match="nested 100000 levels deep"):
        loads_bounded(deep)
    assert prune_json('{"keep": 1, "deep": ' + deep + "}", 3)["keep"] == 1
    with pytest.raises(ValueError, match="nested"):
        parse_tdmrep(deep)


def test_a_deeply_nested_import_line_is_rejected_alone(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    lines = [json.dumps({"kind": "domain", "value": "one.example.com", "creator": "A"}),
             '{"kind": "domain", "value": ' + "[" * 50_000 + "]" * 50_000 + ', "creator": "B"}',
             json.dumps({"kind": "domain", "value": "two.example.com", "creator": "C"})]
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n")
    r = registry.import_file(ws, tmp_path / "in.jsonl")
    assert r.added == 2 and len(r.errors) == 1
    assert r.errors[0][0] == 2 and "50001 levels deep" in r.errors[0][1]
    (tmp_path / "tdmrep.json").write_text("[" * 5000 + "]" * 5000)
    with pytest.raises(registry.RegistryError, match="levels deep"):
        registry.import_site(ws, "one.example.com", tdmrep=tmp_path / "tdmrep.json", fetched_at=FETCHED)


def test_a_document_with_deep_meta_is_still_matched_and_reserved(tmp_path):
    """Fail closed: meta nested 1,000+ levels deep made the stage fail on the document, which was kept."""
    junk = "[" * 1500 + "]" * 1500  # json.dumps itself cannot write this (RecursionError)
    deep = '{"html_meta": {"robots": "noai"}, "author": "Ann Example", "junk": ' + junk + "}"
    rows = [f'{{"id": "deep", "text": "{_text(1)}", "url": "https://deep.example.com/p", "meta": {deep}}}'.encode(),
            f'{{"id": "deep-plain", "text": "{_text(2)}", "url": "https://deep.example.com/q", '
            f'"meta": {{"junk": {junk}}}}}'.encode()]
    write_jsonl(tmp_path / "d.jsonl", rows)
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(tmp_path / "d.jsonl")])
    assert ws.sql("SELECT count(*) AS n FROM documents")["n"][0] == 2
    registry.add(ws, "domain", "deep.example.com", "Site owner", received_at=FETCHED)
    ws.run(workers=1)
    assert ws.sql("SELECT count(*) AS n FROM stage_errors WHERE stage = 'optout'")["n"][0] == 0
    docs = {r["doc_id"]: r for r in ws.sql("SELECT doc_id, host, markers, authors FROM optout_docs"
                                           ).iter_rows(named=True)}
    assert docs["deep"]["host"] == "deep.example.com" and docs["deep"]["authors"] == ["ann example"]
    assert docs["deep"]["markers"] == ["meta:truncated", "robots:noai"]
    sig = {r["doc_id"]: r for r in ws.sql("SELECT doc_id, optout_matched, optout_reserved FROM signals"
                                          ).iter_rows(named=True)}
    assert sig["deep"]["optout_matched"] and sig["deep"]["optout_reserved"]
    assert sig["deep-plain"]["optout_matched"] and not sig["deep-plain"]["optout_reserved"]
    assert dict(ws.sql("SELECT doc_id, action FROM decisions").iter_rows()) == {"deep": "drop", "deep-plain": "drop"}


# -- governance --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", ["co.uk", "github.io", "*.github.io", ".com.au", "blogspot.com", "CO.UK."])
def test_public_suffixes_are_refused(tmp_path, suffix):
    with pytest.raises(ValueError, match="public suffix"):
        entry_domain(suffix)
    ws = Workspace.init(tmp_path / "ws")
    with pytest.raises(registry.RegistryError, match="public suffix"):
        registry.add(ws, "domain", suffix, "Someone")


def test_sites_under_a_public_suffix_are_accepted():
    assert [entry_domain(d) for d in ("example.co.uk", "alice.github.io", "10.1.2.3")] == \
        ["example.co.uk", "alice.github.io", "10.1.2.3"]


def test_import_site_requires_the_fetch_date(tmp_path):
    ws = Workspace.init(tmp_path / "ws")
    (tmp_path / "robots.txt").write_text(ROBOTS)
    with pytest.raises(registry.RegistryError, match="fetched"):
        registry.import_site(ws, "shop.example.com", robots=tmp_path / "robots.txt")
    p = subprocess.run([*CURATE, "optout", "import-site", str(ws.path), "--domain", "shop.example.com", "--robots",
                        str(tmp_path / "robots.txt")], capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and "--fetched-at" in p.stderr


# -- end to end: signals, evidence, report, CLI ------------------------------------------------------------
def test_new_standards_reach_signals_evidence_and_the_summary(rws, tmp_path):
    from curate.audit.card import eu_summary, gather
    from curate.stages.optout import apply
    from curate.stages.optout.evidence import by_standard, evidence_rows

    robots = tmp_path / "robots.txt"
    robots.write_text(ROBOTS)
    registry.import_site(rws, "shop.example.com", robots=robots, fetched_at=FETCHED)
    apply(rws)
    s = _signals(rws)
    reserved = {d for d, r in s.items() if r["optout_reserved"]}
    assert reserved == {"cu", "cawg", "cawg-bare", "tdm-meta", "site-usage", "site-signal"}
    assert s["site-usage"]["optout_reservations"] == ["content_usage"]
    assert s["site-signal"]["optout_reservations"] == ["content_signal"]
    assert s["cawg-terms"]["optout_reservations"] == ["cawg:ai_training=constrained"]
    rules = dict(rws.sql("SELECT doc_id, rule_ids FROM decisions").iter_rows())
    assert "optout-constrained" in rules["cawg-terms"] and "optout-reserved" in rules["cu"]

    with rws.connect() as con:
        ev = {r["example"]: r for r in evidence_rows(con)}
    site = ev["site-usage"]
    assert site["sha256"] == hashlib.sha256(ROBOTS.encode()).hexdigest()
    assert str(site["fetched_at"]).startswith("2026-11-20 08:00")
    assert "Content-Usage: /catalog/ train-ai=n" in site["shown_by"] and site["standard"].endswith("(draft)")
    assert (site["documents"], site["removed"]) == (1, 1)
    assert ev["cu"]["shown_by"] == "headers Content-Usage: train-ai=n, search=y [train-ai]"
    assert (ev["cu"]["documents"], ev["cu"]["removed"]) == (1, 1)
    assert ev["tdm-meta"]["shown_by"].endswith("(tdm-policy https://books.example.org/policy.json)")
    assert ev["cawg"]["source"] == "document content credentials"
    with rws.connect() as con:
        only = evidence_rows(con, "example.net")
        counts = {(r["standard"], r["source"]): r["documents"] for r in by_standard(con)}
    assert {r["example"] for r in only} == {"cawg", "cawg-bare"}
    aipref = next(x.label for x in standards.standards() if x.id == "aipref")
    assert counts[(aipref, "document")] == 1 and counts[(aipref, "site file")] == 1
    cawg = next(x.label for x in standards.standards() if x.id == "cawg-tdm")
    assert counts[(cawg, "document")] == 2

    summary = eu_summary(gather(rws, None, None))
    section = summary.split("### 3.1", 1)[1].split("### 3.2", 1)[0]
    assert f"| {aipref} | draft | site file | 1 | 1 |" in section
    assert f"| {cawg} | standard | document | 2 | 2 |" in section
    from html import escape

    from curate.audit.report import report

    html = report(rws, tmp_path / "report.html").path.read_text()
    assert escape(aipref) in html and "Standards still in draft are marked" in html


@pytest.mark.slow  # five CLI processes: ~18 s on the shared 2-core machine
def test_cli_evidence_history_and_masked_creators(rws, tmp_path):
    robots = tmp_path / "robots.txt"
    robots.write_text(ROBOTS)
    run = [*CURATE, "optout"]
    p = subprocess.run([*run, "import-site", str(rws.path), "--domain", "shop.example.com", "--robots", str(robots),
                        "--fetched-at", FETCHED], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    entry_id, _, _ = registry.add(rws, "domain", "news.example.com", "Jane Q. Creator", evidence="mail 17",
                                  received_at="2026-10-01T00:00:00Z")
    registry.revoke(rws, entry_id, "Jane Q. Creator", evidence="licence signed", received_at="2026-11-01T00:00:00Z")
    assert subprocess.run([*run, "apply", str(rws.path)], capture_output=True, env=ENV).returncode == 0
    p = subprocess.run([*run, "evidence", str(rws.path), "--domain", "shop.example.com", "--format", "json"],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    rows = json.loads(p.stdout)
    assert {r["example"] for r in rows} == {"site-usage", "site-signal"}
    assert all(r["sha256"] == hashlib.sha256(ROBOTS.encode()).hexdigest() for r in rows)
    # The revoked entry keeps its history: the request, its evidence and date, then the revocation.
    p = subprocess.run([*run, "evidence", str(rws.path), "--entry", entry_id, "--format", "json", "--reveal"],
                       capture_output=True, text=True, env=ENV)
    hist = json.loads(p.stdout)
    assert [(h["op"], h["evidence"], h["creator"]) for h in hist] == [
        ("add", "mail 17", "Jane Q. Creator"), ("revoke", "licence signed", "Jane Q. Creator")]
    p = subprocess.run([*run, "list", str(rws.path), "--all", "--format", "json"], capture_output=True, text=True,
                       env=ENV)
    assert "Jane" not in p.stdout and "<creator sha256:" in p.stdout
    p = subprocess.run([*run, "list", str(rws.path), "--all", "--format", "json", "--reveal"], capture_output=True,
                       text=True, env=ENV)
    assert "Jane Q. Creator" in p.stdout


def test_prune_json_equals_json_loads_within_the_bound():
    rnd = random.Random(7)

    def value(depth):
        r = rnd.random()
        if depth > 6 or r < 0.3:
            return rnd.choice([1, "s[{", None, True, 2.5, "x\"]"])
        if r < 0.65:
            return [value(depth + 1) for _ in range(rnd.randint(0, 3))]
        return {f"k{i}": value(depth + 1) for i in range(rnd.randint(0, 3))}

    for _ in range(2000):
        text = json.dumps({"m": value(1)})
        assert prune_json(text, 8) == json.loads(text)
        assert loads_bounded(text, 8) == json.loads(text)


def test_a_replaced_site_file_keeps_its_evidence_and_history(rws, tmp_path):
    from curate.stages.optout import apply
    from curate.stages.optout.evidence import evidence_rows

    robots = tmp_path / "robots.txt"
    robots.write_text(ROBOTS)
    ((_, entry_id, _),) = registry.import_site(rws, "shop.example.com", robots=robots, fetched_at=FETCHED)[0]
    apply(rws)
    newer = ROBOTS.replace("Content-Signal: /blog/", "Content-Signal: /nothing/")
    robots.write_text(newer)
    registry.import_site(rws, "shop.example.com", robots=robots, fetched_at="2026-11-27T09:30:00Z")
    apply(rws)
    with rws.connect() as con:
        rows = evidence_rows(con, "shop.example.com")
    assert [(r["example"], r["sha256"], str(r["fetched_at"])[:10]) for r in rows] == [
        ("site-usage", hashlib.sha256(newer.encode()).hexdigest(), "2026-11-27")]
    hist = registry.history(rws, entry_id)
    assert hist["op"].to_list() == ["add", "add"]
    assert hist["payload_sha256"].to_list() == [hashlib.sha256(t.encode()).hexdigest() for t in (ROBOTS, newer)]
    with pytest.raises(registry.RegistryError, match="no entry"):
        registry.history(rws, "oo-0000000000000000")
