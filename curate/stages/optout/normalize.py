"""Canonical forms of URLs, hosts and author names, shared by registry entries and documents.

Entries and documents go through the same functions, so an entry matches a document exactly when
their canonical forms are equal (or, for `url_prefix` and `domain`, one contains the other).
Entry values come from outside: the `entry_*` functions validate and raise ValueError with a reason.
"""

from __future__ import annotations

import ipaddress
import json
import re
import unicodedata
from functools import lru_cache
from typing import Any
from urllib.parse import SplitResult, urlsplit

MAX_URL = 2048
MAX_HOST = 253
MAX_NAME = 256
DEFAULT_PORTS = {"http": 80, "https": 443}
# Query parameters that only track the click, never select content (dropped when normalising).
TRACKING = re.compile(
    r"utm_[a-z0-9_]+|fbclid|gclid|gclsrc|dclid|gbraid|wbraid|msclkid|yclid|twclid|ttclid|li_fat_id|igshid"
    r"|mc_cid|mc_eid|_ga|_gl|_hsenc|_hsmi|__hssc|__hstc|__hsfp|hsctatracking|mkt_tok|oly_anon_id|oly_enc_id"
    r"|vero_id|vero_conv|rb_clickid|s_cid|spm|scid|ref_src|ref_url|wickedid|srsltid|_openstat|cmpid",
    re.IGNORECASE,
)
UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# Characters kept as they are in a path or query; anything else is percent-encoded (UTF-8).
SAFE = UNRESERVED | frozenset("!$&'()*+,;=:@/?%")
LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
PCT = re.compile(r"%([0-9A-Fa-f]{2})")
ASCII_BAD = re.compile(r"[\x00-\x20\x7f]")
# Letters that carry no combining mark under NFKD but read as accented Latin letters.
FOLD = str.maketrans({"ø": "o", "ł": "l", "đ": "d", "ð": "d", "ħ": "h", "ı": "i", "ŧ": "t", "æ": "ae",
                      "œ": "oe", "þ": "th"})


# -- URLs ---------------------------------------------------------------------------------------------
def normalize_url(url: str | None) -> str | None:
    """The canonical form of a document's URL, or None when it has no usable host."""
    if not url:
        return None
    try:
        return canonical_url(url.strip().replace(" ", "%20"))
    except ValueError:
        return None


def canonical_url(url: str) -> str:
    """Lower-case scheme and host (IDNA), no default port, userinfo or fragment, no tracking
    parameters, percent-encoding normalised (RFC 3986 6.2.2), no trailing slash except the root."""
    parts = _split(url.strip())
    scheme = parts.scheme.lower()
    host = canonical_host(parts.hostname or "")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port is not a number between 0 and 65535") from None
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != DEFAULT_PORTS.get(scheme):
        netloc += f":{port}"
    path = _pct(_remove_dot_segments(parts.path or "/"))
    if len(path) > 1:
        path = path.rstrip("/") or "/"
    query = "&".join(p for p in parts.query.split("&") if p and not TRACKING.fullmatch(p.split("=", 1)[0]))
    return f"{scheme}://{netloc}{path}" + (f"?{_pct(query)}" if query else "")


def url_key(canonical: str) -> str:
    """The matching key of a canonical URL: http and https name the same document."""
    return re.sub(r"^https?://", "", canonical)


def request_path(url: str | None) -> str | None:
    """Path and query as the crawler requested them (what robots.txt and tdmrep.json rules match):
    percent-encoding normalised, trailing slash and every parameter kept."""
    if not url:
        return None
    try:
        parts = _split(url.strip().replace(" ", "%20"))
    except ValueError:
        return None
    path = _pct(_remove_dot_segments(parts.path or "/"))
    return path + (f"?{_pct(parts.query)}" if parts.query else "")


def _split(url: str) -> SplitResult:
    if not url:
        raise ValueError("empty URL")
    if len(url) > MAX_URL:
        raise ValueError(f"URL longer than {MAX_URL} characters")
    # In ASCII, whitespace and control characters (Cc; there is no ASCII Cf) are exactly [\x00-\x20\x7f]: one
    # regex search instead of a Python loop over the characters, which took a fifth of the stage's time.
    if (ASCII_BAD.search(url) if url.isascii() else
            any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in url)):
        raise ValueError("URL contains whitespace or control characters")
    if not re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", url):
        raise ValueError("not an absolute URL (expected scheme://host/...)")
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise ValueError(f"URL does not parse: {e}") from None
    if not parts.hostname:
        raise ValueError("URL has no host")
    return parts


def _pct(s: str) -> str:
    """Upper-case percent escapes, decode unreserved characters, encode everything unsafe (UTF-8)."""
    out, i = [], 0
    while i < len(s):
        ch = s[i]
        if ch == "%" and PCT.match(s, i):
            decoded = chr(int(s[i + 1:i + 3], 16))
            out.append(decoded if decoded in UNRESERVED else "%" + s[i + 1:i + 3].upper())
            i += 3
            continue
        if ch in SAFE and ch != "%":
            out.append(ch)
        else:
            out.extend(f"%{b:02X}" for b in ch.encode("utf-8", "surrogatepass"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    if "." not in path:
        return path
    out: list[str] = []
    for seg in path.split("/")[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    tail = "/" if path.endswith(("/.", "/..")) else ""
    return "/" + "/".join(out) + tail


# -- hosts --------------------------------------------------------------------------------------------
def canonical_host(host: str) -> str:
    """Lower-case ASCII (IDNA) host without trailing dot; IP addresses in their standard form."""
    h = host.strip().rstrip(".").lower()
    if not h:
        raise ValueError("empty host")
    if len(h) > MAX_HOST:
        raise ValueError(f"host longer than {MAX_HOST} characters")
    try:
        return str(ipaddress.ip_address(h.strip("[]")))
    except ValueError:
        pass
    if not h.isascii():
        try:
            h = h.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("host is not a valid internationalised domain name") from None
    labels = h.split(".")
    if not all(LABEL.fullmatch(label) for label in labels):
        raise ValueError("host has an invalid label (letters, digits, '-' and '_' only, 1-63 characters)")
    return h


def entry_domain(value: str) -> str:
    """A `domain` entry: a host with at least two labels (`*.` or a leading dot is accepted)."""
    v = value.strip()
    if _is_ip(v.strip("[]")):
        return canonical_host(v)
    if "/" in v or ":" in v:
        raise ValueError("a domain entry is a host name such as example.com, not a URL")
    v = v.removeprefix("*.").removeprefix(".")
    host = canonical_host(v)
    if "." not in host and not _is_ip(host):
        raise ValueError("a domain entry needs at least two labels (a top-level domain alone is refused)")
    if is_public_suffix(host):
        raise ValueError(f"{host} is a public suffix (Public Suffix List): it would opt out every site registered "
                         f"under it; name the site itself, e.g. example.{host}")
    return host


@lru_cache(maxsize=1)
def _suffix_list():
    import tldextract

    # The suffix list bundled with tldextract: never fetched (suffix_list_urls=()) nor cached on disk.
    return tldextract.TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True,
                                 include_psl_private_domains=True)


def is_public_suffix(host: str) -> bool:
    """Whether a host is itself a public suffix, ICANN (`co.uk`) or private (`github.io`, `blogspot.com`):
    names under it belong to unrelated owners."""
    if _is_ip(host):
        return False
    parts = _suffix_list()(host)
    return bool(parts.suffix) and not parts.domain


def host_suffixes(host: str | None) -> list[str]:
    """The host and each parent domain: www.a.example.org -> [www.a.example.org, a.example.org, example.org]."""
    if not host:
        return []
    if _is_ip(host):
        return [host]
    labels = host.split(".")
    return [".".join(labels[i:]) for i in range(max(len(labels) - 1, 1))]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


# -- authors ------------------------------------------------------------------------------------------
def author_key(name: str | None) -> str | None:
    """Case- and accent-insensitive form of a name: NFKD without marks, case-folded, spaces collapsed."""
    if not name or not isinstance(name, str):
        return None
    decomposed = unicodedata.normalize("NFKD", name.casefold().translate(FOLD))
    key = " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())
    return key or None


def entry_author(value: str) -> str:
    key = author_key(value)
    if not key:
        raise ValueError("empty author name")
    if len(value) > MAX_NAME:
        raise ValueError(f"author name longer than {MAX_NAME} characters")
    return key


# -- JSON from outside --------------------------------------------------------------------------------
MAX_JSON_DEPTH = 64  # import lines are flat objects; meta, tdmrep.json and content credentials nest a few levels
JSON_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings do not count)."""
    depth = deepest = 0
    for m in JSON_TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def loads_bounded(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """json.loads refusing texts nested deeper than `max_depth` (ValueError naming the depth).

    CPython's decoder recurses once per level and raises RecursionError near 1,000 levels, which is not a
    ValueError: one such line aborted a whole import. The depth is counted only when a bracket could be
    that deep, so ordinary texts cost one extra `str.count` pass."""
    if text.count("[") + text.count("{") > max_depth and (depth := json_depth(text)) > max_depth:
        raise ValueError(f"JSON nested {depth} levels deep, more than the limit of {max_depth}")
    try:
        return json.loads(text)
    except RecursionError:  # unreachable after the check above; kept so no input escapes as a crash
        raise ValueError(f"JSON nested more than {max_depth} levels deep") from None


def prune_json(text: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse a JSON text, replacing every array or object nested deeper than `max_depth` by null, so the
    shallow fields of a document's `meta` stay readable however deep one of its values goes."""
    if text.count("[") + text.count("{") <= max_depth:
        return json.loads(text)
    out, depth, start, cut_from = [], 0, 0, None
    for m in JSON_TOKENS.finditer(text):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth == max_depth + 1:
                cut_from = m.start()
        elif c in "]}":
            if depth == max_depth + 1 and cut_from is not None:
                out.append(text[start:cut_from] + "null")
                start, cut_from = m.end(), None
            depth -= 1
    out.append(text[start:] if cut_from is None else text[start:cut_from] + "null")
    return json.loads("".join(out))
