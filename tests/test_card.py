from __future__ import annotations

import json
import subprocess

import duckdb
import pyarrow.parquet as pq
from conftest import CURATE

from curate import Workspace
from curate.audit.card import card
from curate.util.assets import sha256_file

SECTIONS = ["## Composition", "## Collection", "## Preprocessing", "## Personal data", "## Licences",
            "## Opt-out handling", "## Known biases", "## Limitations"]
RAI = ["rai:dataCollection", "rai:dataCollectionType", "rai:dataCollectionMissingData", "rai:dataCollectionRawData",
       "rai:dataPreprocessingProtocol", "rai:dataManipulationProtocol", "rai:personalSensitiveInformation",
       "rai:dataBiases", "rai:dataLimitations", "rai:dataUseCases", "rai:dataSocialImpact",
       "rai:dataReleaseMaintenancePlan"]


def load_croissant(path):
    """mlcroissant loads and validates the file; returns the dataset and the issues it found."""
    import mlcroissant as mlc

    ds = mlc.Dataset(jsonld=path)
    return ds, ds.metadata.ctx.issues


def test_cards_from_the_sample_workspace(audit_ws, audit_pii_values, tmp_path):
    out = tmp_path / "cards"
    res = subprocess.run([*CURATE, "card", str(audit_ws), "--out", str(out), "--name", "sample-corpus"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sheet = (out / "datasheet.md").read_text()
    summary = (out / "training_content_summary.md").read_text()
    meta = json.loads((out / "croissant.json").read_text())
    run = json.loads((audit_ws / "manifest" / "run.json").read_text())
    w = Workspace(audit_ws)

    def part(text: str, heading: str) -> str:
        return text.split(heading + "\n")[1].split("\n#")[0]

    # the datasheet: every section, filled from the workspace by the stages' audit modules
    positions = [sheet.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    docs = w.sql("SELECT count(*) FROM documents").item()
    kept = w.sql("SELECT count(*) FROM decisions WHERE action <> 'drop'").item()
    assert f"{docs:,} documents from" in sheet and f"{kept:,} documents (" in sheet
    assert run["manifest"]["root_hash"] in sheet and "Not measured" not in sheet + summary
    for table, kind in (("dedup_exact", "Exact"), ("dedup_fuzzy", "Near")):
        clusters, members = w.sql(f"""SELECT count(*), sum(n) FROM (SELECT count(*) AS n FROM {table}
                                      GROUP BY cluster_id HAVING count(*) > 1)""").row(0)
        assert f"{kind} duplicates: {clusters:,} clusters holding {members:,} documents." in sheet
    lang, n = w.sql("SELECT lang, count(*) FROM quality GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 1").row(0)
    assert f"| {lang} | {n:,} |" in part(sheet, "## Composition")
    # only spans at or above the policy's min_score for their type count (the rules file's [pii.entities])
    counted = pii_counted(w)
    spans = sum(n for n, _ in counted.values())
    top = min(counted, key=lambda t: (-counted[t][0], t))
    assert part(sheet, "## Personal data").startswith(
        f"\n{spans:,} personal-data spans were detected at or above the policy's minimum score for their type: "
        f"{top} ({counted[top][0]:,} spans in {counted[top][1]:,} documents), ")
    nc = w.sql("SELECT count(DISTINCT doc_id) FROM license_signals WHERE use_class = 'noncommercial'").item()
    assert f"noncommercial: {nc:,} documents (" in part(sheet, "## Licences")
    optouts = part(sheet, "## Opt-out handling")
    for kind, version, matched in w.sql("""SELECT match_kind, registry_version, count(DISTINCT doc_id)
                                           FROM optout_matches GROUP BY ALL""").rows():
        assert f"{kind} (registry version {version}): {matched:,} documents matched" in optouts
    assert "Registry versions applied: 1, 2." in sheet
    assert "Disparate removal" in part(sheet, "## Known biases")

    # the EU summary: its three parts, top domains by kept content, reservations, licence shares
    for heading in ("## 1. General information", "## 2. List of data sources", "### 2.3 Data crawled",
                    "## 3. Data processing aspects", "### 3.1 Respect of reservation of rights"):
        assert heading in summary
    biggest = w.sql("""SELECT d.domain FROM documents d JOIN decisions c USING (doc_id) WHERE c.action <> 'drop'
                       GROUP BY 1 ORDER BY sum(strlen(d.text)) DESC LIMIT 1""").item()
    assert f"| {biggest} |" in summary.split("### 2.3")[1].split("### 2.4")[0]
    reserved = w.sql("SELECT count(DISTINCT doc_id) FROM optout_signals WHERE list_contains(optout_reservations, "
                     "'robots:noai')").item()
    assert reserved and f"| robots:noai | - | {reserved} |" in summary
    permissive = w.sql("""SELECT count(DISTINCT doc_id) FROM license_signals JOIN decisions USING (doc_id)
                          WHERE use_class = 'permissive' AND action <> 'drop'""").item()
    assert f"| permissive | {permissive:,} |" in summary.split("by licence use class:")[1]

    # Croissant: loads and validates in mlcroissant without errors or warnings, RAI fields filled
    ds, issues = load_croissant(out / "croissant.json")
    assert not issues.errors and not issues.warnings
    assert all(meta.get(k) for k in RAI)
    assert ds.metadata.name == "sample-corpus"
    assert ds.metadata.data_biases and ds.metadata.personal_sensitive_information
    assert meta["license"].startswith("Mixed: the licences of the source documents apply. Kept documents by")
    assert lang in meta["inLanguage"]
    assert meta["distribution"][0]["sha256"] == sha256_file(audit_ws / "manifest" / "manifest.parquet")
    records = list(ds.records("manifest"))
    manifest = pq.read_table(audit_ws / "manifest" / "manifest.parquet")
    assert len(records) == manifest.num_rows
    assert sorted(r["manifest/doc_id"].decode() for r in records) == sorted(manifest.column("doc_id").to_pylist())

    # never a personal-data value nor document text in any card
    with duckdb.connect(str(audit_ws / "curate.duckdb"), read_only=True) as con:
        texts = [t for t, in con.execute("SELECT text FROM documents").fetchall()]
    everything = sheet + summary + json.dumps(meta)
    assert len(audit_pii_values) > 1000 and not [v for v in audit_pii_values if v in everything]
    assert not [t for t in texts if len(t.strip()) > 200 and t.strip()[:60] in everything]


def test_cards_say_what_was_not_measured(sample_copy, tmp_path):
    with Workspace(sample_copy).connect(write=True) as con:
        for t in ("pii_spans", "license_signals", "optout_matches", "bias_terms"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    s = card(sample_copy, tmp_path / "cards")
    sheet = (tmp_path / "cards" / "datasheet.md").read_text()
    for t in ("pii_spans", "license_signals", "optout_matches", "bias_terms"):
        assert f"Not measured: the workspace has no `{t}` table" in sheet
    assert "Personal data were not measured on this workspace (no `pii_spans` table)." in sheet
    assert "Exact duplicates: " in sheet and "Not measured" not in sheet.split("## Known biases")[0].split(
        "## Personal data")[0]  # the stages whose tables are there still say what they measured
    _, issues = load_croissant(tmp_path / "cards" / "croissant.json")
    assert not issues.errors and len(s.files) == 3


def pii_counted(w) -> dict[str, tuple[int, int]]:
    """Entity type -> (spans, documents) at or above the type's min_score in the rules behind the decisions."""
    from curate.core.policy import current_rules

    with w.connect() as con:
        entities = current_rules(con).raw.get("pii", {}).get("entities", {})
    spans: dict[str, list] = {}
    for t, doc_id, score in w.sql("SELECT entity_type, doc_id, score FROM pii_spans").rows():
        if score >= entities.get(t, {}).get("min_score", 0.5):
            spans.setdefault(t, []).append(doc_id)
    return {t: (len(d), len(set(d))) for t, d in spans.items()}
