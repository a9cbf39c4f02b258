"""Mail transports for confirmation links: SMTP, or a directory of .eml files; chosen by a spec string.

`transport("smtp://127.0.0.1:2525")`, `transport("smtp://mail.internal:25?from=optout@example.org")`,
`transport("dir:/var/spool/curate-portal")`. Headers are built by `email.message.EmailMessage`, which refuses
CR or LF in a header value, so a contact address cannot inject headers (it is validated before, too).
"""

from __future__ import annotations

import os
import smtplib
import tempfile
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from curate.core.errors import UserError

DEFAULT_SENDER = "curate-portal@localhost"


class Transport(Protocol):
    def send(self, to: str, subject: str, body: str) -> None: ...


def message(sender: str, to: str, subject: str, body: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg.set_content(body)
    return msg


class SMTPTransport:
    """Plain SMTP to a relay (the deployment's; TLS and authentication are the relay's business)."""

    def __init__(self, host: str, port: int = 25, sender: str = DEFAULT_SENDER, timeout: float = 30):
        self.host, self.port, self.sender, self.timeout = host, port, sender, timeout

    def send(self, to: str, subject: str, body: str) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            smtp.send_message(message(self.sender, to, subject, body))


class DirTransport:
    """Each message as an .eml file in a directory (for a relay that picks them up, or for review)."""

    def __init__(self, path: str | os.PathLike[str], sender: str = DEFAULT_SENDER):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sender = sender

    def send(self, to: str, subject: str, body: str) -> None:
        data = message(self.sender, to, subject, body).as_bytes()
        fd, tmp = tempfile.mkstemp(dir=self.path, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, tmp[:-4] + ".eml")


def transport(spec: str) -> Transport:
    """A transport from `smtp://HOST:PORT[?from=ADDR]` or `dir:PATH`."""
    if spec.startswith("dir:"):
        return DirTransport(spec[4:])
    if spec.startswith("smtp://"):
        p = urlsplit(spec)
        sender = parse_qs(p.query).get("from", [DEFAULT_SENDER])[0]
        try:
            port = p.port or 25
        except ValueError:
            raise UserError(f"--mail {spec!r}: the port is not a number") from None
        if not p.hostname:
            raise UserError(f"--mail {spec!r}: no host")
        return SMTPTransport(p.hostname, port, sender)
    raise UserError(f"--mail {spec!r}: use smtp://HOST:PORT or dir:PATH")
