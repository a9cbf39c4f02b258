"""Per-site reservation files the crawl team fetched: robots.txt, ai.txt and /.well-known/tdmrep.json.

robots.txt follows RFC 9309: groups of user-agent lines and their allow/disallow rules, the group
of an agent found by case-insensitive product-token match (else the `*` group), the longest
matching rule wins and `allow` wins a tie; patterns are matched in linear time. Inside a group,
`Content-Usage: [path] prefs` (IETF AI preferences) and `Content-Signal: [path] signals` (Cloudflare) lines
state usage preferences per path. ai.txt (Spawning) uses the same syntax; its rules are addressed to AI
agents by definition. tdmrep.json is a list of {location, tdm-reservation,
tdm-policy}; the first rule whose location pattern matches a path decides.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache

from curate.stages.optout.normalize import _pct, loads_bounded
from curate.stages.optout.standards import aipref, content_signal, most_restrictive
from curate.util.assets import rules_dir

MAX_ROBOTS_BYTES = 500 * 1024  # RFC 9309 2.5: parse at least 500 KiB; we parse exactly that much
MAX_TDMREP_BYTES = 1024 * 1024
MAX_TDMREP_RULES = 10_000
TOKEN = re.compile(r"[A-Za-z_-]+")


@dataclass(frozen=True)
class Rule:
    allow: bool
    pattern: str  # normalised path pattern ('*' wildcard, trailing '$' anchors)
    line: int

    def matches(self, path: str) -> bool:
        return _glob(self.pattern).match(path)

    def __str__(self) -> str:
        return f"{'Allow' if self.allow else 'Disallow'}: {self.pattern} (line {self.line})"


@dataclass(frozen=True)
class UsageRule:
    """A `Content-Usage: [path] prefs` (IETF AI preferences) or `Content-Signal: [path] signals` (Cloudflare)
    line of a group: the statement applies to the paths its pattern matches (every path without one)."""

    kind: str  # content_usage or content_signal (the match kind it produces)
    pattern: str
    text: str
    line: int

    def matches(self, path: str) -> bool:
        return _glob(self.pattern).match(path)

    def __str__(self) -> str:
        name = "Content-Usage" if self.kind == "content_usage" else "Content-Signal"
        return f"{name}: {'' if self.pattern == '/' else self.pattern + ' '}{self.text} (line {self.line})"


USAGE_KEYS = {"content-usage": "content_usage", "content-signal": "content_signal"}


@dataclass
class Robots:
    """A parsed robots.txt or ai.txt: rules per lower-cased product token ('*' for the default group), and the
    usage statements (Content-Usage, Content-Signal) per token ('' for lines outside any group)."""

    groups: dict[str, list[Rule]] = field(default_factory=dict)
    truncated: bool = False
    usage: dict[str, list[UsageRule]] = field(default_factory=dict)

    def rules_for(self, agent: str, wildcard: bool = True) -> list[Rule] | None:
        """The rules an agent obeys (its own groups merged, else `*`'s); None when no group applies."""
        own = self.groups.get(agent.lower())
        if own is not None:
            return own
        return self.groups.get("*") if wildcard else None

    def blocking_rule(self, agent: str, path: str, wildcard: bool = True) -> Rule | None:
        """The rule that disallows `path` for `agent`, or None when the agent may fetch it."""
        if path == "/robots.txt":
            return None
        best: Rule | None = None
        for rule in self.rules_for(agent, wildcard) or ():
            if rule.matches(path) and (
                best is None or _octets(rule.pattern) > _octets(best.pattern)
                or (_octets(rule.pattern) == _octets(best.pattern) and rule.allow)
            ):
                best = rule
        return best if best is not None and not best.allow else None


def parse_robots(text: str) -> Robots:
    """Parse robots.txt syntax leniently (unknown lines are ignored, as crawlers do)."""
    robots = Robots()
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_ROBOTS_BYTES:
        text = data[:MAX_ROBOTS_BYTES].decode("utf-8", "ignore")
        robots.truncated = True
    agents: list[str] = []
    in_rules = False
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if ":" not in line:
            continue
        key, value = (s.strip() for s in line.split(":", 1))
        key = key.lower().replace(" ", "-").replace("_", "-")
        if key in ("user-agent", "useragent"):
            if in_rules:
                agents, in_rules = [], False
            token = "*" if value.startswith("*") else (TOKEN.match(value) or [""])[0].lower()
            if token and token not in agents:
                agents.append(token)
                robots.groups.setdefault(token, [])
        elif key in ("allow", "disallow") and agents:
            in_rules = True
            if value:  # an empty rule allows everything, i.e. is no rule at all
                rule = Rule(key == "allow", _pattern(value), number)
                for agent in agents:
                    robots.groups[agent].append(rule)
        elif key in USAGE_KEYS and value:
            in_rules = True
            first = value.split(None, 1)
            path, text = (first[0], first[1] if len(first) > 1 else "") if value.startswith(("/", "*")) \
                else ("/", value)
            usage = UsageRule(USAGE_KEYS[key], _pattern(path), text.strip(), number)
            for agent in agents or [""]:
                robots.usage.setdefault(agent, []).append(usage)
    return robots


def _pattern(value: str) -> str:
    """Normalise a rule path like a URL path: percent-encoding per RFC 3986, '*' and '$' kept."""
    value = value.split()[0]
    if not value.startswith(("/", "*")):
        value = "/" + value
    anchored = value.endswith("$")
    body = value[:-1] if anchored else value
    return "*".join(_pct(part) for part in body.split("*")) + ("$" if anchored else "")


def _octets(pattern: str) -> int:
    return len(pattern.encode())


class Glob:
    """A robots.txt path pattern ('*' any run of characters, a trailing '$' anchors the end), matched from
    the start of a path in linear time.

    A backtracking regex (`.*a.*a.*b`) takes exponential time on a long path that almost matches (a
    `Disallow: /*a*a...*b` line held `optout apply` for minutes); taking each literal segment at its leftmost
    occurrence after the previous one is exact for '*'-only patterns and costs one `str.find` per segment."""

    __slots__ = ("anchored", "first", "last", "middle")

    def __init__(self, pattern: str):
        self.anchored = pattern.endswith("$")
        parts = (pattern[:-1] if self.anchored else pattern).split("*")
        self.first = parts[0]
        self.middle = tuple(p for p in parts[1:-1] if p)
        self.last = parts[-1] if len(parts) > 1 else None  # None: no '*' at all

    def match(self, path: str) -> bool:
        if not path.startswith(self.first):
            return False
        if self.last is None:  # a plain prefix (or, anchored, the exact path)
            return not self.anchored or len(path) == len(self.first)
        pos = len(self.first)
        for segment in self.middle:
            pos = path.find(segment, pos)
            if pos < 0:
                return False
            pos += len(segment)
        if self.anchored:  # the last segment must end the path, after everything matched so far
            return len(path) - len(self.last) >= pos and path.endswith(self.last)
        return path.find(self.last, pos) >= 0


@lru_cache(maxsize=65536)
def _glob(pattern: str) -> Glob:
    return Glob(pattern)


# -- tdmrep.json ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TdmRule:
    location: str
    reserved: bool
    policy: str | None
    index: int


def parse_tdmrep(text: str) -> list[TdmRule]:
    """Validate and parse a tdmrep.json file; raises ValueError naming the bad rule."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TDMREP_BYTES:
        raise ValueError(f"tdmrep.json is larger than {MAX_TDMREP_BYTES} bytes")
    try:
        data = loads_bounded(text)
    except ValueError as e:
        raise ValueError(f"tdmrep.json is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise ValueError("tdmrep.json must be a JSON array of rules")
    if len(data) > MAX_TDMREP_RULES:
        raise ValueError(f"tdmrep.json has more than {MAX_TDMREP_RULES} rules")
    rules = []
    for i, item in enumerate(data):
        where = f"tdmrep.json rule #{i + 1}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: not an object")
        location = item.get("location")
        if not isinstance(location, str) or not location.startswith(("/", "*")) or len(location) > 2048:
            raise ValueError(f"{where}: 'location' must be a path pattern starting with '/'")
        reservation = item.get("tdm-reservation")
        if reservation not in (0, 1, "0", "1") or isinstance(reservation, bool):
            raise ValueError(f"{where}: 'tdm-reservation' must be 0 or 1")
        policy = item.get("tdm-policy")
        if policy is not None and not isinstance(policy, str):
            raise ValueError(f"{where}: 'tdm-policy' must be a URL string")
        rules.append(TdmRule(_pattern(location), int(reservation) == 1, policy, i + 1))
    return rules


def tdmrep_rule(rules: list[TdmRule], path: str) -> TdmRule | None:
    """The first rule whose location matches the path (TDMRep: first match wins)."""
    for rule in rules:
        if _glob(rule.location).match(path):
            return rule
    return None


# -- the AI agents list (rules/optout/ai_agents.toml) ----------------------------------------------------
def agents_file():
    return rules_dir() / "optout" / "ai_agents.toml"


@lru_cache(maxsize=4)
def _agents(path: str) -> tuple[str, tuple[str, ...]]:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return str(data.get("version", "")), tuple(a["token"] for a in data.get("agents", []))


def ai_agents() -> tuple[str, ...]:
    return _agents(str(agents_file()))[1]


def agents_version() -> str:
    return _agents(str(agents_file()))[0]


def robots_reservation(robots: Robots, path: str, agents: tuple[str, ...], wildcard: bool = True) -> str | None:
    """Why `path` is reserved against AI training by this robots.txt (first agent disallowed), or None."""
    for agent in agents:
        rule = robots.blocking_rule(agent, path, wildcard)
        if rule is not None:
            group = agent.lower() if agent.lower() in robots.groups else "*"
            return f"{agent} (group {group}): {rule}"
    return None


def usage_reservation(robots: Robots, path: str, agents: tuple[str, ...], kind: str,
                      wildcard: bool = True) -> str | None:
    """Why `path` is reserved against AI training by the robots.txt's Content-Usage (kind `content_usage`) or
    Content-Signal (`content_signal`) lines, or None. Each group that `*` or an AI agent obeys contributes the
    statement of its longest matching line (lines outside any group apply to all); most restrictive wins."""
    parse = aipref if kind == "content_usage" else content_signal
    found = []
    seen: set[str] = set()
    for agent in ("*",) + agents:
        group = agent.lower() if agent.lower() in robots.groups or agent.lower() in robots.usage else "*"
        if not wildcard and group == "*" and agent != "*":
            continue
        for g in dict.fromkeys((group, "")):
            if g in seen:
                continue
            seen.add(g)
            lines = [u for u in robots.usage.get(g, ()) if u.kind == kind and u.matches(path)]
            if lines:
                best = max(lines, key=lambda u: (_octets(u.pattern), u.line))
                pref = parse(best.text)
                if pref is not None:
                    found.append((pref, f"group {g or '(none)'}: {best}"))
    pick = most_restrictive([p for p, _ in found])
    if pick is None or not pick.reserved:
        return None
    return next(why for p, why in found if p is pick) + f" [{', '.join(pick.keys)}]"


def ai_txt_reservation(robots: Robots, path: str, agents: tuple[str, ...]) -> str | None:
    """ai.txt speaks to AI agents only, so its `*` group always applies."""
    return robots_reservation(robots, path, ("*",) + agents, wildcard=True)
