"""A workspace with every DESIGN.md signal table filled, for the report, validation and card tests.

Stages that have not landed yet leave their tables absent; `plant_signals` creates each missing table with
DESIGN.md's columns and fills it from the real sample documents by simple, deterministic rules (regexes
for e-mail addresses, SPDX lines, stop words...). A table a real stage already wrote is left as it is.
Decisions come from the real policy compiler (`decisions_sql`) over the stages' `signals` view plus
columns over the planted tables, and the manifest from `write_manifest`, so the workspace is consistent
and validation passes on it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from curate import Workspace
from curate.core.policy import build_signals_view, decisions_sql, default_rules_path, load_rules

DDL = {
    "dedup_fuzzy": 'CREATE TABLE dedup_fuzzy (doc_id VARCHAR NOT NULL, cluster_id VARCHAR, is_keeper BOOLEAN)',
    "pii_spans": 'CREATE TABLE pii_spans (doc_id VARCHAR NOT NULL, entity_type VARCHAR, "start" BIGINT, '
                 '"end" BIGINT, score DOUBLE, recognizer VARCHAR)',
    "license_signals": 'CREATE TABLE license_signals (doc_id VARCHAR NOT NULL, license VARCHAR, use_class VARCHAR, '
                       'evidence VARCHAR, "start" BIGINT, "end" BIGINT, score DOUBLE)',
    "optout_matches": 'CREATE TABLE optout_matches (doc_id VARCHAR NOT NULL, entry_id VARCHAR, match_kind VARCHAR, '
                      'registry_version BIGINT)',
    "quality": 'CREATE TABLE quality (doc_id VARCHAR NOT NULL, word_count BIGINT, mean_word_length DOUBLE, '
               'symbol_word_ratio DOUBLE, line_punct_ratio DOUBLE, lang VARCHAR, lang_score DOUBLE, '
               'quality_score DOUBLE)',
    "bias_terms": 'CREATE TABLE bias_terms (doc_id VARCHAR NOT NULL, axis VARCHAR, group_name VARCHAR, '
                  '"count" BIGINT)',
}

PII = [("EMAIL_ADDRESS", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), ("IP_ADDRESS", r"\b(?:\d{1,3}\.){3}\d{1,3}\b"),
       ("PHONE_NUMBER", r"\b555[-. ]\d{4}\b|\(\d{3}\) ?\d{3}-\d{4}")]
LICENCES = [  # (regex, SPDX id or None to take group 1, use class)
    (r"SPDX-License-Identifier:\s*([\w.+-]+)", None, None),
    (r"creativecommons\.org/licenses/by-nc", "CC-BY-NC-4.0", "noncommercial"),
    (r"Permission is hereby granted, free of charge", "MIT", "permissive"),
    (r"GNU GENERAL PUBLIC LICENSE", "GPL-2.0-or-later", "copyleft"),
    (r"All rights reserved", "LicenseRef-all-rights-reserved", "all-rights-reserved"),
    (r"public domain", "LicenseRef-public-domain", "public-domain"),
]
CLASS = {"MIT": "permissive", "BSD": "permissive", "Apache": "permissive", "GPL": "copyleft", "LGPL": "copyleft",
         "AGPL": "copyleft", "MPL": "copyleft", "CC0": "public-domain", "CC-BY-NC": "noncommercial"}
BIAS = [("gender", "female", r"\b(she|her|hers|woman|women|female)\b"),
        ("gender", "male", r"\b(he|him|his|man|men|male)\b"),
        ("religion", "christian", r"\b(christian|christians|church)\b"),
        ("religion", "jewish", r"\b(jewish|jews|judaism)\b"),
        ("age", "young", r"\b(young|youth|child|children)\b"),
        ("age", "old", r"\b(old|elderly|senior)\b")]

# Planted rules, each with the table it reads: a rule is used only when that table was planted (a real
# stage's table comes with that stage's own rules in rules/default.toml).
RULES = [
    ("optout_matches", "opt-out", "The creator or site reserved this work against AI training.",
     "optout_matched", "drop"),
    ("dedup_fuzzy", "near-duplicate", "A later near copy of another document.", "dup_fuzzy", "drop"),
    ("quality", "not-english", "Language other than English.",
     "quality_lang <> 'en' and quality_lang_score >= 0.5", "drop"),
    ("quality", "too-short", "Fewer than 30 words.", "quality_word_count < 30", "drop"),
    ("quality", "symbol-heavy", "More than one symbol per five words.", "quality_symbol_word_ratio > 0.2", "drop"),
    ("license_signals", "noncommercial-licence", "Licensed for non-commercial use only.", "license_noncommercial",
     "drop"),
    ("pii_spans", "personal-data", "Contains personal data: replaced by placeholders.", "pii_spans_count > 0",
     "redact"),
]
# Signals the planted rules use: (table, column, SQL over the join below).
PLANTED_SIGNALS = [
    ("optout_matches", "optout_matched", "o.doc_id IS NOT NULL"),
    ("dedup_fuzzy", "dup_fuzzy", "coalesce(NOT f.is_keeper, false)"),
    ("quality", "quality_lang", "q.lang"), ("quality", "quality_lang_score", "q.lang_score"),
    ("quality", "quality_word_count", "q.word_count"), ("quality", "quality_symbol_word_ratio", "q.symbol_word_ratio"),
    ("license_signals", "license_noncommercial", "l.doc_id IS NOT NULL"),
    ("pii_spans", "pii_spans_count", "coalesce(p.n, 0)"),
]
PLANTED_JOINS = {
    "optout_matches": "LEFT JOIN (SELECT DISTINCT doc_id FROM optout_matches) o USING (doc_id)",
    "dedup_fuzzy": "LEFT JOIN (SELECT doc_id, bool_and(is_keeper) AS is_keeper FROM dedup_fuzzy GROUP BY 1) f "
                   "USING (doc_id)",
    "quality": """LEFT JOIN (SELECT doc_id, any_value(lang) AS lang, any_value(lang_score) AS lang_score,
                  any_value(word_count) AS word_count, any_value(symbol_word_ratio) AS symbol_word_ratio
                  FROM quality GROUP BY 1) q USING (doc_id)""",
    "license_signals": "LEFT JOIN (SELECT DISTINCT doc_id FROM license_signals WHERE use_class = 'noncommercial') l "
                       "USING (doc_id)",
    "pii_spans": "LEFT JOIN (SELECT doc_id, count(*) AS n FROM pii_spans GROUP BY 1) p USING (doc_id)",
}


def _rules_toml(tables: list[str]) -> str:
    return "".join(f'''
[[rules]]
id = "{rid}"
version = "1"
description = "{desc}"
when = "{when}"
action = "{action}"
''' for table, rid, desc, when, action in RULES if table in tables)


def _real_optouts(ws: Workspace) -> None:
    """With the real opt-out stage present, register two creators' entries and match them."""
    if "optout_events" not in ws.tables() or ws.sql("SELECT count(*) FROM optout_events").item():
        return
    from curate.stages.optout import registry

    registry.add(ws, "domain", "www.gnu.org", "Free Software Foundation (test)", received_at="2026-11-01")
    registry.add(ws, "author", "Timo Aaltonen", "Timo Aaltonen (test)", received_at="2026-11-02")
    ws.run(stages=["optout"])


def plant_signals(ws_path: Path) -> Path:
    """Fill every absent signal table, decide with the planted rules, write the manifest; returns the rules file."""
    ws = Workspace(ws_path)
    rules_file = ws_path / "planted.toml"
    _real_optouts(ws)
    with ws.connect(write=True) as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                             "WHERE table_schema = 'main'").fetchall()}
        missing = [t for t in DDL if t not in present]
        rules_file.write_text(default_rules_path().read_text() + _rules_toml(missing))
        ruleset = load_rules(rules_file)
        for t in missing:
            con.execute(DDL[t])
        docs = con.execute("SELECT doc_id, text FROM documents ORDER BY doc_id").fetchall()
        if "pii_spans" in missing:
            rows = [(d, kind, m.start(), m.end(), 0.9, "planted-regex")
                    for d, text in docs for kind, rx in PII for m in re.finditer(rx, text)]
            _insert(con, "pii_spans", ["doc_id", "entity_type", "start", "end", "score", "recognizer"], rows)
        if "license_signals" in missing:
            rows = []
            for d, text in docs:
                for rx, spdx, cls in LICENCES:
                    m = re.search(rx, text, re.IGNORECASE if spdx and "public" in spdx else 0)
                    if m:
                        lic = spdx or m.group(1)
                        use = cls or next((v for k, v in CLASS.items() if lic.startswith(k)), "unknown")
                        rows.append((d, lic, use, rx.split("\\")[0][:40], m.start(), m.end(), 0.95))
            _insert(con, "license_signals", ["doc_id", "license", "use_class", "evidence", "start", "end", "score"],
                    rows)
        if "optout_matches" in missing:
            con.execute("""
                INSERT INTO optout_matches
                SELECT doc_id, 'meta:robots', 'robots-noai', 1 FROM documents
                    WHERE contains(coalesce(meta->'html_meta'->>'robots', ''), 'noai')
                UNION ALL SELECT doc_id, 'meta:tdm', 'tdm-reservation', 1 FROM documents
                    WHERE meta->'html_meta'->>'tdm-reservation' = '1'
                UNION ALL SELECT doc_id, 'meta:x-robots-tag', 'x-robots-tag', 1 FROM documents
                    WHERE contains(coalesce(meta->'headers'->>'X-Robots-Tag', ''), 'noai')
                UNION ALL SELECT doc_id, 'e-0001', 'domain', 1 FROM documents WHERE domain = 'www.gnu.org'
                UNION ALL SELECT doc_id, 'e-0002', 'author', 2 FROM documents
                    WHERE meta->>'author' = 'Timo Aaltonen'""")
        if "quality" in missing:
            con.execute(r"""
                INSERT INTO quality
                WITH w AS (SELECT doc_id, text, regexp_split_to_array(trim(text), '\s+') AS words,
                                  string_split(text, chr(10)) AS lines, lower(text) AS low FROM documents)
                SELECT doc_id, len(words), list_avg(list_transform(words, lambda x: length(x))),
                       len(regexp_extract_all(text, '#|\.\.\.|…')) / greatest(len(words), 1),
                       len(list_filter(lines, lambda x: regexp_matches(rtrim(x), '[.!?]$')))
                           / greatest(len(list_filter(lines, lambda x: trim(x) <> '')), 1),
                       CASE WHEN len(regexp_extract_all(low, '\b(the|and|of|is|to)\b')) >= 2 THEN 'en'
                            WHEN len(regexp_extract_all(low, '\b(el|los|las|para|del)\b')) >= 2 THEN 'es'
                            WHEN len(regexp_extract_all(low, '\b(het|een|niet|van)\b')) >= 2 THEN 'nl'
                            WHEN len(regexp_extract_all(low, '\b(il|della|non|che)\b')) >= 2 THEN 'it'
                            WHEN len(regexp_extract_all(low, '\b(le|les|des|est)\b')) >= 2 THEN 'fr'
                            ELSE 'und' END,
                       CASE WHEN len(words) > 20 THEN 0.9 ELSE 0.4 END,
                       least(1.0, len(words) / 400.0)
                FROM w""")
        if "bias_terms" in missing:
            for axis, group, rx in BIAS:
                con.execute("""INSERT INTO bias_terms SELECT doc_id, ?, ?, n FROM (
                                   SELECT doc_id, len(regexp_extract_all(lower(text), ?)) AS n FROM documents)
                               WHERE n > 0""", [axis, group, rx])
        if "dedup_fuzzy" in missing:
            con.execute(r"""
                INSERT INTO dedup_fuzzy
                WITH k AS (SELECT doc_id, seq, substr(md5(substr(lower(regexp_replace(text, '\s+', ' ', 'g')), 1, 80)),
                                                       1, 16) AS cluster_id FROM documents
                           WHERE length(text) > 200),
                     c AS (SELECT cluster_id FROM k GROUP BY 1 HAVING count(*) > 1)
                SELECT doc_id, cluster_id, doc_id = arg_min(doc_id, (seq, doc_id)) OVER (PARTITION BY cluster_id)
                FROM k JOIN c USING (cluster_id)""")
        # the stages' signals view, kept as `signals_stages`, plus the planted columns it lacks
        stage_cols = build_signals_view(con, ruleset.raw)
        con.execute("DROP VIEW IF EXISTS signals_stages")
        con.execute("ALTER VIEW signals RENAME TO signals_stages")
        extra = ", ".join(f"{sql} AS {name}" for table, name, sql in PLANTED_SIGNALS
                          if table in missing and name not in stage_cols)
        joins = " ".join(PLANTED_JOINS[t] for t in missing if t in PLANTED_JOINS)
        con.execute(f"CREATE VIEW signals AS SELECT s.*{', ' + extra if extra else ''} FROM signals_stages s {joins}")
        columns = {n: t for n, t, *_ in con.execute("DESCRIBE signals").fetchall()}
        con.execute("BEGIN")
        con.execute("DELETE FROM decisions")
        con.execute(f"INSERT INTO decisions {decisions_sql(ruleset, columns)}")
        con.execute("INSERT INTO policy_runs VALUES (?, ?, now()::TIMESTAMP)", [ruleset.sha256, str(rules_file)])
        con.execute("COMMIT")
    ws.manifest(ws_path / "manifest", rules=rules_file)
    return rules_file


def _insert(con, table: str, cols: list[str], rows: list[tuple]) -> None:
    if not rows:
        return
    data = pa.table({c: [r[i] for r in rows] for i, c in enumerate(cols)})
    con.register("_planted", data)
    con.execute(f'INSERT INTO {table} BY NAME SELECT * FROM _planted')
    con.unregister("_planted")
