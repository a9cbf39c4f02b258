"""The manifest: one row per document with its decision, hashed row by row and as a whole.

`manifest.parquet` rows are sorted by doc_id; each carries `row_hash`, the SHA-256 of its fields in a
canonical form (ROW_HASH_SQL); `root_hash` is the SHA-256 of all row hashes concatenated in that
order. `run.json` records what produced it. Same inputs, rules and versions give byte-identical
`manifest.parquet` (run.json differs only in `created_at`, which no hash covers).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate import __version__
from curate.core.db import one
from curate.core.errors import NotFound, UserError
from curate.core.schema import SCHEMA_VERSION
from curate.io import lake
from curate.util import log
from curate.util.sql import literal

if TYPE_CHECKING:
    from curate.core.workspace import Workspace

MANIFEST = "manifest.parquet"
RUN = "run.json"
# A row is identified by its shard's SHA-256 and row number: the URI is provenance, so the same data gives the
# same root wherever it lives (two checkouts, local disk or s3://).
ROW_HASH_SQL = """sha256(concat_ws(chr(31), doc_id, shard_sha256, "row"::VARCHAR, input_sha256, action,
    array_to_string(rule_ids, ','), coalesce(output_sha256, ''), coalesce(to_json(redactions)::VARCHAR, '')))"""
# Manifests written before schema 4 hashed the shard's URI instead; `verify` still checks them.
ROW_HASH_SQL_V3 = ROW_HASH_SQL.replace("shard_sha256", "shard_uri")
RELEASES = "manifests"  # WS/manifests/<n>: every manifest `run` writes; WS/manifest points at the newest
ROOT_HASH_SQL = "sha256(coalesce(string_agg(row_hash, '' ORDER BY doc_id), ''))"


@dataclass
class ManifestSummary:
    path: Path
    rows: int
    root_hash: str
    by_action: dict[str, int]
    uri: str = ""  # where it was written (a store URI, or the directory)
    retried: lake.RetryStats = field(default_factory=lake.RetryStats)  # transient store errors ridden out


def write_manifest(ws: Workspace, out: str | os.PathLike[str] | None = None,
                   rules: str | os.PathLike[str] | None = None, base: str | os.PathLike[str] | None = None,
                   changed: str | None = None, root: str | None = None, name: str | None = None,
                   sign: str | os.PathLike[str] | None = None, rows: pa.Table | None = None) -> ManifestSummary:
    """Write the manifest of the current decisions, recording the rules file behind them (`rules`, when given,
    must be that file).

    `out` is a directory or a store URI (s3://bucket/releases/r7/); by default a new release
    WS/manifests/<n> (or `name`), which WS/manifest then points at. `root` (a directory or URI prefix) makes
    the shard URIs in the manifest relative to it; `sign` (an ed25519 private key, PEM) signs the root
    (ROOT.sig). With `base` (a manifest of the same workspace and rules)
    and `changed` (a table of doc_ids), only the rows of those documents are recomputed; the others are copied
    from `base` (an opt-out update touches a few documents of millions). `rows`, when given, are the rows
    `manifest_rows` would compute for the current decisions and `root` (computed elsewhere: the Ray engine)."""
    from curate.core.policy import current_rules, load_rules

    started, before = time.monotonic(), lake.retry_stats()
    release = out is None
    target = str(new_release(ws, name)) if release else str(out)
    remote = not lake.is_local(target)
    local = Path(tempfile.mkdtemp(prefix="curate-manifest-")) if remote else Path(target)
    local.mkdir(parents=True, exist_ok=True)
    with ws.connect(write=True) as con:
        ruleset = current_rules(con)
        if rules is not None and load_rules(rules).sha256 != ruleset.sha256:
            raise UserError(f"the current decisions were made with {ruleset.path}, not {rules}: "
                            f"run `curate decide {ws.path} --rules {rules}` first")
        if not con.execute("SELECT count(*) FROM decisions").fetchall()[0][0] and \
                con.execute("SELECT count(*) FROM documents").fetchall()[0][0]:
            raise UserError("no decisions yet: run `curate run` (or `curate decide`) first")
        # `rows`: the manifest's rows computed already for these decisions (the Ray engine's per-shard tasks)
        table = manifest_rows(con, ruleset, root, base, changed) if rows is None else rows
        run = _run_record(con, ruleset, root)
    pq.write_table(table, local / MANIFEST, compression="zstd", write_statistics=False,
                   use_dictionary=False, row_group_size=1 << 20)
    mem = duckdb.connect()
    rows_root = mem.execute(f"SELECT {ROOT_HASH_SQL} FROM read_parquet(?)", [str(local / MANIFEST)]).fetchall()[0][0]
    counts = _counts(mem, local / MANIFEST)
    mem.close()
    run["counts"].update(counts)
    run["manifest"] = {"file": MANIFEST, "format": FORMAT, "rows": table.num_rows, "rows_root": rows_root,
                       "row_hash": ROW_HASH_SQL.replace("\n", " "), "root": ROOT_HASH_SQL}
    run["manifest"]["run_hash"] = run_hash(run)
    root_hash = run["manifest"]["root_hash"] = combined_root(rows_root, run["manifest"]["run_hash"])
    (local / RUN).write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")
    (local / "ROOT").write_text(root_hash + "\n")
    if sign:
        (local / SIGNATURE).write_text(sign_root(root_hash, sign) + "\n")
    if remote:
        _upload(local, target)
    elif release:
        publish(ws, local)
    # Counted after run.json is written (the root covers it): retries never change a manifest's bytes.
    retried = lake.retry_stats().since(before)
    log.event("manifest", path=lake.redact_uri(target), rows=table.num_rows, root_hash=root_hash,
              by_action=counts["by_action"], seconds=round(time.monotonic() - started, 3),
              retries=retried.retries, retry_errors=retried.errors)
    return ManifestSummary(Path(target) if not remote else Path(local), table.num_rows, root_hash,
                           counts["by_action"], lake.redact_uri(target), retried)


def manifest_rows(con: duckdb.DuckDBPyConnection, ruleset: Any, root: str | None = None,
                  base: str | os.PathLike[str] | None = None, changed: str | None = None) -> pa.Table:
    """The manifest's rows for the current decisions, sorted by doc_id, each with its row hash (with `base` and
    `changed`, rows of documents not in `changed` are copied from the manifest in `base`). `verify
    --workspace` recomputes them the same way."""
    from curate.core.redact import REDACTIONS_TYPE, redacted_outputs

    con.execute(f"CREATE OR REPLACE TEMP TABLE _redacted (doc_id VARCHAR, output_sha256 VARCHAR, "
                f"redactions {REDACTIONS_TYPE})")
    only = [r[0] for r in con.execute(f"SELECT doc_id FROM {changed}").fetchall()] if base else None
    for batch in redacted_outputs(con, ruleset.raw, only=only):
        con.register("_batch", batch)
        con.execute("INSERT INTO _redacted SELECT * FROM _batch")
        con.unregister("_batch")
    uri = _relative_uri("s.uri", root)
    table = con.sql(f"""
        SELECT *, {ROW_HASH_SQL} AS row_hash FROM (
            {rows_sql(uri, f"SEMI JOIN {changed} USING (doc_id)" if base else "")})
        {f"UNION ALL SELECT * FROM read_parquet({literal(Path(base) / MANIFEST)}) "
         f"ANTI JOIN {changed} USING (doc_id)" if base else ""}
        ORDER BY doc_id""").to_arrow_table()
    con.execute("DROP TABLE _redacted")
    return table.cast(_schema())


def rows_sql(uri: str, where: str = "") -> str:
    """SQL: a manifest row's fields but its hash, per document, from the relations `documents`, `shards`,
    `decisions` and `_redacted` (doc_id, output_sha256, redactions of the `redact` documents); `uri` is the SQL of
    the shard URI (`_relative_uri`), `where` a clause appended to the joins. `manifest_rows` and the Ray engine's
    per-shard tasks (executors/ray_policy.py) both use it."""
    return f"""SELECT d.doc_id, {uri} AS shard_uri, s.sha256 AS shard_sha256, d."row", d.sha256 AS input_sha256,
                   c.action, c.rule_ids,
                   CASE c.action WHEN 'keep' THEN d.sha256 WHEN 'redact' THEN r.output_sha256 END
                       AS output_sha256,
                   CASE c.action WHEN 'redact' THEN r.redactions END AS redactions
            FROM documents d JOIN shards s USING (shard_id) JOIN decisions c USING (doc_id)
            LEFT JOIN _redacted r USING (doc_id) {where}"""


FORMAT = 2  # manifest format: 2 = the root covers run.json (1: the rows only)
SIGNATURE = "ROOT.sig"
# What of run.json the root does not cover: when it was written, and where the data and rules lived (the URI
# is provenance: the same data gives the same root wherever it lives).
RUN_UNCOVERED = ("created_at", "dataset_root")


def run_hash(run: dict[str, Any]) -> str:
    """SHA-256 of run.json's canonical JSON, less RUN_UNCOVERED, input URIs, the rules file's path and the
    hashes derived from it."""
    covered = {k: v for k, v in run.items() if k not in RUN_UNCOVERED}
    covered["inputs"] = [{k: v for k, v in i.items() if k != "uri"} for i in run.get("inputs", [])]
    covered["rules"] = {k: v for k, v in run.get("rules", {}).items() if k != "path"}
    covered["manifest"] = {k: v for k, v in run.get("manifest", {}).items() if k not in ("root_hash", "run_hash")}
    return hashlib.sha256(json.dumps(covered, sort_keys=True, separators=(",", ":"), default=str).encode()
                          ).hexdigest()


def combined_root(rows_root: str, run_digest: str) -> str:
    """The manifest's root: over the rows' root and run.json's hash."""
    return hashlib.sha256(f"{rows_root}{run_digest}".encode()).hexdigest()


def sign_root(root_hash: str, key: str | os.PathLike[str]) -> str:
    """A base64 ed25519 signature of the root hash (hex text) with a PEM private key."""
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        private = load_pem_private_key(Path(key).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{key}: not a readable PEM private key ({e})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise UserError(f"{key}: not an ed25519 key (make one: openssl genpkey -algorithm ed25519 -out key.pem)")
    return base64.b64encode(private.sign(root_hash.encode())).decode()


def check_signature(root_hash: str, signature: str, key: str | os.PathLike[str]) -> bool:
    import base64

    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        public = load_pem_public_key(Path(key).read_bytes())
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"{key}: not a readable PEM public key ({e})") from None
    try:
        public.verify(base64.b64decode(signature), root_hash.encode())
        return True
    except (InvalidSignature, ValueError):
        return False


def _relative_uri(column: str, root: str | None) -> str:
    """SQL: a shard URI relative to the dataset root when it lies under it, else as recorded."""
    if not root:
        return column
    prefix = (os.path.abspath(root) if lake.is_local(root) and "://" not in root else root).rstrip("/") + "/"
    return f"CASE WHEN starts_with({column}, {literal(prefix)}) THEN substr({column}, {len(prefix) + 1}) " \
           f"ELSE {column} END"


def _upload(local: Path, target: str) -> None:
    """The manifest's files to a store, each written atomically, ROOT last: a reader that finds ROOT finds a
    complete manifest."""
    try:
        for name in (MANIFEST, RUN, SIGNATURE, "ROOT"):
            if not (local / name).exists():
                continue
            with open(local / name, "rb") as src, lake.open_output_atomic(f"{target.rstrip('/')}/{name}") as dst:
                shutil.copyfileobj(src, dst, 8 << 20)
    finally:
        shutil.rmtree(local, ignore_errors=True)


# -- releases: WS/manifests/<n>, WS/manifest -> the newest ----------------------------------------------
def releases(ws: Workspace) -> list[dict[str, Any]]:
    """The workspace's manifests, oldest first: name, path, created_at, rows, root hash, rules, counts."""
    out = []
    current = (ws.path / "manifest").resolve() if (ws.path / "manifest").exists() else None
    for d in sorted((ws.path / RELEASES).glob("*/"), key=_release_order):
        try:
            run = json.loads((d / RUN).read_text())
        except (OSError, ValueError):
            continue
        out.append({"name": d.name, "path": str(d), "created_at": run.get("created_at"),
                    "rows": run.get("manifest", {}).get("rows"), "root_hash": run.get("manifest", {}).get("root_hash"),
                    "rules_sha256": run.get("rules", {}).get("sha256"), "by_action": run.get("counts", {}).get(
                        "by_action", {}), "current": d.resolve() == current})
    return out


def _release_order(d: Path) -> tuple:
    return (0, int(d.name), "") if d.name.isdigit() else (1, 0, d.name)


def new_release(ws: Workspace, name: str | None = None) -> Path:
    """The directory of the next release: WS/manifests/<n> (n = 1 + the highest number so far) or `name`."""
    base = ws.path / RELEASES
    legacy = ws.path / "manifest"
    if legacy.is_dir() and not legacy.is_symlink():  # a workspace from before releases: its manifest is one
        base.mkdir(exist_ok=True)
        legacy.rename(base / str(_next_number(base)))
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name) or name.isdigit():
            raise UserError(f"release name {name!r}: letters, digits, '.', '_' and '-', not a bare number")
        if (base / name).exists():
            raise UserError(f"release {name} exists already in {base}")
        return base / name
    return base / str(_next_number(base))


def _next_number(base: Path) -> int:
    return 1 + max((int(d.name) for d in base.glob("*") if d.name.isdigit()), default=0)


def publish(ws: Workspace, release: Path) -> None:
    """Point WS/manifest at `release` (a relative symlink, replaced atomically)."""
    link = ws.path / "manifest"
    tmp = ws.path / f".manifest-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(release.resolve(), ws.path.resolve()))
    os.replace(tmp, link)


def _schema() -> pa.Schema:
    red = pa.list_(pa.struct([("entity_type", pa.string()), ("start", pa.int64()), ("end", pa.int64())]))
    return pa.schema([
        ("doc_id", pa.string()), ("shard_uri", pa.string()), ("shard_sha256", pa.string()), ("row", pa.int64()),
        ("input_sha256", pa.string()),
        ("action", pa.string()), ("rule_ids", pa.list_(pa.string())), ("output_sha256", pa.string()),
        ("redactions", red), ("row_hash", pa.string()),
    ])


def _counts(con: duckdb.DuckDBPyConnection, path: Path) -> dict[str, Any]:
    p = str(path)
    by_action = dict(con.execute("SELECT action, count(*) FROM read_parquet(?) GROUP BY 1 ORDER BY 1", [p]).fetchall())
    by_rule = dict(con.execute(
        "SELECT r, count(*) FROM (SELECT unnest(rule_ids) AS r FROM read_parquet(?)) GROUP BY 1 ORDER BY 1", [p]
    ).fetchall())
    return {"documents": sum(by_action.values()), "by_action": by_action, "by_rule": by_rule}


def _run_record(con: duckdb.DuckDBPyConnection, ruleset, root: str | None = None) -> dict[str, Any]:
    from curate.core.stage import REGISTRY, load_builtin

    load_builtin()
    inputs = [dict(zip(("uri", "sha256", "bytes", "rows", "documents", "quarantined", "status", "format"), r,
                       strict=True))
              for r in con.execute(f"""SELECT {_relative_uri("uri", root)} AS uri, sha256, bytes, rows, documents,
                                              quarantined, status, format
                                       FROM shards ORDER BY sha256 NULLS LAST, uri""").fetchall()]
    stages = []
    config = ruleset.raw.get("stages", {})
    for name, fps in con.execute("""SELECT stage, list(DISTINCT fingerprint ORDER BY fingerprint)
                                    FROM stage_runs GROUP BY stage ORDER BY stage""").fetchall():
        cls = REGISTRY.get(name)
        det = cls(config.get(name, {})) if cls else None
        stages.append({"name": name, "version": cls.version if cls else None, "fingerprints": fps,
                       "current": bool(det) and fps == [det.fingerprint()],
                       "assets": det.assets() + det.workspace_assets(con) if det else []})
    quarantined, failed = one(con.execute(
        "SELECT count(*) FILTER (\"row\" IS NOT NULL), count(*) FILTER (\"row\" IS NULL) FROM quarantine"
    ))
    versions = {"python": platform.python_version(), "duckdb": duckdb.__version__, "pyarrow": pa.__version__}
    return {
        "tool": {"name": "curate", "version": __version__, **versions},
        "schema_version": SCHEMA_VERSION,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rules": {"path": str(ruleset.path), "sha256": ruleset.sha256, "policy": ruleset.raw.get("policy", {}),
                  "rules": [r.__dict__ for r in ruleset.rules]},
        "stages": stages,
        "inputs": inputs,
        "dataset_root": root,
        "counts": {"input_rows": sum(i["rows"] or 0 for i in inputs), "quarantined_rows": quarantined,
                   "unreadable_files": failed},
    }


# -- verification ----------------------------------------------------------------------------------
@dataclass
class VerifyReport:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(manifest_dir: str | os.PathLike[str], workspace: Workspace | None = None, shards: bool = False,
           root: str | None = None, endpoint: str | None = None, key: str | os.PathLike[str] | None = None
           ) -> VerifyReport:
    """Recompute every hash and count of a manifest (a directory or a store URI); optionally against its
    workspace, and (`shards`) against the shards themselves, found by URI or, under `root`, by hash."""
    if not lake.is_local(str(manifest_dir)):
        with tempfile.TemporaryDirectory(prefix="curate-verify-") as tmp:
            for name in (RUN, MANIFEST, "ROOT", SIGNATURE):
                try:
                    with lake.open_input(f"{str(manifest_dir).rstrip('/')}/{name}", endpoint) as src, \
                            open(Path(tmp) / name, "wb") as dst:
                        shutil.copyfileobj(src, dst, 8 << 20)
                except lake.Missing:
                    continue
            return verify(tmp, workspace, shards, root, endpoint, key)
    d = Path(manifest_dir)
    rep = VerifyReport()
    try:
        run = json.loads((d / RUN).read_text())
    except (OSError, ValueError) as e:
        rep.problems.append(f"{d / RUN}: unreadable ({e})")
        return rep
    path = str(d / MANIFEST)
    con = duckdb.connect()
    try:
        con.execute("CREATE TABLE m AS SELECT * FROM read_parquet(?)", [path])
    except duckdb.Error as e:
        rep.problems.append(f"{path}: unreadable ({str(e).splitlines()[0]})")
        return rep
    row_hash = ROW_HASH_SQL if int(run.get("schema_version") or 0) >= 4 else ROW_HASH_SQL_V3
    for doc_id, in con.execute(f"SELECT doc_id FROM m WHERE row_hash IS DISTINCT FROM {row_hash} ORDER BY doc_id"
                               ).fetchall():
        rep.problems.append(f"document {doc_id}: row_hash does not match the row's fields")
    dup = con.execute("SELECT count(*) - count(DISTINCT doc_id) FROM m").fetchall()[0][0]
    if dup:
        rep.problems.append(f"{dup} doc_id(s) appear more than once")
    rows_root = con.execute(f"SELECT {ROOT_HASH_SQL} FROM m").fetchall()[0][0]
    recorded = run.get("manifest", {}).get("root_hash")
    if run.get("manifest", {}).get("format", 1) >= 2:  # the root covers run.json too
        if rows_root != run["manifest"].get("rows_root"):
            said = run["manifest"].get("rows_root")
            rep.problems.append(f"the rows' root {rows_root} does not match run.json ({said})")
        if run_hash(run) != run["manifest"].get("run_hash"):
            rep.problems.append("run.json was changed after the manifest was written (its hash does not match)")
        root_hash = combined_root(rows_root, run_hash(run))
    else:
        root_hash = rows_root
        rep.notes.append("a manifest of format 1: its root covers the rows, not run.json")
    if root_hash != recorded:
        rep.problems.append(f"root hash {root_hash} does not match run.json ({recorded})")
    root_file = d / "ROOT"
    if not root_file.exists():
        rep.problems.append("ROOT file is missing")
    elif root_file.read_text().strip() != root_hash:
        rep.problems.append("ROOT file does not match the manifest's root hash")
    if key is not None:
        sig = d / SIGNATURE
        if not sig.exists():
            rep.problems.append(f"{SIGNATURE} is missing: the root is not signed")
        elif not check_signature(root_hash, sig.read_text().strip(), key):
            rep.problems.append(f"{SIGNATURE} is not a signature of the root by this key")
    counts = _counts(con, Path(path))
    for key in ("documents", "by_action", "by_rule"):
        if run.get("counts", {}).get(key) != counts[key]:
            said = run.get("counts", {}).get(key)
            rep.problems.append(f"count {key}: manifest has {counts[key]}, run.json says {said}")
    _conservation(run, rep)
    if workspace is not None:
        _against_workspace(con, workspace, run, rep)
    if shards:
        _against_shards(run, rep, root, endpoint)
    con.close()
    return rep


def _conservation(run: dict[str, Any], rep: VerifyReport) -> None:
    c = run.get("counts", {})
    for i in run.get("inputs", []):
        if i.get("status") != "failed" and i.get("rows") != (i.get("documents") or 0) + (i.get("quarantined") or 0):
            rep.problems.append(f"input {i.get('uri')}: rows {i.get('rows')} != documents + quarantined")
    if c.get("input_rows") != c.get("documents", 0) + c.get("quarantined_rows", 0):
        rep.problems.append(f"conservation: {c.get('input_rows')} input rows != {c.get('documents')} documents "
                            f"+ {c.get('quarantined_rows')} quarantined rows")


def _against_workspace(con: duckdb.DuckDBPyConnection, ws: Workspace, run: dict[str, Any],
                       rep: VerifyReport) -> None:
    """Every row recomputed from the workspace (decisions, redaction spans, shard and row) and compared: a row
    rewritten and rehashed in the manifest does not pass."""
    from curate.core.policy import current_rules

    with ws.connect() as wcon:
        try:
            ruleset = current_rules(wcon)
        except UserError as e:
            rep.problems.append(f"workspace: {e}")
            return
        expected = manifest_rows(wcon, ruleset, run.get("dataset_root"))
        quarantined = wcon.execute("SELECT count(*) FILTER (\"row\" IS NOT NULL) FROM quarantine").fetchall()[0][0]
    if ruleset.sha256 != run.get("rules", {}).get("sha256"):
        rep.notes.append("the workspace's latest decisions used a different rules file than this manifest")
    con.register("w", expected)
    fields = ("shard_uri", "shard_sha256", "row", "input_sha256", "action", "rule_ids", "output_sha256", "redactions")
    differs = " || ".join(f"CASE WHEN m.{f} IS DISTINCT FROM w.{f} THEN '{f} ' ELSE '' END" for f in fields)
    for doc_id, what in con.execute(f"""
            SELECT coalesce(m.doc_id, w.doc_id),
                   CASE WHEN m.doc_id IS NULL THEN 'in the workspace but not in the manifest'
                        WHEN w.doc_id IS NULL THEN 'in the manifest but not in the workspace'
                        WHEN m.action IS DISTINCT FROM w.action THEN 'action ' || m.action
                             || ' but the workspace says ' || coalesce(w.action, 'nothing')
                        ELSE 'differs from the workspace in: ' || trim({differs}) END
            FROM m FULL JOIN w USING (doc_id)
            WHERE m.doc_id IS NULL OR w.doc_id IS NULL OR m.row_hash IS DISTINCT FROM w.row_hash
            ORDER BY 1""").fetchall():
        rep.problems.append(f"document {doc_id}: {what}")
    if quarantined != run.get("counts", {}).get("quarantined_rows"):
        rep.problems.append(f"workspace quarantine has {quarantined} rows, run.json says "
                            f"{run.get('counts', {}).get('quarantined_rows')}")


def _against_shards(run: dict[str, Any], rep: VerifyReport, root: str | None, endpoint: str | None) -> None:
    """Re-hash every input shard: at its URI (relative ones under `root`, else the manifest's dataset root),
    else, under `root`, any shard file with its hash (the dataset moved). A shard found nowhere is a failure."""
    by_hash: dict[str, str] | None = None
    base = root or run.get("dataset_root")
    for i in run.get("inputs", []):
        uri, want = i.get("uri", ""), i.get("sha256")
        if i.get("status") == "missing" or not want:
            continue  # it was missing at ingest already: nothing was read from it
        relative = lake.is_local(uri) and "://" not in uri and not os.path.isabs(uri)
        where = f"{base.rstrip('/')}/{uri}" if relative and base else uri
        try:
            sha, _ = lake.sha256_and_size(where, endpoint)
        except lake.Missing:
            sha = None
        if sha is None and root:
            if by_hash is None:
                by_hash = {}
                for found in lake.expand([root], endpoint):
                    by_hash.setdefault(lake.sha256_and_size(found, endpoint)[0], found)
            if want in by_hash:
                rep.notes.append(f"input {uri}: found by its hash at {lake.redact_uri(by_hash[want])}")
                continue
        if sha is None:
            rep.problems.append(f"input {uri}: not found" + ("" if root else " (give --root where the shards are)"))
        elif sha != want:
            rep.problems.append(f"input {uri}: SHA-256 {sha} differs from the manifest's {want}")


# -- diff ---------------------------------------------------------------------------------------------
def diff(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> tuple[dict[str, int], pa.Table]:
    """Documents whose action changed from manifest A to B, with the rules that changed it: rules that fired in
    one and not the other, and rules that fired in both but whose action or condition changed between the two
    rules files (each manifest's run.json records its rules)."""
    runs, paths = [], []
    for d in (Path(a), Path(b)):
        if not (d / MANIFEST).is_file() or not (d / RUN).is_file():
            raise NotFound(f"{d}: not a manifest directory (no {MANIFEST} and {RUN})")
        runs.append(json.loads((d / RUN).read_text()))
        paths.append(d / MANIFEST)
    defs = [{r["id"]: (r.get("action"), r.get("when")) for r in run.get("rules", {}).get("rules", [])} for run in runs]
    changed = sorted(rid for rid in set(defs[0]) & set(defs[1]) if defs[0][rid] != defs[1][rid])
    con = duckdb.connect()
    table = con.sql(f"""
        SELECT coalesce(a.doc_id, b.doc_id) AS doc_id, a.action AS action_a, b.action AS action_b,
               list_filter(coalesce(b.rule_ids, []), lambda r: NOT list_contains(coalesce(a.rule_ids, []), r))
                   AS rules_added,
               list_filter(coalesce(a.rule_ids, []), lambda r: NOT list_contains(coalesce(b.rule_ids, []), r))
                   AS rules_removed,
               list_filter(list_intersect(coalesce(a.rule_ids, []), coalesce(b.rule_ids, [])),
                           lambda r: list_contains(?::VARCHAR[], r)) AS rules_changed
        FROM read_parquet({literal(paths[0])}) a FULL JOIN read_parquet({literal(paths[1])}) b USING (doc_id)
        WHERE a.action IS DISTINCT FROM b.action
        ORDER BY doc_id""", params=[changed]).to_arrow_table()
    con.register("t", table)
    summary = dict(con.execute("""SELECT coalesce(action_a, '-') || ' -> ' || coalesce(action_b, '-'), count(*)
                                  FROM t GROUP BY 1 ORDER BY 1""").fetchall())
    con.close()
    return summary, table


def rule_changes(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> dict[str, str]:
    """Rule id -> how its definition differs between the rules files of manifests A and B."""
    defs = [{r["id"]: r for r in json.loads((Path(d) / RUN).read_text()).get("rules", {}).get("rules", [])}
            for d in (a, b)]
    out = {}
    for rid in sorted(set(defs[0]) & set(defs[1])):
        x, y = defs[0][rid], defs[1][rid]
        parts = [f"{k} {x.get(k)!r} -> {y.get(k)!r}" for k in ("action", "when") if x.get(k) != y.get(k)]
        if parts:
            out[rid] = "; ".join(parts)
    return out
