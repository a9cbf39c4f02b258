"""Text normalisation shared by the detectors, so that every stage agrees on what 'same text' means."""

from __future__ import annotations

import hashlib
import unicodedata


def normalize(text: str) -> str:
    """Unicode NFC, case-folded, whitespace runs collapsed to one space, trimmed."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def content_hash(text: str) -> str:
    """SHA-256 of the normalised text: equal for copies differing only in case, spacing or composition."""
    return hashlib.sha256(normalize(text).encode("utf-8")).hexdigest()
