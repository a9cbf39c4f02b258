"""Opt-outs: URL/author normalisation, RFC 9309 robots.txt, TDMRep, the registry and its hash chain,
untrusted imports, matching of every kind, re-application with a diff, and revocation."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CURATE, v1_workspace, write_jsonl

from curate import Workspace
from curate.stages.optout import registry
from curate.stages.optout.normalize import author_key, canonical_url, entry_domain, host_suffixes, normalize_url
from curate.stages.optout.sitefiles import parse_robots, parse_tdmrep, robots_reservation, tdmrep_rule
from curate.stages.optout.stage import doc_markers

WHEN = "2026-03-01T12:00:00Z"
ENV = {**os.environ, "COLUMNS": "250"}  # rich wraps at 80 columns otherwise

# A short story, registered as a `work`, and a re-post of it with small edits on another site.
STORY = (
    "The lighthouse keeper counted the ships every evening, writing their names in a blue notebook "
    "that had belonged to her grandmother. When the fog came in from the north she lit the lamp early "
    "and sang the old songs to the gulls, who never once sang back. One winter a ship without a name "
    "drifted past the rocks, its sails torn and its deck empty, and she wrote nothing in the notebook "
    "that night. In spring the children of the village asked her what she had seen, and she told them "
    "it was only a cloud that had learned to float on water."
)
REPOST = STORY.replace("blue notebook", "green notebook").replace("the gulls", "the grey gulls") \
    .replace("One winter", "One cold winter") + " (reposted without permission)"
OTHER = (
    "Installation is simple: download the archive, unpack it into a directory of your choice, and run "
    "the configure script followed by make and make install. The program reads its settings from a "
    "file in your home directory; every option is documented in the manual page shipped with it."
)


WORDS = ("amber", "birch", "cobalt", "dune", "ember", "fjord", "granite", "harbor", "indigo", "juniper", "kelp",
         "lagoon", "maple", "nectar", "onyx", "pebble", "quartz", "reed")


def _doc(i, url, text=None, **meta):
    """Default texts share their sentences but not a single word 5-gram, so none is a near-duplicate."""
    words = OTHER.split()
    distinct = " ".join(w if k % 3 else f"{WORDS[i % len(WORDS)]}{i // len(WORDS) or ''} {w}"
                        for k, w in enumerate(words))
    return {"id": f"d{i}", "text": text or distinct, "url": url, "meta": meta}


DOCS = [
    _doc(0, "https://www.example.org/blog/post-1?utm_source=feed"),
    _doc(1, "https://example.org/about"),
    _doc(2, "https://notexample.org/page"),
    _doc(3, "http://Gallery.ART.example.net:80/works/sunset/#top"),
    _doc(4, "https://gallery.art.example.net/works-old/sunset"),
    _doc(5, "https://gallery.art.example.net/works"),
    _doc(6, "https://stories.example.com/lighthouse", STORY, author="Ingrid Sørensen"),
    _doc(7, "https://copycat.example.io/p/123", REPOST, author="anonymous"),
    _doc(8, "https://news.example.com/a", author="MÜLLER, José"),
    _doc(9, "https://news.example.com/b", author=["Someone Else", "Jose Muller"]),
    _doc(10, "https://site.example.com/private/report", html_meta={"robots": "noindex, noai"}),
    _doc(11, "https://site.example.com/public/report", headers={"X-Robots-Tag": "GPTBot: noai"}),
    _doc(12, "https://site.example.com/public/img", html_meta={"robots": "noimageai"}),
    _doc(13, "https://site.example.com/public/tdm", html_meta={"tdm-reservation": "1"}),
    _doc(14, "https://site.example.com/private/open", html_meta={"tdm-reservation": "1"},
         headers={"tdm-reservation": "0"}),
    _doc(15, "https://site.example.com/private/x.html"),
    _doc(16, "https://site.example.com/public/page"),
    _doc(17, None),
]


@pytest.fixture
def ows(tmp_path: Path) -> Workspace:
    """A small workspace with URLs, authors and reservation markers, run once."""
    write_jsonl(tmp_path / "docs.jsonl", DOCS)
    ws = Workspace.init(tmp_path / "ws")
    ws.ingest([str(tmp_path / "docs.jsonl")])
    ws.run(workers=1)
    return ws


def _add(ws, kind, value, creator="Creator", **kw):
    entry_id, new, _ = registry.add(ws, kind, value, creator, evidence=kw.pop("evidence", "ticket"),
                                    received_at=kw.pop("received_at", WHEN), **kw)
    assert new
    return entry_id


def _matches(ws) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for doc_id, kind in ws.sql("SELECT doc_id, match_kind FROM optout_matches").iter_rows():
        out.setdefault(kind, set()).add(doc_id)
    return out


def _actions(ws) -> dict[str, str]:
    return dict(ws.sql("SELECT doc_id, action FROM decisions").iter_rows())


# -- normalisation --------------------------------------------------------------------------------------
@pytest.mark.parametrize("url, expected", [
    ("HTTP://Example.COM/a", "http://example.com/a"),
    ("https://example.com:443/a", "https://example.com/a"),
    ("http://example.com:80/a", "http://example.com/a"),
    ("https://example.com:80/a", "https://example.com:80/a"),  # not the default port of https
    ("https://example.com:8443/a/", "https://example.com:8443/a"),
    ("https://example.com", "https://example.com/"),
    ("https://example.com/", "https://example.com/"),
    ("https://example.com/a/b/", "https://example.com/a/b"),
    ("https://example.com/a#section-2", "https://example.com/a"),
    ("https://example.com/a?utm_source=x&id=7&fbclid=abc&UTM_Campaign=y&gclid=1", "https://example.com/a?id=7"),
    ("https://example.com/a?b=2&a=1", "https://example.com/a?b=2&a=1"),  # order of real parameters kept
    ("https://example.com/a?utm_medium=email", "https://example.com/a"),
    ("https://example.com/%7euser/%c3%a9t%C3%A9", "https://example.com/~user/%C3%A9t%C3%A9"),
    ("https://example.com/caf\u00e9", "https://example.com/caf%C3%A9"),
    ("https://example.com/a/./b/../c", "https://example.com/a/c"),
    ("https://user:secret@example.com/a", "https://example.com/a"),
    ("https://example.com./a", "https://example.com/a"),
    ("https://B\u00fccher.example/x", "https://xn--bcher-kva.example/x"),
    ("http://[2001:DB8::1]:8080/x", "http://[2001:db8::1]:8080/x"),
])
def test_url_normalisation(url, expected):
    assert canonical_url(url) == expected


@pytest.mark.parametrize("bad", ["", "example.com/a", "https://", "https://exa mple.com/", "https://example.com:99999/",
                                 "https://ex\x00ample.com/", "https://" + "a" * 2100 + ".com/", "mailto:x@example.com"])
def test_bad_urls_are_refused(bad):
    with pytest.raises(ValueError):
        canonical_url(bad)
    assert normalize_url(bad) is None or bad.startswith("https://exa mple")


def test_domains_authors_and_suffixes():
    assert entry_domain("*.Example.ORG.") == "example.org"
    with pytest.raises(ValueError, match="two labels"):
        entry_domain("org")
    with pytest.raises(ValueError):
        entry_domain("https://example.org/")
    assert host_suffixes("a.b.example.org") == ["a.b.example.org", "b.example.org", "example.org"]
    assert author_key("MORITZ  MÜHLENHOFF") == author_key("moritz muhlenhoff") == "moritz muhlenhoff"
    assert author_key("Santiago Ruano Rinco\u0301n") == author_key("santiago ruano rincón")  # NFD input
    assert author_key("Søren Łukasz") == "soren lukasz"
    assert author_key("Anna") != author_key("Hanna")


# -- robots.txt (RFC 9309), ai.txt, TDMRep ------------------------------------------------------------------
ROBOTS = """
# comment
User-agent: *
Disallow: /private/
Allow: /private/press/

User-Agent: gptbot
user-agent: CCBot/2.0
Disallow: /
Allow: /public/
Allow: /public/closed$
Disallow: /public/closed
Disallow: /public/*.pdf$

User-agent: Google-Extended
Disallow:
"""


def test_robots_rfc9309_matching():
    r = parse_robots(ROBOTS)
    # An agent's own group (matched case-insensitively, product token only) replaces the `*` group.
    assert r.blocking_rule("GPTBot", "/anything") is not None
    assert r.blocking_rule("ccbot", "/public/page") is None  # longer Allow wins
    assert r.blocking_rule("GPTBot", "/public/file.pdf") is not None  # wildcard + end anchor, longer
    assert r.blocking_rule("GPTBot", "/public/file.pdf?x=1") is None  # '$' anchors the end
    assert r.blocking_rule("GPTBot", "/public/closed") is None  # tie: equally long Allow wins
    assert r.blocking_rule("GPTBot", "/robots.txt") is None  # always allowed
    # No group of its own: the `*` group.
    assert r.blocking_rule("ClaudeBot", "/private/x") is not None
    assert r.blocking_rule("ClaudeBot", "/private/press/release") is None
    assert r.blocking_rule("ClaudeBot", "/public") is None
    assert r.blocking_rule("ClaudeBot", "/private/x", wildcard=False) is None
    # An empty Disallow allows everything, and the agent's (empty) group still replaces `*`.
    assert r.blocking_rule("Google-Extended", "/private/x") is None
    # Percent-encoding: %7E and ~ are the same character.
    assert parse_robots("User-agent: *\nDisallow: /%7Ejoe/").blocking_rule("X", "/~joe/index.html")
    why = robots_reservation(r, "/private/x", ("GPTBot", "ClaudeBot"))
    assert why.startswith("GPTBot (group gptbot): Disallow: / (line 9)")


def test_tdmrep_first_match_wins_and_validation():
    rules = parse_tdmrep(json.dumps([
        {"location": "/open/*", "tdm-reservation": 0},
        {"location": "/", "tdm-reservation": 1, "tdm-policy": "https://example.com/policy.json"},
    ]))
    assert not tdmrep_rule(rules, "/open/a").reserved
    assert tdmrep_rule(rules, "/other").reserved and tdmrep_rule(rules, "/other").index == 2
    for bad, why in [("{}", "array"), ("[1]", "not an object"), ('[{"location": "x", "tdm-reservation": 1}]', "path"),
                     ('[{"location": "/", "tdm-reservation": 2}]', "0 or 1"), ("[", "JSON")]:
        with pytest.raises(ValueError, match=why):
            parse_tdmrep(bad)


def test_document_markers():
    assert doc_markers({"html_meta": {"robots": "noimageai, noai"}})[0] == ["robots:noai", "robots:noimageai"]
    assert doc_markers({"headers": {"x-robots-tag": "GPTBot: noai"}})[0] == ["x-robots-tag:noai"]
    assert doc_markers({"html_meta": {"GPTBot": "noai"}}, ("GPTBot",))[0] == ["robots:noai"]
    assert doc_markers({"html_meta": {"robots": "noindex"}}) == ([], None)
    # TDMRep: the HTTP header takes precedence over the HTML meta tag.
    assert doc_markers({"html_meta": {"tdm-reservation": "1"}, "headers": {"TDM-Reservation": "0"}}) == \
        (["tdm-reservation:0"], 0)
    assert doc_markers('{"html_meta": {"tdm-reservation": 1}}') == (["tdm-reservation:1"], 1)
    assert doc_markers("not json") == ([], None) and doc_markers(None) == ([], None)


# -- the registry -------------------------------------------------------------------------------------------
def test_registry_hash_is_stable_and_chained(tmp_path):
    def build(path, evidence="ticket 1"):
        ws = Workspace.init(path)
        _add(ws, "domain", "Example.org", evidence=evidence)
        e = _add(ws, "author", "José Müller")
        registry.revoke(ws, e, "Creator", "withdrawn", received_at=WHEN)
        with ws.connect() as con:
            return ws, registry.state(con)

    ws, a = build(tmp_path / "a")
    _, b = build(tmp_path / "b")
    _, c = build(tmp_path / "c", evidence="ticket 2")
    assert (a.version, a.active) == (3, 1)
    assert a.sha256 == b.sha256 != c.sha256
    with ws.connect() as con:
        assert registry.state(con, 1).sha256 != a.sha256
        assert registry.check_chain(con) == []
    with ws.connect(write=True) as con:  # tamper with history
        con.execute("UPDATE optout_events SET value = 'example.net' WHERE seq = 1")
        assert registry.check_chain(con) == ["event 1: chain hash does not match its content"]


def test_add_is_idempotent_and_revoke_needs_an_active_entry(ws):
    e, new, st = registry.add(ws, "domain", "example.org", "Ann", received_at=WHEN)
    assert new and st.version == 1
    assert registry.add(ws, "domain", "EXAMPLE.org.", "ann", received_at=WHEN)[:2] == (e, False)
    assert registry.add(ws, "domain", "example.org", "Bob", received_at=WHEN)[1]  # another creator, own entry
    registry.revoke(ws, e, "Ann", received_at=WHEN)
    with pytest.raises(registry.RegistryError, match="no active entry"):
        registry.revoke(ws, e, "Ann", received_at=WHEN)
    assert registry.add(ws, "domain", "example.org", "Ann", received_at=WHEN)[1]  # re-added after revocation


@pytest.mark.parametrize("kind, value, why", [
    ("domain", "com", "two labels"),
    ("domain", "exa mple.org", "invalid label"),
    ("url", "ftp://example.org/a", "http and https"),
    ("url", "https://exa\u200bmple.org/", "control"),
    ("url_prefix", "/relative/path", "absolute URL"),
    ("sha256", "abc", "64 hexadecimal"),
    ("author", "   ", "empty"),
    ("author", "x" * 300, "longer than"),
    ("work", "too short to be a work", "at least 20"),
    ("work", "word " * 300_000, "limit"),
    ("work", "valid words " * 20 + "\x00", "control character"),
    ("song", "x", "unknown kind"),
])
def test_untrusted_values_are_validated(ws, kind, value, why):
    with pytest.raises(registry.RegistryError, match=why):
        registry.add(ws, kind, value, "Creator", received_at=WHEN)


def test_import_reports_bad_lines_and_imports_good_ones(ws, tmp_path):
    f = tmp_path / "requests.jsonl"
    lines = [
        json.dumps({"kind": "domain", "value": "example.org", "creator": "Ann", "received_at": WHEN}),
        "{not json",
        json.dumps({"kind": "url", "value": "not a url", "creator": "Bob"}),
        "",
        "# a comment",
        json.dumps({"kind": "author", "value": "Ann Example", "creator": "Ann", "verified": "yes"}),
        json.dumps({"kind": "author", "value": "Ann Example", "creator": "Ann", "colour": "red"}),
        json.dumps({"kind": "sha256", "value": "A" * 64, "creator": "Cy", "received_at": "2999-01-01"}),
        json.dumps({"kind": "sha256", "value": "A" * 64, "creator": "Cy"}),
        json.dumps({"kind": "domain", "value": "example.org", "creator": "Ann"}),  # duplicate of line 1
    ]
    f.write_bytes(("\n".join(lines) + "\n").encode() + b'{"kind": "author", "value": "\xff", "creator": "D"}\n')
    r = registry.import_file(ws, f)
    assert [n for n, _ in r.errors] == [2, 3, 6, 7, 8, 11]
    assert "malformed JSON" in r.errors[0][1] and "verified" in r.errors[2][1] and "colour" in r.errors[3][1]
    assert "plausible" in r.errors[4][1] and "UTF-8" in r.errors[5][1]
    assert (r.added, r.unchanged, r.state.version) == (2, 1, 2)
    assert sorted(registry.entries(ws)["kind"].to_list()) == ["domain", "sha256"]
    # The CLI prints file:line for each rejected line and exits 1, having imported nothing new.
    p = subprocess.run([*CURATE, "optout", "import", str(ws.path), str(f)], capture_output=True, text=True, env=ENV)
    assert p.returncode == 1 and f"{f}:2: malformed JSON" in p.stderr and f"{f}:11: not valid UTF-8" in p.stderr
    assert "0 added" in p.stdout and "line(s) rejected" in p.stdout


def test_values_are_data_never_sql(ows):
    hostile = "x'); DROP TABLE documents; --"
    _add(ows, "author", hostile)
    _add(ows, "url", "https://example.org/a?q=';DELETE/**/FROM/**/decisions;--")
    from curate.stages.optout import apply

    apply(ows)
    assert ows.sql("SELECT count(*) AS n FROM documents")["n"][0] == len(DOCS)
    assert registry.entries(ows, kind="author")["value"][0] == author_key(hostile)


# -- matching ---------------------------------------------------------------------------------------------
def test_every_kind_matches_what_it_should(ows):
    from curate.stages.optout import apply

    ids = {
        "domain": _add(ows, "domain", "example.org"),
        "url": _add(ows, "url", "HTTPS://gallery.art.example.net:443/works/sunset?utm_campaign=spring"),
        "url_prefix": _add(ows, "url_prefix", "https://gallery.art.example.net/works/"),
        "sha256": _add(ows, "sha256", ows.sql("SELECT sha256 FROM documents WHERE doc_id = 'd2'")["sha256"][0]),
        "author": _add(ows, "author", "jose muller"),
        "work": _add(ows, "work", STORY, creator="Ingrid Sørensen", verified=True),
    }
    r = apply(ows)
    m = _matches(ows)
    assert m["domain"] == {"d0", "d1"}  # subdomains too; notexample.org is not a subdomain
    assert m["url"] == {"d3"}  # http vs https, host case, default port, trailing slash, fragment, tracking
    assert m["url_prefix"] == {"d3", "d5"}  # /works/ and /works itself, not /works-old
    assert m["sha256"] == {"d2"}
    assert m["author"] == {"d9"}  # one name of d9's list; d8's "MÜLLER, José" is written another way
    assert m["work"] == {"d6", "d7"}  # the original and its edited re-post on another domain
    work = ows.sql("SELECT doc_id, score FROM optout_matches WHERE match_kind = 'work' ORDER BY 1")
    assert work["score"][0] == 1.0 and 0.7 <= work["score"][1] < 1.0
    assert r.summary == {"excluded": 8, "re-included": 0}
    assert set(r.diff.column("doc_id").to_pylist()) == {"d0", "d1", "d2", "d3", "d5", "d6", "d7", "d9"}
    by_doc = {row["doc_id"]: row for row in r.diff.to_pylist()}
    assert by_doc["d7"]["entries"] == [ids["work"]] and by_doc["d7"]["kinds"] == ["work"]
    assert sorted(by_doc["d3"]["kinds"]) == ["url", "url_prefix"]
    assert _actions(ows)["d4"] == "keep"
    sig = {r["doc_id"]: r for r in ows.sql("SELECT * FROM signals").iter_rows(named=True)}
    assert sig["d7"]["optout_verified"] and sig["d7"]["optout_work_jaccard"] == work["score"][1]
    assert sig["d3"]["optout_kinds"] == ["url", "url_prefix"] and sig["d3"]["optout_entries"] == \
        sorted([ids["url"], ids["url_prefix"]])
    assert not sig["d9"]["optout_verified"] and sig["d9"]["optout_matched"] and not sig["d4"]["optout_matched"]


def test_machine_readable_reservations(ows, tmp_path):
    from curate.stages.optout import apply

    robots = tmp_path / "robots.txt"
    robots.write_text("User-agent: *\nDisallow: /cgi-bin/\n\nUser-agent: GPTBot\nDisallow: /private/\n")
    tdm = tmp_path / "tdmrep.json"
    tdm.write_text(json.dumps([{"location": "/private/*", "tdm-reservation": 1}]))
    changes, _ = registry.import_site(ows, "site.example.com", robots=robots, tdmrep=tdm, received_at=WHEN)
    assert [c[2] for c in changes] == [True, True]
    assert [c[2] for c in registry.import_site(ows, "site.example.com", robots=robots, received_at=WHEN)[0]] == [False]
    apply(ows)
    s = {r["doc_id"]: r for r in ows.sql("SELECT * FROM signals").iter_rows(named=True)}
    assert s["d10"]["optout_reservations"] == ["robots:noai", "robots_txt", "tdmrep"]
    assert s["d11"]["optout_reserved"] and s["d11"]["optout_reservations"] == ["x-robots-tag:noai"]
    assert not s["d12"]["optout_reserved"] and s["d12"]["optout_reservations"] == ["robots:noimageai"]
    assert s["d13"]["optout_reserved"]
    # d14's own TDMRep header (0) overrides both its HTML meta (1) and the site's tdmrep.json; robots.txt still
    # reserves it for GPTBot.
    assert s["d14"]["optout_reservations"] == ["robots_txt", "tdm-reservation:0"]
    assert s["d15"]["optout_reservations"] == ["robots_txt", "tdmrep"]
    assert not s["d16"]["optout_reserved"] and not s["d0"]["optout_reserved"]
    detail = ows.sql("SELECT detail FROM optout_matches WHERE doc_id = 'd15' AND match_kind = 'robots_txt'")
    assert detail["detail"][0].startswith("GPTBot (group gptbot): Disallow: /private/ (line 5)")
    actions = _actions(ows)
    assert [actions[f"d{i}"] for i in range(10, 17)] == ["drop", "drop", "keep", "drop", "drop", "drop", "keep"]
    # A newer robots.txt replaces the old one: /private/ is open again, except through tdmrep.json.
    robots.write_text("User-agent: GPTBot\nAllow: /\n")
    registry.import_site(ows, "site.example.com", robots=robots, received_at=WHEN)
    r = apply(ows)
    assert r.summary == {"excluded": 0, "re-included": 1}
    assert r.diff.to_pylist()[0]["doc_id"] == "d14" and r.diff.to_pylist()[0]["kinds"] == ["robots_txt"]


def test_ai_txt(ows, tmp_path):
    from curate.stages.optout import apply

    ai = tmp_path / "ai.txt"
    ai.write_text("# Spawning AI\nUser-Agent: *\nDisallow: *.html\nDisallow: /public/page\n")
    registry.import_site(ows, "site.example.com", ai_txt=ai, received_at=WHEN)
    apply(ows)
    assert _matches(ows)["ai_txt"] == {"d15", "d16"}


def test_revocation_reincludes_only_what_it_alone_excluded(ows):
    from curate.stages.optout import apply

    by_domain = _add(ows, "domain", "news.example.com", creator="Newsroom")
    by_author = _add(ows, "author", "José Müller", creator="José")
    first = apply(ows)
    assert first.summary["excluded"] == 2 and _actions(ows)["d9"] == "drop"
    registry.revoke(ows, by_domain, "Newsroom", "licence agreed", received_at=WHEN)
    r = apply(ows)
    assert r.before.version == 2 and r.after.version == 3
    assert r.diff.to_pylist() == [{"doc_id": "d8", "url": "https://news.example.com/a", "action_before": "drop",
                                   "action_after": "keep", "change": "re-included", "entries": [by_domain],
                                   "kinds": ["domain"]}]
    assert _actions(ows)["d9"] == "drop"  # still opted out by its author
    registry.revoke(ows, by_author, "José", received_at=WHEN)
    apply(ows)
    assert _actions(ows)["d9"] == "keep"


def test_apply_writes_manifest_with_registry_state_and_diff(ows):
    from curate.core.manifest import verify
    from curate.stages.optout import apply

    _add(ows, "domain", "example.org")
    r = apply(ows)
    run = json.loads((r.manifest.path / "run.json").read_text())
    assets = [a for s in run["stages"] if s["name"] == "optout" for a in s["assets"]]
    reg = next(a for a in assets if a["kind"] == "optout-registry")
    assert (reg["version"], reg["sha256"]) == ("1", r.after.sha256)
    assert any(a["kind"] == "optout-ai-agents" and a["sha256"] for a in assets)
    assert verify(r.manifest.path, workspace=ows).ok
    diff = pq.read_table(r.diff_path).to_pylist()
    assert {d["doc_id"] for d in diff} == {"d0", "d1"} and all(d["change"] == "excluded" for d in diff)
    # An entry registered but not applied shows as pending in the next manifest.
    _add(ows, "domain", "example.com")
    m = ows.manifest(ows.path / "m2")
    run = json.loads((m.path / "run.json").read_text())
    kinds = [a["kind"] for s in run["stages"] if s["name"] == "optout" for a in s["assets"]]
    assert "optout-registry-pending" in kinds


def test_apply_is_incremental(ows):
    from curate.stages.optout import apply

    _add(ows, "domain", "example.org")
    apply(ows)
    _add(ows, "author", "anonymous")
    apply(ows)
    versions = dict(ows.sql("SELECT match_kind, max(registry_version) FROM optout_matches GROUP BY 1").iter_rows())
    assert versions == {"domain": 1, "author": 2}  # the domain's matches were not recomputed


def test_incremental_matching_equals_a_full_recompute(ows, tmp_path):
    from curate.stages.optout import apply
    from curate.stages.optout.stage import OptOut, match_registry, signals_query

    robots = tmp_path / "robots.txt"
    robots.write_text("User-agent: GPTBot\nDisallow: /private/\n")
    a = _add(ows, "domain", "example.org")
    _add(ows, "work", STORY)
    apply(ows)
    registry.import_site(ows, "site.example.com", robots=robots, received_at=WHEN)
    registry.revoke(ows, a, "Creator", received_at=WHEN)
    _add(ows, "author", "jose muller")
    _add(ows, "url_prefix", "https://site.example.com/public/")
    apply(ows)
    query = "SELECT * FROM {} ORDER BY ALL"
    incremental = (ows.sql(query.format("optout_matches")).drop("registry_version"),
                   ows.sql(query.format("optout_signals")))
    with ows.connect(write=True) as con:  # forget everything and match from scratch
        con.execute("UPDATE optout_docs SET matched = false")
        con.execute("DELETE FROM meta WHERE key = 'optout.matched_registry'")
        match_registry(con, OptOut())
        full_signals = con.sql(f"SELECT * FROM ({signals_query('documents')}) ORDER BY ALL").pl()
    assert incremental[0].equals(ows.sql(query.format("optout_matches")).drop("registry_version"))
    assert incremental[1].equals(ows.sql(query.format("optout_signals"))) and incremental[1].equals(full_signals)
    assert incremental[1].height == len(DOCS)


def test_optout_rules_take_precedence_over_keep_rules(ows, tmp_path):
    from curate.core.policy import default_rules_path

    rules = tmp_path / "rules.toml"
    rules.write_text(default_rules_path().read_text() + """
[[rules]]
id = "keep-news"
version = "1"
description = "Keep news."
when = "domain = 'news.example.com'"
action = "keep"
""")
    _add(ows, "author", "jose muller")
    from curate.stages.optout import apply

    r = apply(ows, rules=rules)
    assert r.patched == {"policy": False, "manifest": False}  # another rules file: everything re-decided
    assert _actions(ows)["d9"] == "drop"


def test_new_shards_are_matched_against_the_whole_registry(ows, tmp_path):
    _add(ows, "domain", "late.example.org")
    write_jsonl(tmp_path / "late.jsonl", [_doc(100, "https://www.late.example.org/x")])
    ows.ingest([str(tmp_path / "late.jsonl")])
    ows.run(workers=1)
    assert _actions(ows)["d100"] == "drop"


def test_schema_v1_workspace_migrates(tmp_path):
    ws = Workspace(v1_workspace(tmp_path / "old"))
    registry.add(ws, "domain", "example.org", "Ann", received_at=WHEN)
    assert "optout_events" in ws.tables()


def test_cli_round_trip(ows, tmp_path):
    story = tmp_path / "story.txt"
    story.write_text(STORY)
    run = [*CURATE, "optout"]
    p = subprocess.run([*run, "add", str(ows.path), "--kind", "work", "--file", str(story), "--creator", "Ingrid"],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([*run, "add", str(ows.path), "--kind", "domain", "--value", "com", "--creator", "X"],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and "two labels" in p.stderr
    p = subprocess.run([*run, "apply", str(ows.path)], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0 and "2 document(s) newly excluded" in p.stdout.replace("\n", " ")
    p = subprocess.run([*run, "log", str(ows.path), "--verify"], capture_output=True, text=True, env=ENV)
    assert p.returncode == 0 and "hash chain verified" in p.stdout
    _add(ows, "author", "Ingrid Sørensen")
    p = subprocess.run([*run, "list", str(ows.path)], capture_output=True, text=True, env=ENV)
    assert "rensen" not in p.stdout and "<author sha256:" in p.stdout  # names shown only with --reveal


def test_sample_reservations(sample_ws):
    """The markers the sample generator lists in data/samples/README.md are exactly the reserved documents."""
    import re

    from conftest import SAMPLES

    listed = {}
    section = False
    for line in (SAMPLES / "README.md").read_text().splitlines():
        if line.startswith("**"):
            section = line.startswith("**Opt-out markers")
        elif section and (m := re.match(r"\* `([^`]+)` \(row \d+\): (\{.*\})$", line)):
            listed[m.group(1)] = json.loads(m.group(2))
    assert len(listed) >= 10
    ws = Workspace(sample_ws)
    s = {r["doc_id"]: r for r in ws.sql("SELECT doc_id, optout_reserved, optout_reservations FROM signals"
                                        ).iter_rows(named=True)}
    reserving = {doc_id for doc_id, meta in listed.items() if "noai" in json.dumps(meta).replace("noimageai", "")
                 or meta.get("html_meta", {}).get("tdm-reservation") == "1"}
    assert {d for d, r in s.items() if r["optout_reserved"]} == reserving
    noimage = {d for d, meta in listed.items() if "noimageai" in json.dumps(meta)}
    assert noimage and all("robots:noimageai" in s[d]["optout_reservations"] for d in noimage)
    dropped = dict(ws.sql("SELECT doc_id, list_contains(rule_ids, 'optout-reserved') AS r FROM decisions").iter_rows())
    assert {d for d, r in dropped.items() if r} == reserving


def test_work_candidates_from_the_dedup_lsh_index(ows):
    """With the near-duplicate stage's band index present, `work` candidates come from it (same result)."""
    from curate.dedup import minhash
    from curate.stages.optout import apply
    from curate.stages.optout.stage import OptOut, match_registry

    seq = "(SELECT seq FROM documents WHERE doc_id = '{}')"
    with ows.connect(write=True) as con:  # the dedup_fuzzy stage has run: its index is there
        from curate.stages.optout.work import lsh_index
        assert lsh_index(con)["bands"] == 21
        t = con.sql(f"SELECT text FROM documents WHERE seq = {seq.format('d6')}").to_arrow_table()
        ours = minhash.band_hashes(minhash.signatures(t.column("text").to_pylist(), 128, 1), 21, 6)[0].tolist()
        assert ours == [b for (b,) in con.execute(f"SELECT bucket FROM dedup_bands WHERE seq = {seq.format('d6')} "
                                                  "ORDER BY band").fetchall()]
        con.execute(f"CREATE TABLE saved AS SELECT * FROM dedup_bands WHERE seq = {seq.format('d7')}")
        con.execute(f"DELETE FROM dedup_bands WHERE seq = {seq.format('d7')}")  # d7: not banded yet
    _add(ows, "work", STORY)
    apply(ows)
    assert _matches(ows)["work"] == {"d6", "d7"}  # d6 only through the index, d7 by the direct comparison
    with ows.connect(write=True) as con:  # banded documents are found through the index alone
        con.execute(f"UPDATE dedup_bands SET bucket = bucket + 1 WHERE seq = {seq.format('d6')}")
        con.execute("INSERT INTO dedup_bands SELECT * FROM saved")
        con.execute("UPDATE optout_docs SET matched = false")
        match_registry(con, OptOut())
    assert _matches(ows)["work"] == {"d7"}
    with ows.connect(write=True) as con:
        con.execute("UPDATE optout_docs SET matched = false")
        match_registry(con, OptOut({"work_candidates": "scan"}))
    assert _matches(ows)["work"] == {"d6", "d7"}


def test_apply_patches_policy_and_manifest_exactly_like_a_full_rewrite(ows):
    """apply re-decides only the documents whose matches changed and patches the previous manifest;
    the result is byte-identical to deciding everything and writing the manifest from scratch."""
    from curate.stages.optout import apply

    _add(ows, "domain", "example.org")
    _add(ows, "work", STORY)
    r = apply(ows)
    assert r.patched == {"policy": True, "manifest": True}
    patched = (r.manifest.path / "manifest.parquet").read_bytes()
    decisions = ows.sql("SELECT * FROM decisions ORDER BY doc_id")
    ows.decide()
    full = ows.manifest(ows.path / "full")
    assert decisions.equals(ows.sql("SELECT * FROM decisions ORDER BY doc_id"))
    assert full.root_hash == r.manifest.root_hash
    assert (full.path / "manifest.parquet").read_bytes() == patched


def test_an_oversized_import_line_is_skipped_without_losing_count(ws, tmp_path):
    good = json.dumps({"kind": "domain", "value": "example.org", "creator": "Ann"}).encode()
    huge = json.dumps({"kind": "work", "value": "word " * (registry.MAX_LINE_BYTES // 5), "creator": "B"}).encode()
    f = tmp_path / "big.jsonl"
    f.write_bytes(huge + b"\n" + good + b"\n")
    r = registry.import_file(ws, f)
    assert [n for n, _ in r.errors] == [1] and "longer than the limit" in r.errors[0][1]
    assert r.added == 1
    story = tmp_path / "story.txt"
    story.write_bytes(b"x" * (registry.MAX_WORK_BYTES + 1))
    with pytest.raises(registry.RegistryError, match="limit"):
        registry.read_work(story)


def test_apply_never_patches_a_stale_manifest(ows):
    """Writing each application to a new directory: the workspace's own manifest is a valid base only
    while it reflects the registry version just before the application."""
    from curate.stages.optout import apply

    _add(ows, "domain", "example.org")
    r1 = apply(ows, out=ows.path / "m1")
    assert r1.patched["manifest"]  # from WS/manifest, written by `curate run` at version 0
    _add(ows, "author", "jose muller")
    r2 = apply(ows, out=ows.path / "m2")
    assert not r2.patched["manifest"]  # WS/manifest is at version 0, m2 does not exist: written in full
    full = ows.manifest(ows.path / "full")
    assert r2.manifest.root_hash == full.root_hash
    r3 = apply(ows, out=ows.path / "m2")  # nothing new: m2 is at the current version, patched in place
    assert r3.patched["manifest"] and r3.manifest.root_hash == full.root_hash and r3.diff.num_rows == 0
