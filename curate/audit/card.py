"""`curate card`: dataset documentation filled from the workspace.

Three files: `datasheet.md` (Datasheets for Datasets, the sections an auditor asks for),
`croissant.json` (MLCommons Croissant 1.0 JSON-LD with the Responsible-AI fields, describing the
manifest as a record set), and `training_content_summary.md`, laid out like the EU AI Office's template
for the public summary of training content (general information, data sources, data processing).
Every figure comes from `curate.audit.facts` and the stages' audit modules (`card_facts`, by topic: `TOPICS`):
counts, categories and hashes, never text or personal data. What the workspace cannot know (provider, model,
crawl period) is left as a marked placeholder.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate import __version__
from curate.audit import facts as F
from curate.audit.sandbox import sandbox
from curate.core.manifest import MANIFEST
from curate.core.workspace import Workspace

TODO = "_[to be completed by the provider]_"
NOT_MEASURED = "Not measured: no stage of this workspace measures it."
# What a stage's audit module may say in the cards (`card_facts`), by topic. A list from several stages is
# joined (in stage-name order); a topic no stage fills reads NOT_MEASURED, or is left out.
TOPICS = {
    "composition": "sentences (list) after the datasheet's table of domains",
    "languages": "rows (lang, documents, keep, redact, drop), most documents first",
    "personal_data": "the paragraph on personal data (datasheet, Croissant RAI, EU summary)",
    "licences": "the datasheet's paragraph on licences", "licence_table": "a Markdown table after it",
    "licence_statement": "Croissant's `license`", "licence_shares": "the EU summary's shares by use class",
    "optout": "the paragraph on opt-outs and reservations (datasheet, Croissant, EU summary)",
    "reservations": "lines (list) after it in the EU summary",
    "biases": "the paragraph on known biases (datasheet, Croissant)",
    "limitations": "sentences (list) among the limitations",
}


@dataclass
class CardSummary:
    path: Path
    files: list[Path] = field(default_factory=list)


@dataclass
class Facts:
    """Everything the three documents say, gathered once."""

    name: str
    ws: Path
    manifest_dir: Path | None
    run: dict[str, Any]
    totals: dict[str, Any]
    shards: list[dict[str, Any]]
    domains: list[dict[str, Any]]
    domain_count: int
    rules: dict[str, F.RuleInfo]
    effects: list[dict[str, Any]]
    kept_domains: list[dict[str, Any]] = field(default_factory=list)
    topics: dict[str, Any] = field(default_factory=dict)  # what the stages say (`TOPICS`)

    def topic(self, name: str, default: Any = NOT_MEASURED) -> Any:
        return self.topics.get(name, default)


def gather(ws: Workspace, manifest: str | os.PathLike[str] | None, name: str | None) -> Facts:
    found = F.latest_manifest(ws.path, manifest)
    mdir, run = found if found else (None, {})
    with sandbox(ws) as con:
        rules = F.rules_in_force(con, run)
        f = Facts(name or ws.path.resolve().name, ws.path, mdir, run, F.totals(con), F.by_shard(con),
                  F.top_domains(con, 25), F.domain_count(con), rules, F.rule_effects(con, rules))
        f.kept_domains = F.records(con, """
            SELECT coalesce(d.domain, '(no url)') AS domain, count(*) AS documents, sum(strlen(d.text)) AS bytes
            FROM documents d JOIN decisions c USING (doc_id) WHERE c.action <> 'drop'
            GROUP BY 1 ORDER BY bytes DESC, domain""")
        ctx = F.Context(ws.path, run, rules, F.present_tables(con), f.totals)
        for m in F.audit_modules():
            for topic, value in (m.card_facts(con, ctx) if hasattr(m, "card_facts") else {}).items():
                if isinstance(value, list) and topic in f.topics:
                    f.topics[topic] = f.topics[topic] + value
                else:
                    f.topics[topic] = value
    return f


def card(ws: Workspace | str | os.PathLike[str], out: str | os.PathLike[str],
         manifest: str | os.PathLike[str] | None = None, name: str | None = None) -> CardSummary:
    """Write datasheet.md, croissant.json and training_content_summary.md into `out`."""
    w = ws if isinstance(ws, Workspace) else Workspace(ws)
    f = gather(w, manifest, name)
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    files = {"datasheet.md": datasheet(f), "croissant.json": json.dumps(croissant(f, d), indent=2) + "\n",
             "training_content_summary.md": eu_summary(f)}
    s = CardSummary(d)
    for fname, text in files.items():
        (d / fname).write_text(text, encoding="utf-8")
        s.files.append(d / fname)
    return s


# -- shared wording ------------------------------------------------------------------------------------
def md_table(rows: list[dict[str, Any]], cols: list[str], headers: list[str] | None = None) -> str:
    if not rows:
        return "_(none)_\n"
    head = "| " + " | ".join(headers or cols) + " |\n|" + "|".join("---" for _ in cols) + "|\n"
    return head + "".join("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |\n" for r in rows)


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:.3g}"
    return str(v).replace("|", "\\|")


def pct(a: float, b: float) -> str:
    return f"{a / b:.1%}" if b else "–"


def _kept(f: Facts) -> int:
    return f.totals["by_action"]["keep"] + f.totals["by_action"]["redact"]


def _kept_bytes(f: Facts) -> int:
    return sum(r["bytes"] or 0 for r in f.kept_domains)


def absent_text(table: str) -> str:
    """What the cards say of a topic whose stage's table is absent."""
    return f"Not measured: the workspace has no `{table}` table (its stage has not run)."


def composition(f: Facts) -> str:
    t = f.totals
    a = t["by_action"]
    return (f"{t['documents']:,} documents from {t['shards']} shard(s) ({t['input_rows']:,} input rows, "
            f"{t['quarantined_rows']:,} unreadable rows quarantined). After the policy: {a['keep']:,} kept as is, "
            f"{a['redact']:,} kept with personal data replaced by placeholders, {a['drop']:,} removed; "
            f"{_kept(f):,} documents ({_kept_bytes(f):,} bytes of UTF-8 text) remain, from {len(f.kept_domains):,} "
            f"of {f.domain_count:,} domains.")


def preprocessing_steps(f: Facts) -> list[str]:
    steps = [f"Ingest: each shard read once and identified by its SHA-256; rows that cannot be read are kept in "
             f"quarantine with the reason ({f.totals['quarantined_rows']:,} rows)."]
    for s in f.run.get("stages", []):
        steps.append(f"Stage `{s.get('name')}` version {s.get('version')} (fingerprint "
                     f"{', '.join(s.get('fingerprints', []))}).")
    for e in f.effects:
        did = f"redacted {e['redacted']:,}" if e["action"] == "redact" else f"decided the removal of {e['dropped']:,}"
        steps.append(f"Rule `{e['rule']}` ({e['action']}): {e['description']} Fired on {e['fired']:,} documents; "
                     f"{did}.")
    return steps


def limitations(f: Facts) -> list[str]:
    out = ["Signals are automatic (lexicons, patterns, statistical models): they have false positives and misses; "
           "the manifest records every decision so it can be audited and revised.", *f.topic("limitations", [])]
    if f.totals["quarantined_rows"]:
        out.append(f"{f.totals['quarantined_rows']:,} input rows could not be read and are not in the dataset.")
    languages = f.topic("languages", None)
    if languages:
        top = languages[0]
        out.append(f"The most frequent language is `{top['lang']}` ({pct(top['documents'], f.totals['documents'])}"
                   " of documents); others are under-represented.")
    return out


# -- datasheet ------------------------------------------------------------------------------------------
def datasheet(f: Facts) -> str:
    m, rules = f.run.get("manifest", {}), f.run.get("rules", {})
    lines = [f"# Datasheet: {f.name}", "",
             f"Generated by curate {__version__} from the workspace `{f.ws}`"
             + (f" and the manifest `{f.manifest_dir}` (root hash `{m.get('root_hash')}`)." if f.manifest_dir
                else " (no manifest written yet)."), "",
             "## Composition", "", composition(f), "",
             md_table(f.shards, ["shard", "format", "rows", "documents", "quarantined", "keep", "redact", "drop"]),
             ""]
    languages = f.topic("languages", None)
    if languages:
        lines += ["Languages:", "", md_table(languages[:10], ["lang", "documents", "keep", "redact", "drop"]), ""]
    lines += ["Largest domains:", "", md_table(f.domains[:15], ["domain", "documents", "keep", "redact", "drop"]), ""]
    lines += f.topic("composition", [])
    lines += ["", "## Collection", "",
              f"The documents come from {f.totals['shards']} input shard(s), each recorded with its URI, size, row "
              "count and SHA-256 in the manifest's `run.json`. How and when the shards were collected is not "
              f"recorded in the workspace: {TODO}", "",
              "## Preprocessing", "", *[f"- {s}" for s in preprocessing_steps(f)], "",
              f"Policy: `{rules.get('path', '?')}` (sha256 `{rules.get('sha256', '?')}`). Every decision names the "
              "rules that produced it (`curate explain WS DOC_ID`).", "",
              "## Personal data", "", f.topic("personal_data"), "",
              "## Licences", "", f.topic("licences"), ""]
    if f.topic("licence_table", None):
        lines += [f.topic("licence_table"), ""]
    lines += ["## Opt-out handling", "", f.topic("optout"), "",
              "## Known biases", "", f.topic("biases"), "",
              "## Limitations", "", *[f"- {x}" for x in limitations(f)], "",
              "## Provenance", "", md_table(_provenance_rows(f), ["item", "value"]), ""]
    return "\n".join(lines)


def _provenance_rows(f: Facts) -> list[dict[str, Any]]:
    m, r = f.run.get("manifest", {}), f.run.get("rules", {})
    rows = [{"item": "manifest root hash", "value": f"`{m.get('root_hash', '–')}`"},
            {"item": "manifest rows", "value": m.get("rows")},
            {"item": "rules sha256", "value": f"`{r.get('sha256', '–')}`"},
            {"item": "policy", "value": " ".join(str(r.get("policy", {}).get(k, "")) for k in ("name", "version"))},
            {"item": "tool", "value": ", ".join(f"{k} {v}" for k, v in f.run.get("tool", {}).items())}]
    for s in f.run.get("stages", []):
        for a in s.get("assets", []) or []:
            rows.append({"item": f"{s.get('name')}: {a.get('kind')} {a.get('path')} {a.get('version', '')}",
                         "value": f"`{a.get('sha256')}`"})
    return rows


# -- Croissant --------------------------------------------------------------------------------------------
MANIFEST_FIELDS = [("doc_id", "sc:Text", "Stable document id."), ("shard_uri", "sc:Text", "Input shard."),
                   ("row", "sc:Integer", "Row of the document in its shard (0-based)."),
                   ("input_sha256", "sc:Text", "SHA-256 of the input text."),
                   ("action", "sc:Text", "Decision: keep, redact or drop."),
                   ("output_sha256", "sc:Text", "SHA-256 of the exported text (absent when dropped)."),
                   ("row_hash", "sc:Text", "SHA-256 over the row's fields; the root hash covers them all.")]


def croissant(f: Facts, out_dir: Path) -> dict[str, Any]:
    """Croissant 1.0 metadata with RAI fields; the distribution is the manifest, with its hash."""
    from curate.util.assets import sha256_file

    ctx = {"@language": "en", "@vocab": "https://schema.org/", "sc": "https://schema.org/",
           "cr": "http://mlcommons.org/croissant/", "rai": "http://mlcommons.org/croissant/RAI/",
           "dct": "http://purl.org/dc/terms/", "citeAs": "cr:citeAs",
           "equivalentProperty": "cr:equivalentProperty", "column": "cr:column",
           "conformsTo": "dct:conformsTo", "data": {"@id": "cr:data", "@type": "@json"},
           "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "examples": {"@id": "cr:examples", "@type": "@json"},
           "extract": "cr:extract", "field": "cr:field", "fileProperty": "cr:fileProperty",
           "fileObject": "cr:fileObject", "fileSet": "cr:fileSet", "format": "cr:format", "includes": "cr:includes",
           "isLiveDataset": "cr:isLiveDataset", "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5",
           "parentField": "cr:parentField", "path": "cr:path", "recordSet": "cr:recordSet",
           "references": "cr:references", "regex": "cr:regex", "repeated": "cr:repeated", "replace": "cr:replace",
           "samplingRate": "cr:samplingRate", "separator": "cr:separator", "source": "cr:source",
           "subField": "cr:subField", "transform": "cr:transform"}
    created = str(f.run.get("created_at", ""))[:10] or None
    doc: dict[str, Any] = {
        "@context": ctx, "@type": "sc:Dataset", "name": f.name,
        "conformsTo": ["http://mlcommons.org/croissant/1.0", "http://mlcommons.org/croissant/RAI/1.0"],
        "description": f"Training text curated with curate {__version__}. " + composition(f),
        "url": f.ws.resolve().as_uri(),
        "license": f.topic("licence_statement", "Mixed: the licences of the source documents apply (not measured "
                                                "on this workspace)."),
        "version": str(f.run.get("rules", {}).get("policy", {}).get("version") or "0.0.0"),
        "datePublished": created,
        "keywords": ["training data", "curation", "audit", "manifest"],
        "inLanguage": [r["lang"] for r in (f.topic("languages", None) or [])[:10]
                       if r["lang"] and r["lang"] != "und" and not r["lang"].startswith("(")],
        "citeAs": f"{f.name}, curated with curate {__version__}, manifest root "
                  f"{f.run.get('manifest', {}).get('root_hash', 'unpublished')}",
        "rai:dataCollection": "Documents read from the input shards listed in run.json (URI, bytes, rows, "
                              f"SHA-256). {composition(f)}",
        "rai:dataCollectionType": ["Secondary Data Analysis"],
        "rai:dataCollectionMissingData": f"{f.totals['quarantined_rows']:,} input rows could not be read; they are "
                                         "kept in the workspace's quarantine table with the reason and are not part "
                                         "of the dataset.",
        "rai:dataCollectionRawData": "Input shards, identified by SHA-256 in run.json: " + "; ".join(
            f"{Path(i.get('uri', '')).name} ({i.get('sha256', '')[:16]}…)" for i in f.run.get("inputs", [])),
        "rai:dataPreprocessingProtocol": preprocessing_steps(f),
        "rai:dataManipulationProtocol": "Documents decided `redact` are exported with each personal-data span "
                                        "replaced by a `<ENTITY_TYPE>` placeholder; output hashes are in the manifest.",
        "rai:dataAnnotationProtocol": "No human annotation: signals are computed by the curate stages recorded "
                                      "under preprocessing.",
        "rai:personalSensitiveInformation": [f.topic("personal_data")],
        "rai:dataBiases": [f.topic("biases")],
        "rai:dataLimitations": limitations(f),
        "rai:dataUseCases": ["Pre-training and fine-tuning of generative language models, within the licence use "
                             "classes listed in the licence statement."],
        "rai:dataSocialImpact": "Creators' opt-outs and machine-readable reservations are honoured: "
                                + f.topic("optout"),
        "rai:dataReleaseMaintenancePlan": "New opt-out requests are applied with `curate optout apply`, which "
                                          "writes a new manifest and the diff of what changed; every manifest is "
                                          "verifiable with `curate verify`.",
    }
    if f.manifest_dir:
        rel = os.path.relpath((f.manifest_dir / MANIFEST).resolve(), out_dir.resolve())
        doc["distribution"] = [{
            "@type": "cr:FileObject", "@id": "manifest.parquet", "name": "manifest.parquet",
            "description": "One row per document with its decision and hashes.",
            "contentUrl": rel, "encodingFormat": "application/x-parquet",
            "sha256": sha256_file(f.manifest_dir / MANIFEST)}]
        doc["recordSet"] = [{
            "@type": "cr:RecordSet", "@id": "manifest", "name": "manifest",
            "description": "The decision on every ingested document.",
            "field": [{"@type": "cr:Field", "@id": f"manifest/{n}", "name": n, "description": desc,
                       "dataType": typ, "source": {"fileObject": {"@id": "manifest.parquet"},
                                                   "extract": {"column": n}}}
                      for n, typ, desc in MANIFEST_FIELDS]}]
    return {k: v for k, v in doc.items() if v not in (None, [], "")}


# -- EU AI Office public summary ---------------------------------------------------------------------
def eu_summary(f: Facts) -> str:
    kept, kept_bytes = _kept(f), _kept_bytes(f)
    n_top = max(1, math.ceil(len(f.kept_domains) * 0.10))
    top = f.kept_domains[:n_top]
    langs = ", ".join(f"{r['lang']} ({pct(r['keep'] + r['redact'], kept)})"
                      for r in (f.topic("languages", None) or [])[:10]
                      if r["keep"] + r["redact"]) or "not measured"
    lines = [
        f"# Public summary of training content: {f.name}", "",
        "_Laid out after the European Commission AI Office's template for the public summary of training content "
        "of general-purpose AI models (Article 53(1)(d) AI Act). Figures are computed by curate "
        f"{__version__} from the curation workspace; sections the workspace cannot know are marked._", "",
        "## 1. General information", "",
        "### 1.1 Provider identification", "", f"Provider name and contact: {TODO}", "",
        "### 1.2 Model identification", "", f"Model name(s) and versions trained on this content: {TODO}", "",
        "### 1.3 Modalities, overall training data size and other characteristics", "",
        "| item | value |", "|---|---|",
        "| modality | text |",
        f"| documents in the training content | {kept:,} (of {f.totals['documents']:,} collected) |",
        f"| size | {kept_bytes:,} bytes of UTF-8 text |",
        f"| languages (share of documents) | {langs} |",
        f"| knowledge cut-off / collection period | {TODO} |", "",
        "## 2. List of data sources", "",
        "### 2.1 Publicly available datasets", "",
        f"Input shards (classify each as a public dataset, licensed third-party data, or crawled data): {TODO}", "",
        md_table([{"shard": s["shard"], "format": s["format"], "documents": s["documents"],
                   "kept": s["keep"] + s["redact"]} for s in f.shards], ["shard", "format", "documents", "kept"]),
        "",
        "### 2.2 Private non-publicly available datasets obtained from third parties", "", TODO, "",
        "### 2.3 Data crawled and scraped from online sources", "",
        f"Crawler(s), collection period and the types of content crawled: {TODO}", "",
        f"Top 10% of domain names by size of content in the training data ({len(top)} of "
        f"{len(f.kept_domains):,} domains):", "",
        md_table([{**r, "share": pct(r["bytes"] or 0, kept_bytes)} for r in top],
                 ["domain", "documents", "bytes", "share"]), "",
        "### 2.4 User data", "", TODO, "",
        "### 2.5 Synthetic data", "", TODO, "",
        "### 2.6 Other sources of data", "", TODO, "",
        "## 3. Data processing aspects", "",
        "### 3.1 Respect of reservation of rights from the text and data mining exception or limitation", "",
        f.topic("optout"), "",
        *f.topic("reservations", []),
    ]
    lines += ["### 3.2 Removal of illegal content", "",
              "Filters applied by the policy (each removal is attributed to the first rule that decided it):", "",
              md_table([e for e in f.effects if e["action"] in ("drop", "redact")],
                       ["rule", "action", "fired", "dropped", "redacted", "description"]), "",
              f"Personal data: {f.topic('personal_data')}", "",
              "### 3.3 Other information", "",
              "Shares of the training content by licence use class:", ""]
    lines.append(f.topic("licence_shares"))
    lines += ["", f"Manifest root hash: `{f.run.get('manifest', {}).get('root_hash', 'no manifest written')}`.", ""]
    return "\n".join(lines)
