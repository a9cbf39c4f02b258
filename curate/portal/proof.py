"""Proof of ownership: signed, expiring contact links, and site tokens under `/.well-known/`.

A contact link carries `base64url(purpose, request id, expiry)` and an HMAC-SHA256 of it with the store's
secret: it cannot be forged or extended, and it names one request and one purpose (confirm or revoke).

A site token is a random string the creator places, one per line, in
`https://HOST/.well-known/curate-optout.txt`; the store keeps only its hash. The verifier (run by the
curation team, `curate portal verify-sites`) fetches that file once per host: it connects only to the host's
public addresses (no private, loopback or link-local address, so a request cannot aim it at internal
services) unless the operator maps the host explicitly (`--resolve HOST=ADDR:PORT`, how the tests reach a
server on 127.0.0.1), follows no redirect, reads at most 64 KiB, and pins the address it checked.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import ipaddress
import json
import secrets
import socket
import ssl
import time
from dataclasses import dataclass, field

WELL_KNOWN = "/.well-known/curate-optout.txt"
LINK_SECONDS = 48 * 3600
MAX_WELL_KNOWN = 64 * 1024
PURPOSES = ("confirm", "revoke")


class ProofError(ValueError):
    """A link that is forged, expired or for another purpose."""


def sign(secret: bytes, purpose: str, request_id: str, seconds: int = LINK_SECONDS, now: float | None = None) -> str:
    body = json.dumps([purpose, request_id, int((now or time.time()) + seconds)], separators=(",", ":")).encode()
    mac = hmac.new(secret, body, hashlib.sha256).digest()
    return _b64(body) + "." + _b64(mac)


def check(secret: bytes, token: str, now: float | None = None) -> tuple[str, str]:
    """(purpose, request id) of a valid, unexpired link token; ProofError otherwise."""
    if not isinstance(token, str) or len(token) > 512 or token.count(".") != 1:
        raise ProofError("this link is not one of ours")
    body_b64, mac_b64 = token.split(".")
    try:
        body, mac = _unb64(body_b64), _unb64(mac_b64)
    except ValueError:
        raise ProofError("this link is not one of ours") from None
    if not hmac.compare_digest(mac, hmac.new(secret, body, hashlib.sha256).digest()):
        raise ProofError("this link is not one of ours (or was altered)")
    purpose, request_id, expires = json.loads(body)
    if (now or time.time()) > expires:
        raise ProofError("this link has expired: ask for a new one from your request's status page")
    return purpose, request_id


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def site_token() -> str:
    return "curate-optout-" + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


# -- the verifier -------------------------------------------------------------------------------------------
@dataclass
class Fetched:
    host: str
    hashes: set[str] = field(default_factory=set)  # hashes of the file's lines
    error: str | None = None


def fetch_tokens(host: str, resolve: dict[str, str] | None = None, scheme: str = "https",
                 timeout: float = 10) -> Fetched:
    """The token hashes listed in HOST's /.well-known/curate-optout.txt (or why they could not be read)."""
    try:
        if resolve and host in resolve:
            addr, _, port = resolve[host].rpartition(":")
            address, port_number = addr.strip("[]"), int(port)
        else:
            port_number = 443 if scheme == "https" else 80
            address = _public_address(host, port_number)
        conn: http.client.HTTPConnection
        if scheme == "https":
            conn = _PinnedHTTPS(host, port_number, address, timeout)
        else:
            conn = _PinnedHTTP(host, port_number, address, timeout)
        try:
            conn.request("GET", WELL_KNOWN, headers={"Host": host, "User-Agent": "curate-portal-verifier"})
            resp = conn.getresponse()
            if resp.status != 200:
                return Fetched(host, error=f"HTTP {resp.status} for {WELL_KNOWN}")
            data = resp.read(MAX_WELL_KNOWN + 1)
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException) as e:
        return Fetched(host, error=f"{type(e).__name__}: {str(e)[:200]}")
    if len(data) > MAX_WELL_KNOWN:
        return Fetched(host, error=f"{WELL_KNOWN} is larger than {MAX_WELL_KNOWN} bytes")
    text = data.decode("utf-8", "replace")
    return Fetched(host, {token_hash(line) for line in text.splitlines() if line.strip()})


def _public_address(host: str, port: int) -> str:
    """The first address of `host`, refusing hosts with any non-public address."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = [i[4][0] for i in infos]
    for a in addresses:
        if not ipaddress.ip_address(a.split("%")[0]).is_global:
            raise ValueError(f"{host} resolves to a non-public address ({a}); not fetched")
    if not addresses:
        raise ValueError(f"{host} has no address")
    return addresses[0]


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, address: str, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)
