"""The creator opt-out registry: an append-only, hash-chained event log in the workspace.

Each event adds or revokes one entry. Registry version N is the state after event N; its hash is
the chain hash of event N (sha256 of the previous hash and the event's canonical JSON), so the same
events always give the same hash and any edit of the log shows. Entries come from outside: every
field is validated here and reaches SQL only as a bound parameter or an Arrow column.
"""

from __future__ import annotations

import hashlib
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from curate.core.db import one
from curate.core.errors import UserError
from curate.stages.optout.normalize import MAX_NAME, canonical_url, entry_author, entry_domain, loads_bounded
from curate.stages.optout.sitefiles import MAX_TDMREP_BYTES, parse_robots, parse_tdmrep
from curate.util.text import content_hash, normalize

if TYPE_CHECKING:
    from curate.core.workspace import Workspace

KINDS = ("domain", "url_prefix", "url", "sha256", "author", "work")
SITE_KINDS = ("robots_txt", "tdmrep", "ai_txt")
MAX_EVIDENCE = 4096
MAX_WORK_BYTES = 1024 * 1024  # a registered work (its UTF-8 text)
MIN_WORK_WORDS = 20  # shorter texts are too common to identify a work
MAX_SITE_FILE_BYTES = 2 * 1024 * 1024
MAX_LINE_BYTES = 4 * MAX_WORK_BYTES + 65536  # one import line (JSON-escaped work text and the fields)
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
LATEST = 2**62  # "no version limit" for ACTIVE_SQL
EVENT_COLUMNS = ("seq", "op", "entry_id", "kind", "value", "payload", "creator", "evidence", "received_at",
                 "verified", "chain_hash")
ACTIVE_SQL = """SELECT * EXCLUDE (rn) FROM (
    SELECT *, row_number() OVER (PARTITION BY entry_id ORDER BY seq DESC) AS rn FROM optout_events WHERE seq <= ?)
    WHERE rn = 1 AND op = 'add'"""


class RegistryError(UserError):
    """A request the registry refuses (bad value, unknown entry); the message says why."""


@dataclass(frozen=True)
class Entry:
    """A validated opt-out request, ready to be appended."""

    kind: str
    value: str
    creator: str
    evidence: str
    received_at: datetime
    verified: bool
    payload: str | None = None

    @property
    def entry_id(self) -> str:
        owner = "" if self.kind in SITE_KINDS else self.creator.casefold()  # one file per site and kind
        return "oo-" + hashlib.sha256(f"{self.kind}\x1f{self.value}\x1f{owner}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class RegistryState:
    version: int
    sha256: str
    active: int

    def asset(self) -> dict[str, Any]:
        return {"kind": "optout-registry", "path": "optout_events", "version": str(self.version),
                "sha256": self.sha256, "active_entries": self.active}


@dataclass
class ImportReport:
    added: int = 0
    revoked: int = 0
    unchanged: int = 0  # already registered (or revoked) exactly so
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, reason)
    state: RegistryState | None = None


# -- validation ---------------------------------------------------------------------------------------
def _text(value: Any, what: str, limit: int, required: bool = True, multiline: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise RegistryError(f"{what} must be a string")
    value = value if multiline else value.strip()
    if required and not value.strip():
        raise RegistryError(f"{what} is empty")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise RegistryError(f"{what} is not valid Unicode (lone surrogate)") from None
    if size > limit:
        raise RegistryError(f"{what} is {size} bytes, more than the limit of {limit}")
    allowed = "\t\n\r" if multiline else ""
    bad = next((c for c in value if unicodedata.category(c) == "Cc" and c not in allowed), None)
    if bad is not None:
        raise RegistryError(f"{what} contains the control character U+{ord(bad):04X}")
    return unicodedata.normalize("NFC", value)


def _when(value: Any) -> datetime:
    """A UTC timestamp from an ISO 8601 string or datetime; naive means UTC; not in the future."""
    now = datetime.now(UTC)
    if value is None or value == "":
        dt = now
    elif isinstance(value, datetime):
        dt = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            dt = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise RegistryError(f"received_at {value!r} is not an ISO 8601 date or time") from None
    else:
        raise RegistryError("received_at must be an ISO 8601 string")
    dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    if dt > now + timedelta(days=1) or dt.year < 1990:
        raise RegistryError(f"received_at {dt.date()} is not a plausible date")
    return dt.replace(tzinfo=None)


def canonical_value(kind: str, value: Any) -> tuple[str, str | None]:
    """(value, payload) as stored for an entry of this kind; raises RegistryError on bad input."""
    if kind == "work":
        text = _text(value, "work text", MAX_WORK_BYTES, multiline=True)
        words = len(normalize(text).split())
        if words < MIN_WORK_WORDS:
            raise RegistryError(f"work text has {words} words; at least {MIN_WORK_WORDS} are needed to "
                                "recognise its copies")
        return content_hash(text), text
    v = _text(value, "value", 4096)
    try:
        if kind == "domain":
            return entry_domain(v), None
        if kind in ("url", "url_prefix"):
            url = canonical_url(v)
            if not url.startswith(("http://", "https://")):
                raise ValueError("only http and https URLs can be registered")
            if kind == "url_prefix" and v.split("?", 1)[0].split("#", 1)[0].endswith("/") and "?" not in url \
                    and not url.endswith("/"):
                url += "/"  # 'everything under /gallery/' keeps its slash, so /gallery-old is not covered
            return url, None
        if kind == "sha256":
            h = v.lower()
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
                raise ValueError("sha256 must be 64 hexadecimal digits (of the document's exact UTF-8 text)")
            return h, None
        if kind == "author":
            return entry_author(v), None
    except ValueError as e:
        raise RegistryError(f"{kind} {v[:80]!r}: {e}") from None
    raise RegistryError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")


def make_entry(kind: str, value: Any, creator: Any, evidence: Any = "", received_at: Any = None,
               verified: Any = False) -> Entry:
    """Validate one request to add an entry."""
    if not isinstance(kind, str) or kind not in KINDS:
        raise RegistryError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
    if not isinstance(verified, bool):
        raise RegistryError("verified must be true or false")
    value, payload = canonical_value(kind, value)
    return Entry(kind, value, _text(creator, "creator", MAX_NAME), _text(evidence, "evidence", MAX_EVIDENCE, False),
                 _when(received_at), verified, payload)


# -- the log ------------------------------------------------------------------------------------------
def _canonical(seq: int, op: str, entry_id: str, e: Entry) -> str:
    payload = hashlib.sha256(e.payload.encode()).hexdigest() if e.payload is not None else ""
    when = e.received_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps([seq, op, entry_id, e.kind, e.value, payload, e.creator, e.evidence, when, e.verified],
                      ensure_ascii=False, separators=(",", ":"))


def chain(previous: str, seq: int, op: str, entry_id: str, e: Entry) -> str:
    return hashlib.sha256(f"{previous}\n{_canonical(seq, op, entry_id, e)}".encode()).hexdigest()


def append(con: duckdb.DuckDBPyConnection, events: Sequence[tuple[str, str, Entry]]) -> RegistryState:
    """Append (op, entry_id, entry) events in order, inside the caller's transaction."""
    last = one(con.execute("SELECT seq, chain_hash FROM optout_events ORDER BY seq DESC LIMIT 1"))
    seq, previous = last if last else (0, EMPTY_HASH)
    rows: dict[str, list[Any]] = {c: [] for c in EVENT_COLUMNS}
    for op, entry_id, e in events:
        seq += 1
        previous = chain(previous, seq, op, entry_id, e)
        for c, v in zip(EVENT_COLUMNS, (seq, op, entry_id, e.kind, e.value, e.payload, e.creator, e.evidence,
                                        e.received_at, e.verified, previous), strict=True):
            rows[c].append(v)
    if events:
        table = pa.table({c: pa.array(v, type=pa.timestamp("us") if c == "received_at" else None)
                          for c, v in rows.items()})
        con.register("_oo_new_events", table)
        con.execute(f"INSERT INTO optout_events SELECT {', '.join(EVENT_COLUMNS)} FROM _oo_new_events")
        con.unregister("_oo_new_events")
    return state(con)


def state(con: duckdb.DuckDBPyConnection, version: int | None = None) -> RegistryState:
    """Version, hash and number of active entries of the registry (at `version`, default: latest)."""
    row = one(con.execute("SELECT seq, chain_hash FROM optout_events WHERE seq <= coalesce(?, seq) "
                          "ORDER BY seq DESC LIMIT 1", [version]))
    if not row:
        return RegistryState(0, EMPTY_HASH, 0)
    active = one(con.execute(f"SELECT count(*) FROM ({ACTIVE_SQL})", [row[0]]))[0]
    return RegistryState(row[0], row[1], active)


def check_chain(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Recompute every chain hash; one problem per event whose stored hash does not follow."""
    problems, previous, expected_seq = [], EMPTY_HASH, 1
    rel = con.execute(f"SELECT {', '.join(EVENT_COLUMNS)} FROM optout_events ORDER BY seq")
    while batch := rel.fetchmany(10_000):
        for seq, op, entry_id, kind, value, payload, creator, evidence, received_at, verified, stored in batch:
            if seq != expected_seq:
                problems.append(f"event {seq}: expected event {expected_seq} (events missing)")
            expected_seq = seq + 1
            e = Entry(kind, value, creator, evidence, received_at, verified, payload)
            previous = chain(previous, seq, op, entry_id, e)
            if previous != stored:
                problems.append(f"event {seq}: chain hash does not match its content")
                previous = stored
    return problems


def _active_ids(con: duckdb.DuckDBPyConnection, ids: Iterable[str]) -> dict[str, str | None]:
    """entry_id -> payload hash of the active ones among `ids`."""
    table = pa.table({"entry_id": pa.array(sorted(set(ids)), pa.string())})
    con.register("_oo_ids", table)
    rows = con.execute(f"""SELECT a.entry_id, sha256(coalesce(a.payload, '')) FROM ({ACTIVE_SQL}) a
                           JOIN _oo_ids USING (entry_id)""", [LATEST]).fetchall()
    con.unregister("_oo_ids")
    return dict(rows)


def _record(ws: Workspace, events: list[tuple[str, str, Entry]]) -> RegistryState:
    with ws.connect(write=True) as con:
        con.execute("BEGIN")
        try:
            st = append(con, events)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return st


# -- the operations the CLI exposes -----------------------------------------------------------------
def read_work(path: str | os.PathLike[str]) -> str:
    """A work's text from a UTF-8 file, refusing files over the size limit before reading them."""
    size = Path(path).stat().st_size
    if size > MAX_WORK_BYTES:
        raise RegistryError(f"{path}: {size} bytes, more than the limit of {MAX_WORK_BYTES} for a work")
    try:
        return Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise RegistryError(f"{path}: not valid UTF-8 (byte {e.start})") from None


def add(ws: Workspace, kind: str, value: str, creator: str, evidence: str = "", received_at: Any = None,
        verified: bool = False) -> tuple[str, bool, RegistryState]:
    """Register one entry: (entry_id, whether it was new, registry state)."""
    e = make_entry(kind, value, creator, evidence, received_at, verified)
    with ws.connect(write=True) as con:
        if e.entry_id in _active_ids(con, [e.entry_id]):
            return e.entry_id, False, state(con)
        return e.entry_id, True, _record(ws, [("add", e.entry_id, e)])


def revoke(ws: Workspace, entry_id: str, creator: str, evidence: str = "", received_at: Any = None,
           verified: bool = False, operator: str | None = None) -> RegistryState:
    """Revoke an active entry (its documents are re-included at the next `optout apply`). Only its requester may:
    `creator` must be the entry's creator, unless `operator` gives the operator's reason, which is written
    into the registry's (append-only) event as `operator revocation: <reason>`."""
    with ws.connect(write=True) as con:
        return _record(ws, [_revocation(con, entry_id, creator, evidence, received_at, verified, operator)])


def _revocation(con, entry_id: Any, creator: Any, evidence: Any, received_at: Any,
                verified: Any, operator: str | None = None) -> tuple[str, str, Entry]:
    if not isinstance(entry_id, str) or len(entry_id) > 64:
        raise RegistryError("entry_id must be a string such as oo-0123456789abcdef")
    row = one(con.execute(f"SELECT kind, value FROM ({ACTIVE_SQL}) WHERE entry_id = ?", [LATEST, entry_id]))
    if row is None:
        raise RegistryError(f"no active entry {entry_id!r} (see `curate optout list`)")
    if not isinstance(verified, bool):
        raise RegistryError("verified must be true or false")
    owner = one(con.execute("SELECT creator FROM optout_events WHERE entry_id = ? AND op = 'add' "
                            "ORDER BY seq DESC LIMIT 1", [entry_id]))
    who = _text(creator, "creator", MAX_NAME)
    if operator is not None:
        reason = _text(operator, "operator reason", MAX_EVIDENCE)
        evidence = f"operator revocation: {reason}" + (f"; {evidence}" if evidence else "")
    elif owner and str(owner[0]).casefold() != who.casefold():
        raise RegistryError(f"entry {entry_id} was registered by another creator: only they can revoke it "
                            "(an operator can, with --operator and a reason, which is logged)")
    e = Entry(row[0], row[1], who, _text(evidence, "evidence", MAX_EVIDENCE, False), _when(received_at), verified)
    return "revoke", entry_id, e


FIELDS = {"op", "kind", "value", "creator", "evidence", "received_at", "verified", "entry_id"}


def import_file(ws: Workspace, path: str | os.PathLike[str], creator: str | None = None) -> ImportReport:
    """Import a JSONL file of requests, one object per line:
    {"kind", "value", "creator", "evidence"?, "received_at"?, "verified"?} to add, or
    {"op": "revoke", "entry_id", "creator", ...} to revoke. Bad lines are reported by number; the good
    ones are imported (in one transaction). `creator` fills lines that name none."""
    report = ImportReport()
    p = Path(path)
    if p.stat().st_size == 0:
        report.errors.append((0, f"{p}: empty file"))
    events: list[tuple[str, str, Entry]] = []
    revoked: set[str] = set()
    with ws.connect(write=True) as con:
        adds: list[tuple[int, Entry]] = []
        with open(p, "rb") as f:
            for number, raw in enumerate(_lines(f), 1):
                try:
                    item = _line(raw)
                    if item is None:
                        continue
                    if creator and "creator" not in item:
                        item["creator"] = creator
                    if item.get("op", "add") == "revoke":
                        if item.get("entry_id") in revoked:
                            report.unchanged += 1
                            continue
                        events.append(_revocation(con, item.get("entry_id"), item.get("creator"),
                                                  item.get("evidence"), item.get("received_at"),
                                                  item.get("verified", False)))
                        revoked.add(item["entry_id"])
                        report.revoked += 1
                    else:
                        if "entry_id" in item:
                            raise RegistryError("entry_id is only for revocations")
                        adds.append((number, make_entry(item.get("kind"), item.get("value"), item.get("creator"),
                                                        item.get("evidence", ""), item.get("received_at"),
                                                        item.get("verified", False))))
                except RegistryError as e:
                    report.errors.append((number, str(e)))
        active = _active_ids(con, (e.entry_id for _, e in adds))
        seen: set[str] = set()
        for _, e in adds:
            if e.entry_id in active or e.entry_id in seen:
                report.unchanged += 1
                continue
            seen.add(e.entry_id)
            events.append(("add", e.entry_id, e))
            report.added += 1
        report.state = _record(ws, events) if events else state(con)
    return report


def _lines(f) -> Iterable[bytes | None]:
    """The file's lines, never holding more than MAX_LINE_BYTES of one: a longer line yields None."""
    while raw := f.readline(MAX_LINE_BYTES + 1):
        if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield raw


def _line(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        raise RegistryError(f"line is longer than the limit of {MAX_LINE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RegistryError(f"not valid UTF-8 (byte {e.start} of the line)") from None
    text = text.strip().lstrip("\ufeff")
    if not text or text.startswith("#"):
        return None
    try:
        item = loads_bounded(text)
    except json.JSONDecodeError as e:
        raise RegistryError(f"malformed JSON ({e.msg} at column {e.colno})") from None
    except ValueError as e:  # nested too deeply
        raise RegistryError(str(e)) from None
    if not isinstance(item, dict):
        raise RegistryError("expected a JSON object")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise RegistryError(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(FIELDS))}")
    if item.get("op", "add") not in ("add", "revoke"):
        raise RegistryError("op must be 'add' or 'revoke'")
    return item


def import_site(ws: Workspace, domain: str, robots: str | os.PathLike[str] | None = None,
                tdmrep: str | os.PathLike[str] | None = None, ai_txt: str | os.PathLike[str] | None = None,
                creator: str | None = None, evidence: str = "", received_at: Any = None,
                verified: bool = True, fetched_at: Any = None) -> tuple[list[tuple[str, str, bool]], RegistryState]:
    """Register the site files the crawl team fetched for one host; a newer file replaces the older.

    `fetched_at` (required; `received_at` is accepted for it) is when the files were fetched: the date the
    evidence of a reservation names, stored as the event's received_at next to the file and its hash.
    Returns [(kind, entry_id, changed)] and the registry state."""
    try:
        host = entry_domain(domain)
    except ValueError as e:
        raise RegistryError(f"--domain {domain!r}: {e}") from None
    when = fetched_at if fetched_at not in (None, "") else received_at
    if when in (None, ""):
        raise RegistryError("give the date the site files were fetched (--fetched-at, ISO 8601): it dates the "
                            "evidence of every reservation they show")
    files = [(k, f) for k, f in (("robots_txt", robots), ("tdmrep", tdmrep), ("ai_txt", ai_txt)) if f]
    if not files:
        raise RegistryError("give at least one of --robots, --tdmrep, --ai-txt")
    entries = []
    for kind, path in files:
        size = Path(path).stat().st_size
        if size > MAX_SITE_FILE_BYTES:
            raise RegistryError(f"{path}: {size} bytes, more than the limit of {MAX_SITE_FILE_BYTES}")
        data = Path(path).read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise RegistryError(f"{path}: not valid UTF-8 (byte {e.start})") from None
        text = _text(text, str(path), MAX_SITE_FILE_BYTES, required=False, multiline=True)
        if kind == "tdmrep":
            if len(data) > MAX_TDMREP_BYTES:
                raise RegistryError(f"{path}: larger than {MAX_TDMREP_BYTES} bytes")
            try:
                parse_tdmrep(text)
            except ValueError as e:
                raise RegistryError(f"{path}: {e}") from None
        else:
            parse_robots(text)  # lenient by design: never fails
        entries.append(Entry(kind, host, _text(creator or host, "creator", MAX_NAME),
                             _text(evidence or f"{kind} fetched from {host}", "evidence", MAX_EVIDENCE, False),
                             _when(when), verified, text))
    with ws.connect(write=True) as con:
        active = _active_ids(con, (e.entry_id for e in entries))
        out, events = [], []
        for e in entries:
            same = active.get(e.entry_id) == hashlib.sha256(e.payload.encode()).hexdigest()
            out.append((e.kind, e.entry_id, not same))
            if not same:
                events.append(("add", e.entry_id, e))
        st = _record(ws, events) if events else state(con)
    return out, st


def entries(ws: Workspace, include_revoked: bool = False, kind: str | None = None):
    """Active entries (or every entry with its status) as a polars frame; work texts are not shown."""
    where = "WHERE kind = ?" if kind else ""
    params = [kind] if kind else []
    if include_revoked:
        sql = f"""SELECT entry_id, kind, value, creator, op = 'add' AS active, seq AS since_version, received_at,
                         verified
                  FROM (SELECT *, row_number() OVER (PARTITION BY entry_id ORDER BY seq DESC) rn FROM optout_events)
                  WHERE rn = 1 {where.replace('WHERE', 'AND')} ORDER BY entry_id"""
    else:
        sql = f"""SELECT entry_id, kind, value, creator, evidence, seq AS since_version, received_at, verified
                  FROM ({ACTIVE_SQL}) {where} ORDER BY entry_id"""
        params = [LATEST] + params
    return ws.sql(sql, params)


def log(ws: Workspace, since: int = 0):
    """The events after version `since`, oldest first (payloads shown by size and hash only)."""
    return ws.sql("""SELECT seq AS version, op, entry_id, kind, value, creator, evidence, received_at, verified,
                            CASE WHEN payload IS NOT NULL THEN strlen(payload) END AS payload_bytes, chain_hash
                     FROM optout_events WHERE seq > ? ORDER BY seq""", [since])


def history(ws: Workspace, entry_id: str):
    """Every event of one entry, oldest first: added, revoked, added again, each with its creator, evidence
    and date. Revoking appends; nothing is deleted, so a revoked entry keeps its history."""
    if not isinstance(entry_id, str) or len(entry_id) > 64:
        raise RegistryError("entry_id must be a string such as oo-0123456789abcdef")
    df = ws.sql("""SELECT seq AS version, op, entry_id, kind, value, creator, evidence, received_at, verified,
                          CASE WHEN payload IS NOT NULL THEN sha256(payload) END AS payload_sha256, chain_hash
                   FROM optout_events WHERE entry_id = ? ORDER BY seq""", [entry_id])
    if df.height == 0:
        raise RegistryError(f"no entry {entry_id!r} in the registry (see `curate optout list --all`)")
    return df
