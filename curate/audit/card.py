"""`curate card`: dataset documentation filled from the workspace.

Three files: `datasheet.md` (Datasheets for Datasets, the sections an auditor asks for),
`croissant.json` (MLCommons Croissant 1.0 JSON-LD with the Responsible-AI fields, describing the
manifest as a record set), and `training_content_summary.md`, laid out like the EU AI Office's template
for the public summary of training content (general information, data sources, data processing).
Every figure comes from `curate.audit.facts`: counts, categories and hashes, never text or personal data.
What the workspace cannot know (provider, model, crawl period) is left as a marked placeholder.
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
RESERVATION_KINDS = {"robots-noai", "tdm-reservation", "x-robots-tag", "noai", "noimageai", "robots", "tdmrep",
                     "ai-txt", "ai.txt", "robots.txt"}


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
    present: set[str]
    languages: list[dict[str, Any]] | None = None
    pii: list[dict[str, Any]] | None = None
    licences: list[dict[str, Any]] | None = None
    top_licences: list[dict[str, Any]] | None = None
    optout: list[dict[str, Any]] | None = None
    exact: dict[str, Any] | None = None
    fuzzy: dict[str, Any] | None = None
    bias: Any = None  # curate.stages.bias.stage.BiasReport
    bias_note: str | None = None
    kept_domains: list[dict[str, Any]] = field(default_factory=list)


def gather(ws: Workspace, manifest: str | os.PathLike[str] | None, name: str | None) -> Facts:
    found = F.latest_manifest(ws.path, manifest)
    mdir, run = found if found else (None, {})
    bias, bias_note = F.bias_report(ws.path)
    with sandbox(ws) as con:
        present = F.present_tables(con)
        rules = F.rules_in_force(con, run)
        f = Facts(name or ws.path.resolve().name, ws.path, mdir, run, F.totals(con), F.by_shard(con),
                  F.top_domains(con, 25), F.domain_count(con), rules, F.rule_effects(con, rules), present)
        f.kept_domains = F.records(con, """
            SELECT coalesce(d.domain, '(no url)') AS domain, count(*) AS documents, sum(strlen(d.text)) AS bytes
            FROM documents d JOIN decisions c USING (doc_id) WHERE c.action <> 'drop'
            GROUP BY 1 ORDER BY bytes DESC, domain""")
        if "quality" in present:
            f.languages = F.languages(con)
        if "pii_spans" in present:
            f.pii = F.pii_by_type(con)
        if "license_signals" in present:
            f.licences, f.top_licences = F.licence_classes(con), F.top_licences(con)
        if "optout_matches" in present:
            f.optout = F.optout(con)
        if "dedup_exact" in present:
            f.exact = F.cluster_sizes(con, "dedup_exact")
        if "dedup_fuzzy" in present:
            f.fuzzy = F.cluster_sizes(con, "dedup_fuzzy")
        if "bias_terms" in present:
            f.bias, f.bias_note = bias, bias_note
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
def _md_table(rows: list[dict[str, Any]], cols: list[str], headers: list[str] | None = None) -> str:
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


def _pct(a: float, b: float) -> str:
    return f"{a / b:.1%}" if b else "–"


def _kept(f: Facts) -> int:
    return f.totals["by_action"]["keep"] + f.totals["by_action"]["redact"]


def _kept_bytes(f: Facts) -> int:
    return sum(r["bytes"] or 0 for r in f.kept_domains)


def _absent(table: str) -> str:
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


def pii_text(f: Facts) -> str:
    if f.pii is None:
        return _absent("pii_spans")
    if not f.pii:
        return "No personal data was detected."
    spans = sum(r["spans"] for r in f.pii)
    kinds = ", ".join(f"{r['entity_type']} ({r['spans']:,} spans in {r['documents']:,} documents)" for r in f.pii)
    left = sum(r["in_kept_unredacted"] for r in f.pii)
    return (f"{spans:,} personal-data spans were detected: {kinds}. Documents containing them were redacted "
            f"(each span replaced by a `<ENTITY_TYPE>` placeholder) or removed as the policy decided; "
            f"{left:,} document(s) with a detected span were kept without redaction. Detection is automatic and "
            "can miss personal data. Values are never written to reports or cards.")


def licence_text(f: Facts) -> str:
    if f.licences is None:
        return _absent("license_signals")
    docs = f.totals["documents"] or 1
    parts = [f"{r['use_class']}: {r['documents']:,} documents ({_pct(r['documents'], docs)}), "
             f"{r['keep'] + r['redact']:,} kept" for r in f.licences]
    return "Licence use classes found in the documents (a document with several notices counts in each): " + \
        "; ".join(parts) + "."


def optout_text(f: Facts) -> str:
    if f.optout is None:
        return _absent("optout_matches")
    reg = F.registry_info(f.run)
    versions = sorted({str(r["registry_version"]) for r in f.optout if r.get("source") != "reservation"})
    lines = [(f"reservation {r['match_kind']}" if r.get("source") == "reservation" else
              f"{r['match_kind']} (registry version {r['registry_version']})")
             + f": {r['matched']:,} documents matched, {r['removed']:,} removed" for r in f.optout]
    head = ("Opt-out requests (creator registry entries) and machine-readable reservations (robots `noai`, "
            "`tdm-reservation`, `X-Robots-Tag`, robots.txt/ai.txt/TDMRep where the crawl team supplied them) are "
            "matched against every document; the policy removes matched documents. ")
    tail = f" Registry versions applied: {', '.join(versions) or 'none'}."
    if reg:
        tail += f" run.json records: {json.dumps(reg, sort_keys=True, default=str)}."
    return head + ("; ".join(lines) + "." if lines else "No document matched an opt-out.") + tail


def bias_text(f: Facts) -> str:
    if "bias_terms" not in f.present:
        return _absent("bias_terms")
    if f.bias is None:
        return f"Not measured: the bias report could not be computed ({f.bias_note})."
    rep = [r for r in f.bias.representation.to_dicts() if r["docs_before"]]
    if not rep:
        return "No lexicon term of any group occurs in the documents."
    lex = ", ".join(f"{r['axis']} {r['version']}" for r in f.bias.lexicons.to_dicts())
    text = "; ".join(f"{r['axis']}/{r['group_name']}: {r['per_million_before']:.1f} → "
                     f"{(r['per_million_after'] or 0):.1f} mentions per million tokens" for r in rep)
    flags = [r for r in f.bias.removal.to_dicts() if r["flag"]]
    flagged = ("; ".join(f"{r['axis']}/{r['group_name']} under {r['rule_id']}: {r['measure']} rate {r['rate']:.1%} "
                         f"(CI {r['ci_low']:.1%}–{r['ci_high']:.1%}) against {r['overall_rate']:.1%} overall "
                         f"({r['flag']})" for r in flags) if flags else "none")
    return (f"Measured with the lexicons {lex} (`curate bias`). Representation before → after the policy: {text}. "
            f"Disparate removal (the confidence interval of a group's removal rate excludes the rule's overall "
            f"rate): {flagged}.")


def limitations(f: Facts) -> list[str]:
    out = ["Signals are automatic (lexicons, patterns, statistical models): they have false positives and misses; "
           "the manifest records every decision so it can be audited and revised."]
    for table, what in (("pii_spans", "personal data"), ("license_signals", "licences"),
                        ("optout_matches", "opt-outs"), ("quality", "quality and language"),
                        ("bias_terms", "bias"), ("dedup_fuzzy", "near duplicates")):
        if table not in f.present:
            out.append(f"{what.capitalize()} were not measured on this workspace (no `{table}` table).")
    if f.totals["quarantined_rows"]:
        out.append(f"{f.totals['quarantined_rows']:,} input rows could not be read and are not in the dataset.")
    if f.languages:
        top = f.languages[0]
        out.append(f"The most frequent language is `{top['lang']}` ({_pct(top['documents'], f.totals['documents'])}"
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
             _md_table(f.shards, ["shard", "format", "rows", "documents", "quarantined", "keep", "redact", "drop"]),
             ""]
    if f.languages:
        lines += ["Languages:", "", _md_table(f.languages[:10], ["lang", "documents", "keep", "redact", "drop"]), ""]
    lines += ["Largest domains:", "", _md_table(f.domains[:15], ["domain", "documents", "keep", "redact", "drop"]), ""]
    if f.exact is not None:
        lines.append(f"Exact duplicates: {f.exact['clusters']:,} clusters holding {f.exact['documents']:,} documents.")
    if f.fuzzy is not None:
        lines.append(f"Near duplicates: {f.fuzzy['clusters']:,} clusters holding {f.fuzzy['documents']:,} documents.")
    lines += ["", "## Collection", "",
              f"The documents come from {f.totals['shards']} input shard(s), each recorded with its URI, size, row "
              "count and SHA-256 in the manifest's `run.json`. How and when the shards were collected is not "
              f"recorded in the workspace: {TODO}", "",
              "## Preprocessing", "", *[f"- {s}" for s in preprocessing_steps(f)], "",
              f"Policy: `{rules.get('path', '?')}` (sha256 `{rules.get('sha256', '?')}`). Every decision names the "
              "rules that produced it (`curate explain WS DOC_ID`).", "",
              "## Personal data", "", pii_text(f), "",
              "## Licences", "", licence_text(f), ""]
    if f.top_licences:
        lines += [_md_table(f.top_licences[:10], ["license", "use_class", "documents"]), ""]
    lines += ["## Opt-out handling", "", optout_text(f), "",
              "## Known biases", "", bias_text(f), "",
              "## Limitations", "", *[f"- {x}" for x in limitations(f)], "",
              "## Provenance", "", _md_table(_provenance_rows(f), ["item", "value"]), ""]
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
        "license": _licence_statement(f),
        "version": str(f.run.get("rules", {}).get("policy", {}).get("version") or "0.0.0"),
        "datePublished": created,
        "keywords": ["training data", "curation", "audit", "manifest"],
        "inLanguage": [r["lang"] for r in (f.languages or [])[:10]
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
        "rai:personalSensitiveInformation": [pii_text(f)],
        "rai:dataBiases": [bias_text(f)],
        "rai:dataLimitations": limitations(f),
        "rai:dataUseCases": ["Pre-training and fine-tuning of generative language models, within the licence use "
                             "classes listed in the licence statement."],
        "rai:dataSocialImpact": "Creators' opt-outs and machine-readable reservations are honoured: " + optout_text(f),
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


def _licence_statement(f: Facts) -> str:
    if not f.licences:
        return "Mixed: the licences of the source documents apply (not measured on this workspace)."
    kept = [(r["use_class"], r["keep"] + r["redact"]) for r in f.licences if r["keep"] + r["redact"]]
    return "Mixed: the licences of the source documents apply. Kept documents by licence use class: " + \
        ", ".join(f"{c} {n:,}" for c, n in kept) + "."


# -- EU AI Office public summary ---------------------------------------------------------------------
def eu_summary(f: Facts) -> str:
    kept, kept_bytes = _kept(f), _kept_bytes(f)
    n_top = max(1, math.ceil(len(f.kept_domains) * 0.10))
    top = f.kept_domains[:n_top]
    langs = ", ".join(f"{r['lang']} ({_pct(r['keep'] + r['redact'], kept)})" for r in (f.languages or [])[:10]
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
        _md_table([{"shard": s["shard"], "format": s["format"], "documents": s["documents"],
                    "kept": s["keep"] + s["redact"]} for s in f.shards], ["shard", "format", "documents", "kept"]),
        "",
        "### 2.2 Private non-publicly available datasets obtained from third parties", "", TODO, "",
        "### 2.3 Data crawled and scraped from online sources", "",
        f"Crawler(s), collection period and the types of content crawled: {TODO}", "",
        f"Top 10% of domain names by size of content in the training data ({len(top)} of "
        f"{len(f.kept_domains):,} domains):", "",
        _md_table([{**r, "share": _pct(r["bytes"] or 0, kept_bytes)} for r in top],
                  ["domain", "documents", "bytes", "share"]), "",
        "### 2.4 User data", "", TODO, "",
        "### 2.5 Synthetic data", "", TODO, "",
        "### 2.6 Other sources of data", "", TODO, "",
        "## 3. Data processing aspects", "",
        "### 3.1 Respect of reservation of rights from the text and data mining exception or limitation", "",
        optout_text(f), "",
    ]
    if f.optout:
        res = [r for r in f.optout if r.get("source") == "reservation" or r["match_kind"] in RESERVATION_KINDS]
        reg = [r for r in f.optout if r not in res]
        lines += ["Machine-readable reservations honoured:", "",
                  _md_table(res, ["match_kind", "registry_version", "matched", "removed"]), "",
                  "Opt-out registry entries honoured:", "",
                  _md_table(reg, ["match_kind", "registry_version", "entries", "matched", "removed"]), ""]
    lines += ["### 3.2 Removal of illegal content", "",
              "Filters applied by the policy (each removal is attributed to the first rule that decided it):", "",
              _md_table([e for e in f.effects if e["action"] in ("drop", "redact")],
                        ["rule", "action", "fired", "dropped", "redacted", "description"]), "",
              f"Personal data: {pii_text(f)}", "",
              "### 3.3 Other information", "",
              "Shares of the training content by licence use class:", ""]
    if f.licences:
        lines.append(_md_table([{"use_class": r["use_class"], "documents": r["keep"] + r["redact"],
                                 "share": _pct(r["keep"] + r["redact"], kept)} for r in f.licences],
                               ["use_class", "documents", "share"]))
    else:
        lines.append(_absent("license_signals"))
    lines += ["", f"Manifest root hash: `{f.run.get('manifest', {}).get('root_hash', 'no manifest written')}`.", ""]
    return "\n".join(lines)
