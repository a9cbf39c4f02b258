"""Only the requester revokes an opt-out entry; the operator can, with a reason that the registry keeps."""

from __future__ import annotations

import subprocess

import pytest
from conftest import CURATE

from curate.stages.optout import registry


def test_only_the_creator_or_the_operator_with_a_reason_revokes(ws):
    entry, _, _ = registry.add(ws, "domain", "example.org", "Ann Author", "ticket 1", "2026-11-01T00:00:00Z", True)
    with pytest.raises(registry.RegistryError, match="registered by another creator"):
        registry.revoke(ws, entry, "Bob", received_at="2026-11-02T00:00:00Z")
    r = subprocess.run([*CURATE, "optout", "revoke", str(ws.path), entry, "--creator", "Bob"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "another creator" in r.stderr
    r = subprocess.run([*CURATE, "optout", "revoke", str(ws.path), entry, "--creator", "Operator", "--operator"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--reason" in r.stderr
    r = subprocess.run([*CURATE, "optout", "revoke", str(ws.path), entry, "--creator", "Operator", "--operator",
                        "--reason", "court order 17"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    events = ws.sql("SELECT op, evidence FROM optout_events WHERE entry_id = ? ORDER BY seq", [entry]).rows()
    assert events[-1] == ("revoke", "operator revocation: court order 17")
    # the creator themself (any case) may revoke their own entry
    again, _, _ = registry.add(ws, "domain", "example.net", "Ann Author", "ticket 2", "2026-11-03T00:00:00Z", True)
    registry.revoke(ws, again, "ann author", "withdrawn", received_at="2026-11-04T00:00:00Z")
