"""The `brands` stage: profiles, case and context rules per mark, associations, signals, rules, report and card."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from conftest import ROOT, write_jsonl

from curate.core.errors import ConfigError
from curate.stages.brands.profile import (
    ProfileError,
    load_profile,
    load_profiles,
    load_toxicity,
    prefilter,
    profile_path,
)
from curate.stages.brands.stage import Brands

PROFILES = sorted((ROOT / "rules" / "brands").glob("*.toml"))
TOXIC = load_toxicity(profile_path("lexicons/toxicity.toml"))
PROSE = ("The build system reads its configuration from the project file and writes the outputs to the build\n"
         "directory. Each target names its sources and the libraries it links against, one per line.\n")
BRAND = "brands/debian.toml"


def marks():
    return [pytest.param(profile, mark, id=f"{profile.name}:{mark.id}")
            for profile in map(load_profile, PROFILES) for mark in profile.marks]


def test_the_sample_profiles_load_and_are_versioned():
    assert {p.name for p in PROFILES} >= {"debian.toml", "apple.toml"}
    for path in PROFILES:
        p = load_profile(path)
        assert p.version and p.name == path.stem and any(m.role == "competitor" for m in p.marks)


@pytest.mark.parametrize(("profile", "mark"), marks())
def test_each_mark_finds_its_examples_and_not_its_counter_examples(profile, mark):
    import re

    pre = re.compile(prefilter([profile]), re.I)
    assert mark.examples, f"{mark.id} has no example"
    for example in mark.examples:
        assert pre.search(example), f"the prefilter misses {example!r}"
        assert [h for h in profile.scan(example, TOXIC) if h.mark == mark.id], f"{mark.id} misses {example!r}"
    for counter in mark.counter_examples:
        text = PROSE + counter + "\n" + PROSE
        assert not [h for h in profile.scan(text, TOXIC) if h.mark == mark.id], f"{counter!r} was taken for {mark.id}"


def test_apple_the_company_is_not_every_apple():
    apple = load_profile(profile_path("brands/apple.toml"))
    fruit = ["Apple pie is best served warm.", "She ate an apple.", "APPLE PIE RECIPES", "apples and pears",
             "The apple tree in the garden is old; its apples are sour."]
    for text in fruit:
        assert apple.scan(text, TOXIC) == [], text
    text = "Apple released a new developer kit. Later that day, Apple pie was served."
    hits = apple.scan(text, TOXIC)
    # the first Apple has a context word (developer) in the window; the second is 37 characters away from it, so it
    # counts too: a window is about a mention's neighbourhood, not its sentence
    assert [(h.mark, text[h.start:h.end]) for h in hits] == [("apple", "Apple"), ("apple", "Apple")]
    far = "Apple released a new developer kit." + " x" * 200 + " Apple pie was served."
    assert [far[h.start:h.end] for h in apple.scan(far, TOXIC)] == ["Apple"]
    # an alias nearby (iPhone counts alone) makes the bare word count
    alias = "Apple said the iPhone sold well."
    assert [(h.mark, alias[h.start:h.end]) for h in apple.scan(alias, TOXIC)] == [
        ("apple", "Apple"), ("apple-product", "iPhone")]
    # exact case: iOS is Apple's, IOS is Cisco's
    assert [h.mark for h in apple.scan("Runs on iOS.", TOXIC)] == ["apple-product"]
    assert apple.scan("Runs on IOS.", TOXIC) == []


def test_associations_only_with_the_brand_near_or_far_and_never_in_file_names():
    debian = load_profile(profile_path(BRAND))
    text = "Debian ships it. Download the warez here, you idiots." + " filler" * 60 + " Also see ransomware."
    hits = debian.scan(text, TOXIC)
    got = [(h.kind, h.brand, h.mark, h.near) for h in hits]
    assert got == [("own", "Debian", "debian", None), ("avoid", "piracy", "warez", True),
                   ("toxic", "insult", "idiots", True), ("avoid", "malware", "ransomware", False)]
    assert text[hits[1].start:hits[1].end] == "warez"
    # without a mention of the brand itself, terms are not looked for (a competitor is not the brand)
    assert [h.kind for h in debian.scan("Ubuntu ships it. Download the warez, idiots.", TOXIC)] == ["competitor"]
    # file names, addresses and dotted names are not prose
    assert [h.kind for h in debian.scan("Debian: fixed tests/keygen.c and mail morten@wtf.dk", TOXIC)] == ["own"]


def test_word_boundaries_and_case_rules():
    debian = load_profile(profile_path(BRAND))
    text = "debian/control lists Debian; 1.0-0ubuntu2 is Ubuntu's; a fedora hat; Fedora RPM packages; RHEL, rhel."
    got = [(h.mark, text[h.start:h.end]) for h in debian.scan(text, TOXIC)]
    assert got == [("debian", "Debian"), ("ubuntu", "Ubuntu"), ("fedora", "Fedora"), ("rhel", "RHEL")]


def profile_text(name: str = "acme", extra: str = "", brand: str = "Acme") -> str:
    return f'''profile = "{name}"
version = "1"
brand = "{brand}"
{extra}
[[marks]]
id = "own"
brand = "{brand}"
role = "own"
terms = ["Acme"]
case = "capitalised"

[[marks]]
id = "rival"
brand = "O'Rival"
role = "competitor"
terms = ["Rivalco"]
case = "any"
'''


@pytest.mark.parametrize(("text", "message"), [
    (profile_text("Acme"), "profile name 'Acme' must match [a-z][a-z0-9_]*"),
    (profile_text().replace('profile = "acme"', "profile = 'x\"; DROP TABLE documents; --'"), "must match [a-z]"),
    (profile_text("acme", "colour = 1"), "unknown key(s) colour"),
    (profile_text().replace('terms = ["Rivalco"]', 'terms = ["ACME"]'), "already a term of mark 'own'"),
    (profile_text().replace('case = "any"', 'case = "lower"'), "case 'lower' is not one of"),
    (profile_text().replace('case = "any"', 'case = "any"\nrequires = ["context"]'), "lists no context words"),
    (profile_text().replace('role = "own"', 'role = "competitor"'), "cannot be the profile's own brand"),
    (profile_text("acme", "[avoid]\nBad = ['x']"), "group 'Bad'"),
])
def test_a_broken_profile_is_refused_naming_the_file(tmp_path, text, message):
    p = tmp_path / "broken.toml"
    p.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(p)
    assert str(p) in str(e.value) and message in str(e.value)
    # and the stage refuses to be built with it, as a configuration error
    with pytest.raises(ConfigError, match="broken.toml"):
        Brands({"profiles": [str(p)]})


def test_profiles_whose_columns_would_collide_are_refused(tmp_path):
    (tmp_path / "a.toml").write_text(profile_text("x"))
    (tmp_path / "b.toml").write_text(profile_text("x_competitor"))
    with pytest.raises(ProfileError, match="brand_x_competitor_mentions"):
        load_profiles([str(tmp_path / "a.toml"), str(tmp_path / "b.toml")])
    (tmp_path / "c.toml").write_text(profile_text("x"))
    with pytest.raises(ProfileError, match="c.toml"):
        load_profiles([str(tmp_path / "a.toml"), str(tmp_path / "c.toml")])


def test_the_stage_writes_rows_with_exact_spans_and_skips_documents_without_a_term():
    det = Brands({"profiles": [BRAND]})
    texts = ["Nothing to see.", "Tested on Debian and on Ubuntu.", None, "Debian users, idiots all."]
    batch = pa.record_batch([pa.array(["a", "b", "c", "d"]), pa.array(texts)], names=["doc_id", "text"])
    rows = det(batch).to_pylist()
    got = [(r["doc_id"], r["kind"], r["brand"], texts["abcd".index(r["doc_id"])][r["start"]:r["end"]], r["near"])
           for r in rows]
    assert got == [("b", "own", "Debian", "Debian", None), ("b", "competitor", "Ubuntu", "Ubuntu", None),
                   ("d", "own", "Debian", "Debian", None), ("d", "toxic", "insult", "idiots", True)]
    assert Brands({})(batch).num_rows == 0  # no profile: nothing to look for


def test_editing_a_profile_changes_the_fingerprint(tmp_path):
    p = tmp_path / "acme.toml"
    p.write_text(profile_text())
    before = Brands({"profiles": [str(p)]}).fingerprint()
    p.write_text(profile_text().replace('terms = ["Rivalco"]', 'terms = ["Rivalco", "Rival Inc"]'))
    assert Brands({"profiles": [str(p)]}).fingerprint() != before
    assert any(a["sha256"] == TOXIC.sha256 for a in Brands({"profiles": [str(p)]}).assets())


RULES = """
[policy]
name = "brand-test"
version = "1"

[stages.brands]
profiles = ["{profile}"]

[[rules]]
id = "acme-association"
version = "1"
description = "Acme near a toxic or listed term."
when = "brand_acme_avoid_near > 0 or brand_acme_toxic_near > 0"
action = "drop"

[[rules]]
id = "acme-competitor-heavy"
version = "1"
description = "Competitor-heavy."
when = "brand_acme_competitor_mentions >= 2 and brand_acme_competitor_share > 0.5"
action = "drop"

[[rules]]
id = "acme-incompatible"
version = "1"
description = "Not compatible with the profile."
when = "not brand_acme_compatible"
action = "flag"
"""


@pytest.fixture
def brand_ws(ws, tmp_path: Path):
    profile = tmp_path / "acme.toml"
    profile.write_text(profile_text(extra="window = 100\n[avoid]\nscandal = ['fraud']"))
    rules = tmp_path / "brand.toml"
    rules.write_text(RULES.format(profile=profile))
    docs = [("plain", "A text about nothing in particular."),
            ("acme", "Acme makes anvils. Acme anvils are heavy."),
            ("rival", "Rivalco and rivalco again, and once Acme."),
            ("fraud", "Acme was accused of fraud yesterday."),
            ("fraud-far", "Acme makes anvils." + " and so on" * 20 + ". Fraud is a crime."),
            ("toxic", "Acme support are idiots."),
            ("quote", "O'Rival? Rivalco.")]
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [{"id": i, "text": t} for i, t in docs]))])
    ws.run(stages=["brands"], rules=str(rules))
    return ws, rules


def test_signals_rules_and_decisions(brand_ws):
    ws, _ = brand_ws
    sig = {r["doc_id"]: r for r in ws.sql("""
        SELECT doc_id, brands_mentioned, brand_acme_mentions, brand_acme_competitor_mentions,
               brand_acme_competitor_share, brand_acme_competitors, brand_acme_avoid_terms, brand_acme_avoid_near,
               brand_acme_toxic_near, brand_acme_compatible FROM signals""").to_dicts()}
    assert sig["plain"]["brand_acme_mentions"] == 0 and sig["plain"]["brand_acme_compatible"] is True
    assert sig["plain"]["brands_mentioned"] == []
    assert sig["acme"]["brand_acme_mentions"] == 2 and sig["acme"]["brand_acme_compatible"] is True
    r = sig["rival"]
    assert (r["brand_acme_competitor_mentions"], r["brand_acme_mentions"]) == (2, 1)
    assert r["brand_acme_competitor_share"] == pytest.approx(2 / 3)
    assert r["brand_acme_competitors"] == ["O'Rival"] and r["brands_mentioned"] == ["Acme", "O'Rival"]
    assert (sig["fraud"]["brand_acme_avoid_near"], sig["fraud-far"]["brand_acme_avoid_near"]) == (1, 0)
    assert sig["fraud-far"]["brand_acme_avoid_terms"] == 1
    assert sig["toxic"]["brand_acme_toxic_near"] == 1
    actions = dict(ws.sql("SELECT doc_id, action FROM decisions").rows())
    assert actions == {"plain": "keep", "acme": "keep", "rival": "drop", "fraud": "drop", "fraud-far": "keep",
                       "toxic": "drop", "quote": "keep"}
    fired = dict(ws.sql("SELECT doc_id, rule_ids FROM decisions").rows())
    assert fired["rival"] == ["acme-competitor-heavy", "acme-incompatible"]
    assert fired["quote"] == ["acme-incompatible"]  # one competitor mention: not heavy, not compatible


def test_explain_report_and_card_show_the_brand_mix(brand_ws, tmp_path):
    from curate.audit.card import card
    from curate.audit.report import report

    ws, _ = brand_ws
    info = ws.explain("rival")
    assert [(r["kind"], r["brand"], r["mark"]) for r in info["signals"]["brand_hits"]] == [
        ("competitor", "O'Rival", "rival"), ("competitor", "O'Rival", "rival"), ("own", "Acme", "own")]
    r = report(ws, tmp_path / "report.html")
    assert "brands" in r.sections
    html = (tmp_path / "report.html").read_text()
    assert "Profile <code>acme</code>" in html and "O&#x27;Rival (competitor)" in html
    from curate.audit import facts as F
    from curate.stages.brands.audit import brand_mix

    with ws.connect() as con:
        mix = {(m["brand"], m["role"]): m for m in brand_mix(con)}
    # before: every document; after: documents not dropped (rival, fraud, toxic dropped)
    assert (mix[("Acme", "own")]["docs_before"], mix[("Acme", "own")]["docs_after"]) == (5, 2)
    assert (mix[("O'Rival", "competitor")]["docs_before"], mix[("O'Rival", "competitor")]["docs_after"]) == (2, 1)
    assert mix[("Acme", "own")]["mentions_before"] == 6
    card(ws, tmp_path / "card")
    sheet = (tmp_path / "card" / "datasheet.md").read_text()
    assert "Brand mix, profile acme: Acme (own: 5 documents, 2 after the policy)" in sheet
    assert F.expectations()["brand_hits"]["value_sets"]["kind"] == ["own", "competitor", "avoid", "toxic"]


def test_default_rules_configure_no_profile_and_no_brand_rule():
    import tomllib

    default = tomllib.loads((ROOT / "rules" / "default.toml").read_text())
    assert default["stages"]["brands"]["profiles"] == []
    assert not [r for r in default["rules"] if "brand" in r["when"]]
    brand = tomllib.loads((ROOT / "rules" / "brand.toml").read_text())
    assert brand["stages"]["brands"]["profiles"] == ["brands/debian.toml", "brands/apple.toml"]
    # brand.toml is default.toml's rules plus brand rules, in the same order
    ids = [r["id"] for r in brand["rules"]]
    assert ids[:len(default["rules"])] == [r["id"] for r in default["rules"]]
    assert all(i.startswith("brand-") for i in ids[len(default["rules"]):])
    Brands(brand["stages"]["brands"])  # its profiles load


def test_anchored_matching_finds_what_a_full_regex_scan_finds():
    import gzip
    import json

    debian, apple = load_profile(profile_path(BRAND)), load_profile(profile_path("brands/apple.toml"))
    lines = gzip.open(ROOT / "data" / "samples" / "copyright.jsonl.gz").read().decode().splitlines()
    texts = [json.loads(line)["text"] for line in lines[:30]]
    texts.append("İstanbul: Debian, DEBIAN and debian; Red\nHat; RedHat; iPhone İ Apple Inc.")
    matchers = [debian.regex, apple.regex, TOXIC.regex, debian.avoid_regex]
    for text in texts:
        for m in matchers:
            assert [x.span() for x in m.finditer(text)] == [x.span() for x in m.pattern.finditer(text)]
