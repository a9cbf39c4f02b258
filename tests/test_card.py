from __future__ import annotations

import json
import re
import subprocess

import duckdb
import pyarrow.parquet as pq
from conftest import CURATE
from surface_data import PII

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


def test_cards_from_a_full_workspace(full_ws, tmp_path):
    out = tmp_path / "cards"
    res = subprocess.run([*CURATE, "card", str(full_ws), "--out", str(out), "--name", "sample-corpus"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    sheet = (out / "datasheet.md").read_text()
    summary = (out / "training_content_summary.md").read_text()
    meta = json.loads((out / "croissant.json").read_text())
    run = json.loads((full_ws / "manifest" / "run.json").read_text())
    w = Workspace(full_ws)

    # the datasheet: every section, filled from the workspace
    positions = [sheet.index(s) for s in SECTIONS]
    assert positions == sorted(positions)
    docs = w.sql("SELECT count(*) FROM documents").item()
    kept = w.sql("SELECT count(*) FROM decisions WHERE action <> 'drop'").item()
    assert f"{docs:,} documents from" in sheet and f"{kept:,} documents (" in sheet
    assert run["manifest"]["root_hash"] in sheet and "Not measured" not in sheet
    top_pii = w.sql("SELECT entity_type FROM pii_spans GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1").item()
    assert top_pii in sheet.split("## Personal data")[1].split("##")[0]
    kind, version = w.sql("SELECT match_kind, registry_version FROM optout_matches ORDER BY ALL LIMIT 1").row(0)
    assert f"{kind} (registry version {version})" in sheet and "Disparate removal" in sheet

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
    assert "Shares of the training content by licence use class" in summary

    # Croissant: loads and validates in mlcroissant without errors or warnings, RAI fields filled
    ds, issues = load_croissant(out / "croissant.json")
    assert not issues.errors and not issues.warnings
    assert all(meta.get(k) for k in RAI)
    assert ds.metadata.name == "sample-corpus"
    assert ds.metadata.data_biases and ds.metadata.personal_sensitive_information
    assert meta["distribution"][0]["sha256"] == sha256_file(full_ws / "manifest" / "manifest.parquet")
    records = list(ds.records("manifest"))
    manifest = pq.read_table(full_ws / "manifest" / "manifest.parquet")
    assert len(records) == manifest.num_rows
    assert sorted(r["manifest/doc_id"].decode() for r in records) == sorted(manifest.column("doc_id").to_pylist())

    # never a personal-data value nor document text in any card
    with duckdb.connect(str(full_ws / "curate.duckdb"), read_only=True) as con:
        texts = [t for t, in con.execute("SELECT text FROM documents").fetchall()]
    values = {m.group() for t in texts for kind, rx in PII if kind == "EMAIL_ADDRESS" for m in re.finditer(rx, t)}
    everything = sheet + summary + json.dumps(meta)
    assert values and not [v for v in values if v in everything]
    assert not [t for t in texts if len(t.strip()) > 200 and t.strip()[:60] in everything]


def test_cards_say_what_was_not_measured(sample_copy, tmp_path):
    with Workspace(sample_copy).connect(write=True) as con:
        for t in ("pii_spans", "license_signals", "optout_matches", "bias_terms"):
            con.execute(f"DROP TABLE IF EXISTS {t}")
    s = card(sample_copy, tmp_path / "cards")
    sheet = (tmp_path / "cards" / "datasheet.md").read_text()
    for t in ("pii_spans", "license_signals", "optout_matches", "bias_terms"):
        assert f"Not measured: the workspace has no `{t}` table" in sheet
    _, issues = load_croissant(tmp_path / "cards" / "croissant.json")
    assert not issues.errors and len(s.files) == 3
