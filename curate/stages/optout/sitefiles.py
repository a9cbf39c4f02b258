"""Per-site reservation files the crawl team fetched: robots.txt, ai.txt and /.well-known/tdmrep.json.

robots.txt follows RFC 9309: groups of user-agent lines and their allow/disallow rules, the group
of an agent found by case-insensitive product-token match (else the `*` group), the longest
matching rule wins and `allow` wins a tie. ai.txt (Spawning) uses the same syntax; its rules are
addressed to AI agents by definition. tdmrep.json is a list of {location, tdm-reservation,
tdm-policy}; the first rule whose location pattern matches a path decides.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field
from functools import lru_cache

from curate.stages.optout.normalize import _pct
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

    @property
    def regex(self) -> re.Pattern[str]:
        return _compile(self.pattern)

    def __str__(self) -> str:
        return f"{'Allow' if self.allow else 'Disallow'}: {self.pattern} (line {self.line})"


@dataclass
class Robots:
    """A parsed robots.txt or ai.txt: rules per lower-cased product token ('*' for the default group)."""

    groups: dict[str, list[Rule]] = field(default_factory=dict)
    truncated: bool = False

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
            if rule.regex.match(path) and (
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


@lru_cache(maxsize=65536)
def _compile(pattern: str) -> re.Pattern[str]:
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    return re.compile(".*".join(re.escape(p) for p in body.split("*")) + (r"\Z" if anchored else ""), re.DOTALL)


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
        data = json.loads(text)
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
        if _compile(rule.location).match(path):
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


def ai_txt_reservation(robots: Robots, path: str, agents: tuple[str, ...]) -> str | None:
    """ai.txt speaks to AI agents only, so its `*` group always applies."""
    return robots_reservation(robots, path, ("*",) + agents, wildcard=True)
