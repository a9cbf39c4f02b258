"""`curate optout sync`: a portal store's new events into a workspace's opt-out registry, each exactly once.

Each registry event written for portal event N carries `portal <store id> event N` at the start of its
evidence, in the same transaction as the event itself (the registry's own hash chain), so a sync that is
interrupted and rerun finds what it already did in the registry and never adds it twice. Events are read
after the highest N found; the store commits its events in sequence order (PostgreSQL: an advisory lock),
so none is skipped.

By default only verified requests reach the registry (as `verified = true`); with `pending=True` unverified
ones come too, as `verified = false`, for a rules file that decides on `optout_verified`; such an entry is
re-added as verified when its proof arrives. Site files (robots.txt, tdmrep.json) go through
`registry.import_site`, so they land as the site files `import-site` registers, with their date and hash.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.core.errors import UserError
from curate.core.workspace import Workspace
from curate.portal import requests
from curate.portal.store import Store
from curate.stages import optout
from curate.stages.optout import registry

MARK = re.compile(r"portal ([0-9a-f]{16}) event (\d+)\b")
PAGE = 1000


@dataclass
class SyncReport:
    added: int = 0
    revoked: int = 0
    skipped: int = 0  # events with nothing to do (a pending request, a statement that reserves nothing)
    already: int = 0  # events a previous sync had done
    seqs: list[int] = field(default_factory=list)
    version: int = 0


class StoreSource:
    def __init__(self, store: Store):
        self.store = store
        self.store_id = store.store_id

    def events(self, after: int) -> list[dict[str, Any]]:
        return requests.events(self.store, after, PAGE)

    def synced(self, seqs: list[int], workspace: str, version: int) -> None:
        requests.mark_synced(self.store, seqs, workspace, version)


class URLSource:
    """A running portal's operator API (`/api/v1/operator/...`), with the operator token."""

    def __init__(self, url: str, token: str | None, timeout: float = 60):
        if not token:
            raise UserError("syncing from a portal URL needs its operator token (--token or CURATE_PORTAL_TOKEN; "
                            "`curate portal token --store DSN` makes one)")
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout
        self.store_id = self._call("GET", "/api/v1/operator/store")["store_id"]

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"Bearer {self.token}",
                                              "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise UserError(f"portal {self.url}: HTTP {e.code} for {path}") from None
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"portal {self.url} cannot be reached: {getattr(e, 'reason', e)}") from None

    def events(self, after: int) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/v1/operator/events?after={int(after)}&limit={PAGE}")["events"]

    def synced(self, seqs: list[int], workspace: str, version: int) -> None:
        self._call("POST", "/api/v1/operator/synced", {"seqs": seqs, "workspace": workspace, "version": version})


def source(spec: str, token: str | None = None) -> StoreSource | URLSource:
    if spec.startswith(("http://", "https://")):
        return URLSource(spec, token or os.environ.get("CURATE_PORTAL_TOKEN"))
    return StoreSource(Store(spec))


def done_events(ws: Workspace, store_id: str) -> set[int]:
    """Portal events of this store that the registry already holds (from the markers in its evidence)."""
    df = ws.sql("SELECT evidence FROM optout_events WHERE evidence LIKE ?", [f"portal {store_id} event %"])
    return {int(m.group(2)) for e in df["evidence"] if (m := MARK.match(e)) and m.group(1) == store_id}


def sync(ws: Workspace, src: StoreSource | URLSource | str, pending: bool = False,
         token: str | None = None) -> SyncReport:
    """Replay the source's new events into the registry of `ws`; see the module docstring."""
    if isinstance(src, str):
        src = source(src, token)
    report = SyncReport()
    done = done_events(ws, src.store_id)
    after = max(done, default=0)
    label = str(ws.path.resolve())
    while batch := src.events(after):
        for ev in batch:
            after = ev["seq"]
            if ev["seq"] in done:
                report.already += 1
                continue
            did = _replay(ws, src.store_id, ev, pending, report)
            if did:
                report.seqs.append(ev["seq"])
        with ws.connect() as con:
            report.version = optout.state(con).version
        src.synced([s for s in report.seqs], label, report.version)
    with ws.connect() as con:
        report.version = optout.state(con).version
    return report


def _active(ws: Workspace, entry_id: str) -> bool | None:
    """None when the entry is not active in the registry, else whether it is verified."""
    df = ws.sql(f"SELECT verified FROM ({registry.ACTIVE_SQL}) WHERE entry_id = ?", [registry.LATEST, entry_id])
    return None if df.height == 0 else bool(df["verified"][0])


def _replay(ws: Workspace, store_id: str, ev: dict[str, Any], pending: bool, report: SyncReport) -> bool:
    rid, op, kind = ev["request_id"], ev["op"], ev["kind"]
    creator = f"portal:{rid}"
    how = "a token on the site" if ev["method"] == "site" else "a confirmed contact address"
    prefs = f"; AI preferences {ev['prefs']}" if ev["prefs"] else ""
    mark = f"portal {store_id} event {ev['seq']}: request {rid}"
    if op == "revoke":
        if _active(ws, ev["entry_id"]) is None:
            report.skipped += 1
            return False
        optout.revoke(ws, ev["entry_id"], creator, _cut(f"{mark}, revoked after proof by {how}"), ev["at"],
                      verified=True)
        report.revoked += 1
        return True
    verified = op == "verify"
    if (not verified and not pending) or not ev["reserves"]:
        report.skipped += 1
        return False
    evidence = _cut(f"{mark}, {'verified by ' + how if verified else 'not verified yet'}{prefs}; {ev['evidence']}")
    if kind in ("robots_txt", "tdmrep"):
        with tempfile.TemporaryDirectory(prefix="curate-sync-") as tmp:
            path = Path(tmp) / kind
            path.write_text(ev["payload"], encoding="utf-8")
            optout.import_site(ws, ev["value"], **{"robots" if kind == "robots_txt" else "tdmrep": path},
                               creator=creator, evidence=evidence, received_at=ev["received_at"], verified=verified)
        report.added += 1
        return True
    current = _active(ws, ev["entry_id"])
    if current is not None:
        if current or not verified:
            report.skipped += 1
            return False
        # pending entry now verified: revoke and re-add, the marker on the add (a rerun redoes both if it is missing)
        optout.revoke(ws, ev["entry_id"], creator, _cut(f"request {rid} verified: re-added as verified"),
                      ev["at"], verified=True)
    value = ev["payload"] if kind == "work" else ev["value"]
    optout.add(ws, kind, value, creator, evidence, ev["received_at"], verified)
    report.added += 1
    return True


def _cut(text: str) -> str:
    return text if len(text.encode()) <= registry.MAX_EVIDENCE else text.encode()[:registry.MAX_EVIDENCE].decode(
        "utf-8", "ignore")
