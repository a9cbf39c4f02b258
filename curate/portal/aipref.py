"""AI-preference statements: the IETF AI-preferences vocabulary and the robots.txt lines that carry it.

A statement is an RFC 9651 dictionary of categories and `y` / `n` (`train-ai=n, search=y`); Cloudflare's
`Content-Signal` lines say `ai-train=no, search=yes`. Curate curates training data, so what it acts on is
whether training is reserved: `train-ai=n` or `train-genai=n` (also `ai-train=no`), the most restrictive
statement winning. Other categories are recorded with the request, not acted on.
"""

from __future__ import annotations

import re

MAX_STATEMENT = 1024
# Categories of the IETF vocabulary (draft-ietf-aipref-vocab) and Content-Signal's, normalised to one name.
CATEGORIES = {"train-ai": "train-ai", "train-genai": "train-genai", "search": "search", "ai-use": "ai-use",
              "bots": "bots", "ai-train": "train-ai", "ai-input": "ai-use"}
TRAINING = ("train-ai", "train-genai")
_MEMBER = re.compile(r"\s*([a-z][a-z0-9_*.-]*)\s*(?:=\s*([A-Za-z?0-9]+))?\s*(?:;[^,]*)?")
VALUES = {"y": "y", "n": "n", "yes": "y", "no": "n", "?1": "y", "?0": "n"}


def parse(statement: str) -> dict[str, str]:
    """{category: 'y'|'n'} of a statement; unknown categories are kept; raises ValueError on bad syntax."""
    if not isinstance(statement, str) or len(statement) > MAX_STATEMENT:
        raise ValueError(f"an AI-preference statement is a string of at most {MAX_STATEMENT} characters")
    out: dict[str, str] = {}
    for member in statement.split(","):
        if not member.strip():
            continue
        m = _MEMBER.fullmatch(member)
        if not m:
            raise ValueError(f"cannot read {member.strip()[:40]!r}: expected category=y or category=n")
        key, raw = m.group(1), (m.group(2) or "?1").lower()
        if raw not in VALUES:
            raise ValueError(f"{key}: {raw[:10]!r} is not y or n")
        name = CATEGORIES.get(key, key)
        value = VALUES[raw]
        out[name] = "n" if out.get(name) == "n" else value  # the most restrictive statement wins
    if not out:
        raise ValueError("the statement is empty")
    return out


def canonical(prefs: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(prefs.items()))


def reserves_training(prefs: dict[str, str]) -> bool:
    return any(prefs.get(c) == "n" for c in TRAINING)


def robots_statements(text: str) -> list[str]:
    """The `Content-Usage` and `Content-Signal` lines of a robots.txt, as written (comments removed)."""
    out = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("content-usage", "content-signal") and value.strip():
            out.append(f"{key.strip()}: {value.strip()}")
    return out


def robots_reserves_training(text: str) -> bool:
    """Whether any Content-Usage / Content-Signal line of a robots.txt reserves training (path-less or `/`)."""
    for line in robots_statements(text):
        value = line.split(":", 1)[1].strip()
        if line.lower().startswith("content-usage") and value.startswith("/"):
            value = value.split(None, 1)[1] if " " in value else ""
        try:
            if reserves_training(parse(value)):
                return True
        except ValueError:
            continue
    return False
