from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path

import duckdb
import pytest
from conftest import CURATE

from curate import Workspace
from curate.audit.report import report
from curate.audit.sandbox import edit, set_threshold, what_if
from curate.core.policy import load_rules

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def render(html: Path, png: Path) -> tuple[int, set[str], list[dict]]:
    """Open the report in headless Chromium: (plots drawn, section ids, console messages); saves a screenshot."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "Debian chromium + chromium-driver missing: run `make install`"
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--window-size=1280,1000", f"--user-data-dir={tempfile.mkdtemp()}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        driver.get(html.resolve().as_uri())
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1280, min(height + 50, 16000))
        assert driver.save_screenshot(str(png))
        # a plot that is present and drawn has a non-empty box
        plots = driver.execute_script("""return Array.from(document.querySelectorAll('svg.plot'))
            .filter(s => { const b = s.getBoundingClientRect(); return b.width > 50 && b.height > 10; }).length""")
        sections = set(driver.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id)"))
        logs = driver.get_log("browser")
    finally:
        driver.quit()
    return plots, sections, logs


SECTIONS = ["overview", "waterfall", "quality", "languages", "domains", "pii", "phi", "confidential", "brands",
            "licences", "optout", "duplicates", "bias", "tables", "provenance"]


@pytest.fixture(scope="module")
def audit_report(audit_ws, tmp_path_factory):
    """The report of the sample workspace (every stage has run; two opt-outs applied): (summary, its HTML)."""
    out = tmp_path_factory.mktemp("report") / "report.html"
    return report(audit_ws, out), out


def test_report_renders_in_headless_chromium_with_every_section_and_no_console_error(audit_report, tmp_path):
    r, out = audit_report
    assert r.skipped == [] and r.sections == SECTIONS  # each stage's sections, in their declared order
    plots, sections, logs = render(out, tmp_path / "report.png")
    assert sections == set(SECTIONS)
    assert plots == r.plots >= 15
    assert logs == []
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000


def test_report_is_self_contained_and_shows_no_text_or_personal_data(audit_report, audit_ws, audit_pii_values):
    _, out = audit_report
    html = out.read_text()
    assert "<script" not in html and "<link" not in html and "src=" not in html and "@import" not in html
    assert not re.search(r"url\(", html)
    with duckdb.connect(str(audit_ws / "curate.duckdb"), read_only=True) as con:
        texts = [t for t, in con.execute("SELECT text FROM documents ORDER BY doc_id").fetchall()]
    assert len(audit_pii_values) > 1000
    assert [v for v in audit_pii_values if v in html] == []
    snippets = [t.strip()[:60] for t in texts if len(t.strip()) > 200]
    assert [s for s in snippets if s in html] == []


def section(html: str, sid: str) -> str:
    return re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S).group(1)


def test_each_stage_section_shows_the_workspace_numbers(audit_report, audit_ws):
    """Every number a stage's section shows is the workspace's, queried here from its tables."""
    from curate.stages.bias import report as bias_report

    html = audit_report[1].read_text()
    w = Workspace(audit_ws)
    # quality: rule thresholds on the histograms, and the most frequent language
    assert section(html, "quality").count('class="threshold"') >= 3
    lang, n = w.sql("SELECT lang, count(*) FROM quality GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1").row(0)
    assert f'<tr><td>{lang}</td><td class="n">{n:,}</td>' in section(html, "languages")
    # personal data: every entity type with its spans and documents
    from test_card import pii_counted

    pii = pii_counted(w)  # spans at or above the policy's min_score for their type
    assert len(pii) >= 5 and all(f'<tr><td>{t}</td><td class="n">{s:,}</td><td class="n">{d:,}</td>'
                                 in section(html, "pii") for t, (s, d) in pii.items())
    # licences: documents per use class
    classes = w.sql("SELECT use_class, count(DISTINCT doc_id) FROM license_signals GROUP BY 1").rows()
    assert "noncommercial" in dict(classes)
    assert all(f'<tr><td>{c}</td><td class="n">{n:,}</td>' in section(html, "licences") for c, n in classes)
    # opt-outs: each registry version's matches, and the reservations
    matches = w.sql("""SELECT match_kind, registry_version, count(DISTINCT entry_id), count(DISTINCT doc_id)
                       FROM optout_matches GROUP BY ALL ORDER BY ALL""").rows()
    assert {v for _, v, _, _ in matches} == {1, 2}
    assert all(f'<tr><td>{k}</td><td>{v}</td><td class="n">{e}</td><td class="n">{n:,}</td>'
               in section(html, "optout") for k, v, e, n in matches)
    noai = w.sql("SELECT count(*) FROM optout_signals WHERE list_contains(optout_reservations, 'robots:noai')").item()
    assert noai and f'<tr><td>robots:noai</td><td>-</td><td>–</td><td class="n">{noai}</td>' in section(html, "optout")
    assert "versions matched: 1, 2" in section(html, "provenance")
    # duplicates: clusters of two or more, exact and near
    for table in ("dedup_exact", "dedup_fuzzy"):
        clusters, docs = w.sql(f"""SELECT count(*), sum(n) FROM (SELECT count(*) AS n FROM {table}
                                   GROUP BY cluster_id HAVING count(*) > 1)""").row(0)
        assert clusters and f"{clusters:,} clusters of two or more holding {docs:,} documents" in html
    # bias: the stage's own report, flags and comparisons
    b = bias_report(w)
    flagged = int((b.removal["flag"] != "").sum())
    assert f"<p>{flagged} flag(s) over {b.removal.height} rule × group comparisons.</p>" in section(html, "bias")
    # signal tables: every stage's tables, categories by value, hidden columns hidden
    tables = section(html, "tables")
    rows, docs = w.sql("SELECT count(*), count(DISTINCT doc_id) FROM pii_spans").row(0)
    assert f"<h3><code>pii_spans</code>: {rows:,} rows, {docs:,} documents</h3>" in tables
    top = w.sql("SELECT entity_type, count(*) FROM pii_spans GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1").row(0)
    assert f"{top[0]} ({top[1]:,})" in tables  # pii declares entity_type a category
    assert "<td>signature</td>" not in tables and "<td>authors</td>" not in tables  # explain_exclude
    assert "<td>shingles</td>" in tables and "<td>url_key</td>" in tables
    run = json.loads((audit_ws / "manifest" / "run.json").read_text())
    assert run["manifest"]["root_hash"] in html and run["rules"]["sha256"] in html


def test_report_skips_absent_tables_cleanly_and_the_cli_writes_it(sample_copy, tmp_path):
    with Workspace(sample_copy).connect(write=True) as con:
        con.execute("DROP TABLE IF EXISTS pii_spans")
        con.execute("DROP TABLE IF EXISTS quality")
    out = tmp_path / "r.html"
    res = subprocess.run([*CURATE, "report", str(sample_copy), "--out", str(out)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    html = out.read_text()
    assert "Not available: table `pii_spans` is absent" in html
    assert "Not available: table `quality` is absent" in html
    assert 'id="waterfall"' in html and 'id="provenance"' in html and html.count('<svg class="plot"') >= 3
    assert "not available yet: quality, languages, pii" in " ".join(res.stdout.split())


def test_what_if_moves_exactly_the_documents_a_new_threshold_catches_and_writes_nothing(audit_ws):
    db = audit_ws / "curate.duckdb"
    before = db.read_bytes()
    manifest = (audit_ws / "manifest" / "manifest.parquet").read_bytes()
    rules = load_rules()  # the rules behind the sample workspace's decisions
    # an exact copy is also a near copy: the near-duplicate rule steps back for exact copies
    edited = edit(edit(rules, "exact-duplicate", when="dup_exact and exact_copies > 2"), "near-duplicate",
                  when="dup_fuzzy and not dup_exact")
    w = what_if(audit_ws, edited)
    terminal = [r.id for r in rules.rules if r.action in ("drop", "keep") and r.id != "near-duplicate"]
    with duckdb.connect(str(db), read_only=True) as con:  # dropped only for being a copy, in a cluster of two
        expected = sorted(r[0] for r in con.execute("""
            SELECT doc_id FROM decisions JOIN (SELECT doc_id, count(*) OVER (PARTITION BY cluster_id) AS copies
                                               FROM dedup_exact) USING (doc_id)
            WHERE action = 'drop' AND copies <= 2
              AND list_filter(rule_ids, lambda r: list_contains(?, r)) = ['exact-duplicate']""",
            [terminal]).fetchall())
    assert expected and sorted(w.changes["doc_id"].to_list()) == expected
    assert set(w.changes["action_now"].to_list()) == {"drop"} and "drop" not in set(w.changes["action_new"])
    assert all("exact-duplicate" not in r for r in w.changes["rules_new"].to_list())
    assert w.summary["documents"].sum() == len(expected) == w.by("domain", top=1000)["documents"].sum()
    assert w.groups is not None
    assert db.read_bytes() == before and (audit_ws / "manifest" / "manifest.parquet").read_bytes() == manifest


def test_set_threshold_rewrites_only_the_number_and_refuses_what_is_not_there():
    rules = load_rules()  # the default rules: toxic-language compares two bias signals with numbers
    moved = set_threshold(rules, "toxic-language", "bias_toxic_per_1k", 0.5)

    def when(rs):
        return next(r.when for r in rs.rules if r.id == "toxic-language")

    assert when(moved) == when(rules).replace("bias_toxic_per_1k >= 2", "bias_toxic_per_1k >= 0.5")
    assert when(moved) != when(rules) and moved.sha256 != rules.sha256
    with pytest.raises(KeyError, match="no rule"):
        edit(rules, "no-such-rule", when="true")
    with pytest.raises(KeyError, match="compares no number"):
        set_threshold(rules, "exact-duplicate", "dup_exact", 3)
