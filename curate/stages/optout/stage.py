"""The `optout` stage: per-document keys (URL, hosts, authors, reservation markers), then matching
of the registry against them as set work in DuckDB, incrementally.

`__call__` derives each document's keys once per shard. `finalize` brings `optout_matches` up to the
registry's current version: entries added or revoked since the last match are (re)matched against
the documents already seen, and new documents against every active entry; everything else stays.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any

import duckdb
import pyarrow as pa

from curate.core.db import one
from curate.core.errors import ConfigError
from curate.core.stage import Detector, StageConfig, register
from curate.stages.optout import registry, standards
from curate.stages.optout.normalize import (
    MAX_JSON_DEPTH,
    author_key,
    host_suffixes,
    json_depth,
    normalize_url,
    prune_json,
    request_path,
    url_key,
)
from curate.stages.optout.sitefiles import (
    agents_file,
    agents_version,
    ai_agents,
    ai_txt_reservation,
    parse_robots,
    parse_tdmrep,
    robots_reservation,
    tdmrep_rule,
    usage_reservation,
)
from curate.stages.optout.work import work_matches
from curate.util.assets import file_asset

EVIDENCE_TYPE = pa.list_(pa.struct([("marker", pa.string()), ("source", pa.string()), ("value", pa.string())]))
REGISTRY_KINDS = registry.KINDS
SITE_KINDS = registry.SITE_KINDS
# Per-document markers that reserve a text against AI training (noimageai reserves images only; a CAWG entry
# constrained with terms, or about data mining only, is recorded and not reserving).
RESERVING_MARKERS = ("robots:noai", "x-robots-tag:noai", "tdm-reservation:1", "content-usage:train-ai=n",
                     "cawg:ai_training=notAllowed", "cawg:ai_generative_training=notAllowed")
DIRECTIVES = ("noai", "noimageai")
MAX_EVIDENCE_VALUE = 512  # characters of a header or meta value kept as evidence
RESERVATION_KEYS = ("html_meta", "headers", *standards.CREDENTIAL_KEYS)  # meta keys that can hold a reservation


@dataclasses.dataclass
class DocKeys:
    """What a document's `meta` says: reservation markers, its own TDMRep value, folded authors, and the
    evidence (marker, source, value) of every marker."""

    markers: list[str] = dataclasses.field(default_factory=list)
    tdm: int | None = None
    authors: list[str] = dataclasses.field(default_factory=list)
    evidence: list[dict[str, str]] = dataclasses.field(default_factory=list)


def parse_meta(meta: Any) -> tuple[dict[str, Any] | None, bool]:
    """A document's meta as a dict (None when it is not an object), and whether parts nested deeper than
    MAX_JSON_DEPTH were cut (CPython's decoder raises RecursionError near 1,000 levels)."""
    if isinstance(meta, str):
        try:
            # The depth is counted (a Python loop) only when there are enough brackets for it to exceed the bound.
            pruned = meta.count("[") + meta.count("{") > MAX_JSON_DEPTH and json_depth(meta) > MAX_JSON_DEPTH
            meta = prune_json(meta) if pruned else json.loads(meta)
        except (ValueError, RecursionError):
            return None, False
        return (meta, pruned) if isinstance(meta, dict) else (None, pruned)
    return (meta, False) if isinstance(meta, dict) else (None, False)


def doc_keys(meta: Any, agents: tuple[str, ...] = ()) -> DocKeys:
    """Everything the optout stage reads from one document's meta; never raises on what the meta holds."""
    meta, pruned = parse_meta(meta)
    keys = DocKeys()
    if meta is None:
        return keys
    if not pruned and not any(k in meta for k in RESERVATION_KEYS):  # most documents: authors only
        keys.authors = _authors(meta.get("author"))
        return keys
    evidence: dict[str, dict[str, str]] = {}

    def mark(marker: str, source: str, value: Any) -> None:
        evidence.setdefault(marker, {"marker": marker, "source": source, "value": str(value)[:MAX_EVIDENCE_VALUE]})

    tdm: dict[str, tuple[int, str]] = {}
    policy: dict[str, str] = {}
    usage = []
    names = {"robots"} | {a.lower() for a in agents}
    for source, prefix in (("html_meta", "robots"), ("headers", "x-robots-tag")):
        fields = meta.get(source)
        if not isinstance(fields, dict):
            continue
        for key, value in fields.items():
            k = str(key).strip().lower()
            values = value if isinstance(value, list) else [value]
            values = [str(v) for v in values if isinstance(v, str | int) and not isinstance(v, bool)]
            if k == "tdm-reservation":
                for v in values:
                    if v.strip() in ("0", "1"):
                        tdm[source] = (int(v.strip()), f"{source} {key}: {v.strip()}")
            elif k == "tdm-policy" and values:
                policy[source] = values[0].strip()
            elif source == "headers" and k == "content-usage":
                usage += [(p, f"{source} {key}: {v}") for v in values if (p := standards.aipref(v)) is not None]
            elif (source == "html_meta" and k in names) or (source == "headers" and k == "x-robots-tag"):
                for v in values:
                    for token in v.replace(";", ",").split(","):
                        directive = token.split(":")[-1].strip().lower()  # "GPTBot: noai" -> noai
                        if directive in DIRECTIVES:
                            mark(f"{prefix}:{directive}", f"{source} {key}", v)
    source = "headers" if "headers" in tdm else "html_meta" if "html_meta" in tdm else None
    if source:  # TDMRep: the HTTP header takes precedence over the HTML meta tag
        keys.tdm, shown = tdm[source]
        if policy.get(source):
            shown += f" (tdm-policy {policy[source]})"
        mark(f"tdm-reservation:{keys.tdm}", "document TDMRep", shown)
    pick = standards.most_restrictive([p for p, _ in usage])
    if pick is not None and pick.reserved:
        mark("content-usage:train-ai=n", "document Content-Usage",
             next(shown for p, shown in usage if p is pick) + f" [{', '.join(pick.keys)}]")
    for entry in standards.cawg_entries(meta):
        if entry.use != "allowed":
            mark(entry.marker(), "document content credentials", entry.evidence())
    if pruned:
        mark("meta:truncated", "document meta", f"nested deeper than {MAX_JSON_DEPTH} levels; deeper parts ignored")
    keys.markers = sorted(evidence)
    keys.evidence = [evidence[m] for m in keys.markers]
    keys.authors = _authors(meta.get("author"))
    return keys


def _authors(value: Any) -> list[str]:
    names = value if isinstance(value, list) else [value]
    return sorted({k for n in names if (k := author_key(n if isinstance(n, str) else None))})


def doc_markers(meta: Any, agents: tuple[str, ...] = ()) -> tuple[list[str], int | None]:
    """Reservation markers in a document's meta and its effective TDMRep value (header over HTML)."""
    keys = doc_keys(meta, agents)
    return keys.markers, keys.tdm


@register
class OptOut(Detector):
    name = "optout"
    categories = ("match_kind",)
    audit = "curate.stages.optout.audit"
    throughput = 15e6  # chars/s on one core, measured on data/samples
    version = "2"  # 2: Content-Usage, CAWG, evidence, meta depth bound
    schema_version = 2
    columns = ("doc_id", "url", "meta")
    after = ("dedup_fuzzy",)  # `work` candidates come from its LSH band index when it runs
    tables = {
        "optout_docs": """CREATE TABLE optout_docs (
            doc_id VARCHAR NOT NULL,
            url_key VARCHAR,          -- canonical URL without http(s):// (normalize.canonical_url)
            host VARCHAR,             -- canonical host
            hosts VARCHAR[],          -- the host and its parent domains
            path VARCHAR,             -- path and query as requested, for robots.txt / tdmrep.json rules
            authors VARCHAR[],        -- meta.author, case- and accent-folded
            markers VARCHAR[],        -- reservations in meta: robots:noai, x-robots-tag:noai, tdm-reservation:1, ...
            tdm_reservation INTEGER,  -- the document's own TDMRep declaration (header over HTML meta), if any
            matched BOOLEAN DEFAULT false,  -- already matched against the registry
            evidence STRUCT(marker VARCHAR, source VARCHAR, value VARCHAR)[]  -- what showed each marker
        )""",
        "optout_matches": """CREATE TABLE optout_matches (
            doc_id VARCHAR NOT NULL,
            entry_id VARCHAR NOT NULL,
            match_kind VARCHAR NOT NULL,       -- the entry's kind
            registry_version BIGINT NOT NULL,  -- registry version when this match was computed
            score DOUBLE,                      -- work: exact Jaccard of word 5-gram shingles; else 1
            verified BOOLEAN,                  -- the entry was verified
            detail VARCHAR                     -- site files: the rule that reserves the document
        )""",
        "optout_signals": """CREATE TABLE optout_signals (
            doc_id VARCHAR NOT NULL,
            optout_matched BOOLEAN,          -- an opt-out registry entry matches (domain, url, ..., work)
            optout_kinds VARCHAR[],          -- kinds of every matching entry and site file
            optout_entries VARCHAR[],        -- ids of the matching registry entries
            optout_verified BOOLEAN,         -- one of them is verified
            optout_work_jaccard DOUBLE,      -- best Jaccard against a registered work (0 if none)
            optout_reserved BOOLEAN,         -- a machine-readable reservation covers the text
            optout_reservations VARCHAR[]    -- markers (robots:noai, ...) and site files (robots_txt, ...)
        )""",
    }
    output = "optout_docs"
    explain_exclude = ("authors", "matched", "evidence")  # author names are personal data

    # -- configuration ----------------------------------------------------------------------------
    @dataclasses.dataclass(frozen=True)
    class Config(StageConfig):
        """`[stages.optout]` (README "Opt-outs")."""

        work_jaccard: float = 0.7  # exact Jaccard of word 5-gram shingles from which a registered `work` matches
        work_candidates: str = "auto"  # "auto": the dedup_fuzzy LSH index when present; "scan": every document
        robots_wildcard: bool = True  # an AI agent without a robots.txt group of its own obeys the `*` group

    settings: Config

    def __init__(self, config: dict[str, Any] | None = None, source: str = "rules file"):
        super().__init__(config, source)
        where, s = f"{source}: [stages.{self.name}]", self.settings
        if not 0 < s.work_jaccard <= 1:
            raise ConfigError(f"{where} work_jaccard must be in (0, 1], not {s.work_jaccard}")
        if s.work_candidates not in ("auto", "scan"):
            raise ConfigError(f"{where} work_candidates must be 'auto' or 'scan', not {s.work_candidates!r}")

    def assets(self) -> list[dict[str, str]]:
        # The AI agents list decides which meta tags count (rows of optout_docs) and the robots.txt matches:
        # its hash is in the fingerprint, so a new list recomputes them.
        return [file_asset("optout-ai-agents", agents_file(), agents_version()),
                file_asset("optout-standards", standards.standards_file(), standards.standards_version())]

    def workspace_assets(self, con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
        """The registry snapshot the current matches reflect (and the latest one, when newer)."""
        used = matched_state(con)
        out = []
        if used:
            out.append(used.asset())
        latest = registry.state(con)
        if not used or latest.version != used.version:
            out.append({**latest.asset(), "kind": "optout-registry-pending",
                        "note": "registered after the current matches; run `curate optout apply`"})
        return out

    # -- per document ---------------------------------------------------------------------------------
    def __call__(self, batch: pa.RecordBatch) -> pa.Table:
        agents = ai_agents()
        cols: dict[str, list[Any]] = defaultdict(list)
        for url, meta in zip(batch.column("url").to_pylist(), batch.column("meta").to_pylist(), strict=True):
            # URL keys first and apart from meta: whatever the meta holds, the document is matched by its URL.
            canonical = normalize_url(url)
            key = url_key(canonical) if canonical else None
            host = key.split("/", 1)[0].rsplit(":", 1)[0].strip("[]") if key else None
            cols["url_key"].append(key)
            cols["host"].append(host)
            cols["hosts"].append(host_suffixes(host))
            cols["path"].append(request_path(url) if canonical else None)
            try:
                keys = doc_keys(meta, agents)
            except (ValueError, TypeError, RecursionError, MemoryError) as e:  # fail closed: keys, no meta
                keys = DocKeys(["meta:unreadable"], evidence=[{"marker": "meta:unreadable", "source": "document meta",
                                                               "value": type(e).__name__}])
            cols["authors"].append(keys.authors)
            cols["markers"].append(keys.markers)
            cols["tdm_reservation"].append(keys.tdm)
            cols["evidence"].append(keys.evidence)
        lists = pa.list_(pa.string())
        return pa.table({
            "doc_id": batch.column("doc_id"),
            "url_key": pa.array(cols["url_key"], pa.string()), "host": pa.array(cols["host"], pa.string()),
            "hosts": pa.array(cols["hosts"], lists), "path": pa.array(cols["path"], pa.string()),
            "authors": pa.array(cols["authors"], lists), "markers": pa.array(cols["markers"], lists),
            "tdm_reservation": pa.array(cols["tdm_reservation"], pa.int32()),
            "evidence": pa.array(cols["evidence"], EVIDENCE_TYPE),
        })

    # -- matching ---------------------------------------------------------------------------------------
    def finalize(self, con: duckdb.DuckDBPyConnection) -> None:
        match_registry(con, self)

    signals = "SELECT * FROM optout_signals"


def signals_query(restrict: str) -> str:
    """Per-document opt-out signals from optout_docs and optout_matches, for the documents of `restrict`
    (a relation with a doc_id column); kept materialised in optout_signals and refreshed where matches change."""
    reg = ", ".join(f"'{k}'" for k in REGISTRY_KINDS)
    reserving = ", ".join(f"'{m}'" for m in RESERVING_MARKERS)
    return f"""
        SELECT d.doc_id,
               coalesce(m.registry, false) AS optout_matched,
               coalesce(m.kinds, []::VARCHAR[]) AS optout_kinds,
               coalesce(m.entries, []::VARCHAR[]) AS optout_entries,
               coalesce(m.verified, false) AS optout_verified,
               coalesce(m.work_jaccard, 0.0) AS optout_work_jaccard,
               coalesce(m.site, false) OR list_has_any(d.markers, [{reserving}]) AS optout_reserved,
               list_sort(list_distinct(list_concat(d.markers, coalesce(m.site_kinds, []::VARCHAR[]))))
                   AS optout_reservations
        FROM (SELECT * FROM optout_docs SEMI JOIN {restrict} USING (doc_id)) d LEFT JOIN (
            SELECT doc_id,
                   bool_or(match_kind IN ({reg})) AS registry,
                   list_sort(list_distinct(list(match_kind))) AS kinds,
                   list_sort(list_distinct(list(entry_id) FILTER (match_kind IN ({reg})))) AS entries,
                   bool_or(verified) FILTER (match_kind IN ({reg})) AS verified,
                   max(score) FILTER (match_kind = 'work') AS work_jaccard,
                   bool_or(match_kind NOT IN ({reg})) AS site,
                   list_sort(list_distinct(list(match_kind) FILTER (match_kind NOT IN ({reg})))) AS site_kinds
            FROM optout_matches SEMI JOIN {restrict} USING (doc_id) GROUP BY doc_id) m USING (doc_id)"""


# -- incremental matching ---------------------------------------------------------------------------------
STATE_KEY = "optout.matched_registry"  # in `meta`: the registry state optout_matches reflects


def matched_state(con: duckdb.DuckDBPyConnection) -> registry.RegistryState | None:
    row = one(con.execute("SELECT value FROM meta WHERE key = ?", [STATE_KEY]))
    return registry.RegistryState(**json.loads(row[0])) if row else None

def match_registry(con: duckdb.DuckDBPyConnection, det: OptOut) -> registry.RegistryState:
    """Bring optout_matches to the registry's latest version; the (doc, entry) pairs that appeared or
    disappeared are left in the temp table _oo_changes(doc_id, entry_id, change '+'/'-')."""
    st = registry.state(con)
    used = matched_state(con)
    since = used.version if used else 0
    con.execute("""CREATE OR REPLACE TEMP TABLE _oo_touched AS
                   SELECT DISTINCT entry_id FROM optout_events WHERE seq > ?""", [since])
    con.execute("CREATE OR REPLACE TEMP TABLE _oo_new_docs AS SELECT doc_id FROM optout_docs WHERE NOT matched")
    scope = """(entry_id IN (SELECT entry_id FROM _oo_touched) OR doc_id IN (SELECT doc_id FROM _oo_new_docs))"""
    con.execute(f"CREATE OR REPLACE TEMP TABLE _oo_old AS SELECT doc_id, entry_id FROM optout_matches WHERE {scope}")
    con.execute(f"DELETE FROM optout_matches WHERE {scope}")
    n_touched = one(con.execute("SELECT count(*) FROM _oo_touched"))[0]
    n_new = one(con.execute("SELECT count(*) FROM _oo_new_docs"))[0]
    if n_touched:  # changed entries against the documents matched before
        _load_entries(con, st.version, only_touched=True)
        _match(con, det, st.version, new_docs=False)
    if n_new:  # new documents against every active entry
        _load_entries(con, st.version, only_touched=False)
        _match(con, det, st.version, new_docs=True)
        con.execute("UPDATE optout_docs SET matched = true WHERE NOT matched")
    con.execute(f"""CREATE OR REPLACE TEMP TABLE _oo_changes AS
        WITH now AS (SELECT doc_id, entry_id FROM optout_matches WHERE {scope})
        SELECT doc_id, entry_id, '+' AS change FROM (SELECT * FROM now EXCEPT SELECT * FROM _oo_old)
        UNION ALL SELECT doc_id, entry_id, '-' FROM (SELECT * FROM _oo_old EXCEPT SELECT * FROM now)""")
    # Signals of the documents whose matches changed, and of new documents, are refreshed.
    con.execute("""CREATE OR REPLACE TEMP TABLE _oo_refresh AS
                   SELECT doc_id FROM _oo_changes UNION SELECT doc_id FROM _oo_new_docs""")
    con.execute("DELETE FROM optout_signals WHERE doc_id IN (SELECT doc_id FROM _oo_refresh)")
    con.execute(f"INSERT INTO optout_signals {signals_query('_oo_refresh')}")
    con.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", [STATE_KEY, json.dumps(st.__dict__)])
    for t in ("_oo_touched", "_oo_new_docs", "_oo_old", "_oo_e", "_oo_refresh"):
        con.execute(f"DROP TABLE IF EXISTS {t}")
    return st


def _load_entries(con: duckdb.DuckDBPyConnection, version: int, only_touched: bool) -> None:
    """Active entries (all, or those touched) into _oo_e(entry_id, kind, key, payload, verified)."""
    touched = "WHERE entry_id IN (SELECT entry_id FROM _oo_touched)" if only_touched else ""
    rows = con.sql(f"SELECT entry_id, kind, value, payload, verified FROM ({registry.ACTIVE_SQL}) {touched}",
                   params=[version]).to_arrow_table()
    keys = [url_key(v) if k in ("url", "url_prefix") else v
            for k, v in zip(rows.column("kind").to_pylist(), rows.column("value").to_pylist(), strict=True)]
    con.register("_oo_rows", rows.append_column("key", pa.array(keys, pa.string())))
    con.execute("CREATE OR REPLACE TEMP TABLE _oo_e AS SELECT entry_id, kind, key, payload, verified FROM _oo_rows")
    con.unregister("_oo_rows")


def _match(con: duckdb.DuckDBPyConnection, det: OptOut, version: int, new_docs: bool) -> None:
    """Insert matches of the entries in _oo_e against documents (new ones, or those matched before)."""
    docs = f"(SELECT * FROM optout_docs WHERE matched = {'false' if new_docs else 'true'})"
    con.execute(f"""INSERT INTO optout_matches
        SELECT doc_id, entry_id, kind, ?, 1.0, verified, NULL FROM (
            SELECT d.doc_id, e.entry_id, e.kind, e.verified
            FROM (SELECT doc_id, unnest(hosts) AS k FROM {docs}) d JOIN _oo_e e ON e.kind = 'domain' AND e.key = d.k
            UNION ALL
            SELECT d.doc_id, e.entry_id, e.kind, e.verified
            FROM {docs} d JOIN _oo_e e ON e.kind = 'url' AND e.key = d.url_key
            UNION ALL
            SELECT d.doc_id, e.entry_id, e.kind, e.verified
            FROM {docs} d JOIN _oo_e e ON e.kind = 'url_prefix'
                 AND split_part(e.key, '/', 1) = split_part(d.url_key, '/', 1)
                 AND (starts_with(d.url_key, e.key) OR d.url_key = rtrim(e.key, '/'))
            UNION ALL
            SELECT d.doc_id, e.entry_id, e.kind, e.verified
            FROM {docs} d JOIN documents x USING (doc_id) JOIN _oo_e e ON e.kind = 'sha256' AND e.key = x.sha256
            UNION ALL
            SELECT d.doc_id, e.entry_id, e.kind, e.verified
            FROM (SELECT doc_id, unnest(authors) AS k FROM {docs}) d JOIN _oo_e e ON e.kind = 'author' AND e.key = d.k
        )""", [version])
    _match_sites(con, det, version, docs)
    rows = work_matches(con, docs, det.settings.work_jaccard, det.settings.work_candidates)
    _insert(con, [(d, e, "work", version, s, v, None) for d, e, s, v in rows])


def _match_sites(con: duckdb.DuckDBPyConnection, det: OptOut, version: int, docs: str) -> None:
    """robots.txt, ai.txt and tdmrep.json of each registered host, evaluated per document path."""
    sites = con.execute("""SELECT entry_id, kind, payload, verified FROM _oo_e
                           WHERE kind IN ('robots_txt', 'ai_txt', 'tdmrep') ORDER BY entry_id""").fetchall()
    if not sites:
        return
    agents = ai_agents()
    out = []
    for entry_id, kind, payload, verified in sites:
        parsed = parse_tdmrep(payload) if kind == "tdmrep" else parse_robots(payload)
        docs_of_site = con.execute(f"""SELECT d.doc_id, d.path, d.tdm_reservation FROM {docs} d
                                       JOIN _oo_e e ON e.key = d.host WHERE e.entry_id = ? AND d.path IS NOT NULL""",
                                   [entry_id]).fetchall()
        for doc_id, path, tdm in docs_of_site:
            if kind == "robots_txt":
                for usage_kind in ("content_usage", "content_signal") if parsed.usage else ():
                    if (why := usage_reservation(parsed, path, agents, usage_kind, det.settings.robots_wildcard)):
                        out.append((doc_id, entry_id, usage_kind, version, 1.0, verified, why))
                why = robots_reservation(parsed, path, agents, det.settings.robots_wildcard)
            elif kind == "ai_txt":
                why = ai_txt_reservation(parsed, path, agents)
            elif tdm is not None:
                why = None  # the document's own TDMRep declaration takes precedence over the site file
            else:
                rule = tdmrep_rule(parsed, path)
                why = f"rule #{rule.index} location {rule.location}" if rule and rule.reserved else None
                if why and rule.policy:
                    why += f" (policy {rule.policy})"
            if why:
                out.append((doc_id, entry_id, kind, version, 1.0, verified, why))
    _insert(con, out)


def _insert(con: duckdb.DuckDBPyConnection, rows: list[tuple]) -> None:
    if not rows:
        return
    names = ("doc_id", "entry_id", "match_kind", "registry_version", "score", "verified", "detail")
    types = (pa.string(), pa.string(), pa.string(), pa.int64(), pa.float64(), pa.bool_(), pa.string())
    table = pa.table({n: pa.array([r[i] for r in rows], t) for i, (n, t) in enumerate(zip(names, types, strict=True))})
    con.register("_oo_rows", table)
    con.execute("INSERT INTO optout_matches SELECT * FROM _oo_rows")
    con.unregister("_oo_rows")
