"""Personal-data detection accuracy: the `pii` stage next to the naive use of Presidio, in one run.

Ground truth with exact offsets, on real text (data/samples):
  trailers:  Debian changelog entries end with ` -- Full Name <email>  date`: a real name and e-mail
             address at known offsets, next to dates and time zones (where false positives happen).
  headers:   their first line, `package (version) distribution; urgency=...`: version numbers, no
             personal data at all.
  templates: generated values (Luhn-valid card numbers, mod-97-valid IBANs, phone numbers valid for their
             region, IPv4/IPv6, SSNs, base58check bitcoin addresses, e-mail addresses, names, secrets) in a
             sentence inserted into a real paragraph of a man page or README.
A finding is scored only on those lines, where the truth is complete: a finding there that is not in
the truth is a false positive. Matches are exact (type, start, end), at the policy's minimum scores
(`[pii]` in rules/default.toml). Both engines use the same model and recognizers:
  naive:  one `AnalyzerEngine.analyze(text, language="en")` per document, full spaCy pipeline;
  curate: the pii stage's BatchAnalyzer.
Prints precision, recall and F1 per entity type for both.

A second, held-out set (benchmarks/pii_heldout.py, `--heldout N` cases per source, 0 to leave it out) is built
from real text on this machine other than data/samples: Debian changelog entries and copyright lines from
/usr/share/doc, the AUTHOR sections of man pages, and the Author/Maintainer fields of the installed Python
packages' METADATA, each labelled from its format's structure (see that module). It is reported per source,
and the whole: the stage's rules were not tuned on it (the trailer and `Name <mail>` rules come from the
formats' specifications, which the labels follow too, so on those sources recall measures those rules).

    .venv/bin/python benchmarks/pii_quality.py [--trailers 400] [--per-type 30] [--heldout 200]
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import random
import re
import string
import sys
import time
import tomllib
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
SAMPLES = ROOT / "data" / "samples"
TRAILER = re.compile(r"^ -- (?P<name>[^<>\n]+?) <(?P<email>[^<>\s@]+@[^<>\s@]+)>  (?P<date>[^\n]+)$", re.M)

Truth = tuple[str, int, int]  # entity type, start, end


class Case:
    """A document, the line ranges where the truth is complete, and the truth on them."""

    def __init__(self, text: str, scope: list[tuple[int, int]], truth: list[Truth], kind: str):
        self.text, self.scope, self.truth, self.kind = text, scope, set(truth), kind

    def scored(self, found: set[Truth]) -> set[Truth]:
        return {f for f in found if any(a <= f[1] < b for a, b in self.scope)}


# -- real text ----------------------------------------------------------------------------------------
def changelog_cases(limit: int) -> list[Case]:
    out = []
    for line in (SAMPLES / "changelogs.jsonl").read_text(encoding="utf-8").splitlines():
        text = json.loads(line)["text"]
        m = TRAILER.search(text)
        if not m or not re.search(r"[A-Z]", m["name"]) or not re.match(r"^\S+ \(", text):
            continue  # translations, lower-cased copies
        header_end = text.index("\n")
        truth = [("PERSON", *m.span("name")), ("EMAIL_ADDRESS", *m.span("email"))]
        out.append(Case(text, [(0, header_end), m.span()], truth, "trailer"))
        if len(out) == limit:
            break
    return out


def paragraphs(rng: random.Random, n: int) -> list[str]:
    """n real paragraphs (600-1,200 chars, cut at line breaks) from the man pages and READMEs."""
    import pyarrow.csv
    import pyarrow.parquet

    texts = pyarrow.parquet.read_table(SAMPLES / "manpages.parquet").column("text").to_pylist()
    texts += pyarrow.csv.read_csv(SAMPLES / "docs.csv").column("text").to_pylist()
    texts = [t for t in texts if t and len(t) > 1500 and t.isascii()]
    out = []
    while len(out) < n:
        t = rng.choice(texts)
        a = t.find("\n", rng.randrange(0, len(t) - 1300)) + 1
        b = t.rfind("\n", a + 600, a + 1200)
        if b > a:
            out.append(t[a:b])
    return out


# -- generated values --------------------------------------------------------------------------------
def luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    digits = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, d in enumerate(reversed(digits)):
        x = int(d) * (2 if i % 2 == 0 else 1)
        total += x - 9 if x > 9 else x
    return digits + str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    kind = rng.choice(["visa", "mc", "amex", "discover"])
    if kind == "amex":
        n = luhn_complete(rng.choice(["34", "37"]), 15, rng)
        return rng.choice([f"{n[:4]} {n[4:10]} {n[10:]}", f"{n[:4]}-{n[4:10]}-{n[10:]}", n])
    prefix = {"visa": "4", "mc": rng.choice(["51", "52", "53", "54", "55"]), "discover": "6011"}[kind]
    n = luhn_complete(prefix, 16, rng)
    sep = rng.choice([" ", "-", ""])
    return sep.join(n[i:i + 4] for i in range(0, 16, 4))


def iban(rng: random.Random) -> str:
    country, body = rng.choice([
        ("DE", lambda: "".join(rng.choice(string.digits) for _ in range(18))),
        ("GB", lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
         + "".join(rng.choice(string.digits) for _ in range(14))),
        ("NL", lambda: "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4))
         + "".join(rng.choice(string.digits) for _ in range(10))),
        ("FR", lambda: "".join(rng.choice(string.digits) for _ in range(23))),
        ("ES", lambda: "".join(rng.choice(string.digits) for _ in range(20))),
    ])
    bban = body()
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    value = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    return " ".join(value[i:i + 4] for i in range(0, len(value), 4)) if rng.random() < 0.7 else value


def phone(rng: random.Random) -> str:
    import phonenumbers

    region, make = rng.choice([
        ("US", lambda: f"{rng.choice(['212', '415', '312', '617', '206', '303'])}{rng.randint(200, 999)}"
                       f"{rng.randint(0, 9999):04d}"),
        ("GB", lambda: f"20{rng.choice(['7', '3', '8'])}{rng.randint(0, 9999999):07d}"),
        ("DE", lambda: f"30{rng.randint(1000000, 99999999)}"),
        ("FR", lambda: f"{rng.choice(['1', '6', '7'])}{rng.randint(0, 99999999):08d}"),
        ("IN", lambda: f"9{rng.randint(100000000, 999999999)}"),
    ])
    while True:
        number = phonenumbers.parse(make(), region)
        if phonenumbers.is_valid_number(number):
            fmt = rng.choice([phonenumbers.PhoneNumberFormat.INTERNATIONAL, phonenumbers.PhoneNumberFormat.NATIONAL])
            return phonenumbers.format_number(number, fmt)


def ip(rng: random.Random) -> str:
    if rng.random() < 0.6:
        return f"{rng.choice([23, 45, 81, 104, 151, 185, 203])}.{rng.randint(0, 255)}.{rng.randint(0, 255)}." \
               f"{rng.randint(1, 254)}"
    return str(ipaddress.IPv6Address(bytes([0x20, 0x01, 0x0d, 0xb8] + [rng.randrange(256) for _ in range(12)])))


def ssn(rng: random.Random) -> str:
    area = rng.choice([a for a in range(1, 900) if a != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def bitcoin(rng: random.Random) -> str:
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    payload = bytes([rng.choice([0, 5])]) + bytes(rng.randrange(256) for _ in range(20))
    raw = payload + hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    n, out = int.from_bytes(raw, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = alphabet[r] + out
    return "1" * (len(raw) - len(raw.lstrip(b"\0"))) + out


def token(rng: random.Random, n: int, chars: str = string.ascii_letters + string.digits) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


TEMPLATES: dict[str, list[str]] = {
    "CREDIT_CARD": ["The order was paid with card {v} last week.", "Please charge {v} for the renewal.",
                    "Card number: {v}"],
    "IBAN_CODE": ["Transfer the fee to IBAN {v} before Friday.", "Our account is {v} at the local branch.",
                  "Payments go to {v}."],
    "PHONE_NUMBER": ["For urgent problems call {v} at any time.", "Phone: {v}", "You can also reach the team on {v}."],
    "IP_ADDRESS": ["The request came from {v} during the outage.", "Set the server address to {v} and restart.",
                   "Blocked host {v} after repeated failures."],
    "US_SSN": ["Her SSN {v} appeared in the form.", "Social security number {v} was leaked.",
               "The record lists {v} as the SSN."],
    "EMAIL_ADDRESS": ["Send questions to {v} please.", "Reported by {v} on the list.", "Contact: {v}"],
    "CRYPTO": ["Donations are welcome at {v} (bitcoin).", "Send 0.01 BTC to wallet {v} to unlock.",
               "The address {v} received the funds."],
    "PERSON": ["Thanks to {v} for testing the patch.", "The original version was written by {v} in 2003.",
               "{v} reported the crash and suggested the fix."],
    "AWS_ACCESS_KEY_ID": ["export AWS_ACCESS_KEY_ID={v}", "The leaked key {v} was revoked."],
    "GITHUB_TOKEN": ["Use the token {v} for the mirror job.", "GITHUB_TOKEN={v}"],
    "CONNECTION_STRING_PASSWORD": ["DATABASE_URL=postgres://app:{v}@db.internal.example.com:5432/app",
                                   "Connect with mysql://admin:{v}@reports.example.net/shop for the report."],
}


def value(kind: str, rng: random.Random, names: list[str]) -> str:
    gen = {"CREDIT_CARD": card, "IBAN_CODE": iban, "PHONE_NUMBER": phone, "IP_ADDRESS": ip, "US_SSN": ssn,
           "CRYPTO": bitcoin, "PERSON": lambda r: r.choice(names),
           "EMAIL_ADDRESS": lambda r: f"{r.choice(names).split()[0].lower()}.{token(r, 5, string.ascii_lowercase)}"
                                      f"@{r.choice(['example.com', 'mail.example.org', 'example.co.uk'])}",
           "AWS_ACCESS_KEY_ID": lambda r: "AKIA" + token(r, 16, string.ascii_uppercase + string.digits),
           "GITHUB_TOKEN": lambda r: "ghp_" + token(r, 36),
           "CONNECTION_STRING_PASSWORD": lambda r: token(r, 14)}
    return gen[kind](rng)


def template_cases(per_type: int, rng: random.Random, names: list[str]) -> list[Case]:
    out = []
    paras = paragraphs(rng, per_type * len(TEMPLATES))
    for i, kind in enumerate(sorted(TEMPLATES)):
        for j in range(per_type):
            para, v = paras[i * per_type + j], value(kind, rng, names)
            sentence = rng.choice(TEMPLATES[kind]).format(v=v)
            lines = para.split("\n")
            k = rng.randrange(1, len(lines))
            indent = re.match(r"\s*", lines[k - 1]).group()
            text = "\n".join(lines[:k] + [indent + sentence] + lines[k:])
            start = len("\n".join(lines[:k])) + 1 + len(indent)
            at = start + sentence.index(v)
            out.append(Case(text, [(start, start + len(sentence))], [(kind, at, at + len(v))], "template"))
    return out


# -- scoring ---------------------------------------------------------------------------------------------
def thresholds() -> tuple[dict[str, float], float]:
    pii = tomllib.loads((ROOT / "rules" / "default.toml").read_text())["pii"]
    return ({t: float(p.get("min_score", pii.get("min_score", 0.5))) for t, p in pii["entities"].items()},
            float(pii.get("secret_min_score", 0.5)))


def score(cases: list[Case], found: list[set[Truth]]) -> dict[str, list[int]]:
    """entity type -> [true positives, false positives, false negatives]"""
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for case, f in zip(cases, found, strict=True):
        f = case.scored(f)
        for t in f & case.truth:
            out[t[0]][0] += 1
        for t in f - case.truth:
            out[t[0]][1] += 1
        for t in case.truth - f:
            out[t[0]][2] += 1
    return out


def prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 1.0
    r = tp / (tp + fn) if tp + fn else 1.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trailers", type=int, default=400, help="changelog entries (trailer + header lines)")
    ap.add_argument("--per-type", type=int, default=30, help="template sentences per entity type")
    ap.add_argument("--heldout", type=int, default=200, help="held-out cases per source (0: none)")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--errors", metavar="TYPE", help="also print curate's misses and false positives of a type "
                                                     "(sample data and generated values only)")
    args = ap.parse_args()
    from curate.stages.pii.engine import BatchAnalyzer, analyzer, entity_set, load_recognizers, recognizers_path

    rng = random.Random(args.seed)
    trailers = changelog_cases(args.trailers)
    names = sorted({c.text[s:e] for c in trailers for k, s, e in c.truth if k == "PERSON"})
    cases = trailers + template_cases(args.per_type, rng, names)
    if args.heldout:
        from pii_heldout import build

        held = [Case(text, scope, truth, f"heldout:{source}") for source, items in build(args.heldout).items()
                for text, scope, truth in items]
        cases += held
    mins, secret_min = thresholds()
    spec = load_recognizers(recognizers_path())

    def keep(kind: str, s: float) -> bool:
        return s >= mins.get(kind, secret_min)

    t0 = time.perf_counter()
    naive = analyzer(spec, fast=False)
    naive_found = [{(r.entity_type, r.start, r.end) for r in naive.analyze(c.text, language="en",
                                                                            entities=entity_set(spec))
                    if keep(r.entity_type, r.score)} for c in cases]
    t1 = time.perf_counter()
    ours = BatchAnalyzer(spec)
    ours_found = [{(s.entity_type, s.start, s.end) for s in spans if keep(s.entity_type, s.score)}
                  for spans in ours.analyze_batch([c.text for c in cases])]
    t2 = time.perf_counter()
    groups = {"data/samples: trailers + templates": lambda c: not c.kind.startswith("heldout")}
    for source in sorted({c.kind for c in cases if c.kind.startswith("heldout")}):
        groups[source] = lambda c, s=source: c.kind == s
    if args.heldout:
        groups["heldout: all sources"] = lambda c: c.kind.startswith("heldout")
    for title, chosen in groups.items():
        idx = [i for i, c in enumerate(cases) if chosen(c)]
        a = score([cases[i] for i in idx], [naive_found[i] for i in idx])
        b = score([cases[i] for i in idx], [ours_found[i] for i in idx])
        print(f"\n== {title}: {len(idx)} cases; exact (type, start, end) matches at the [pii] minimum scores")
        print(f"{'entity type':<27} {'truth':>5} | {'naive P':>7} {'R':>5} {'F1':>5} | {'curate P':>8} {'R':>5} "
              f"{'F1':>5}")
        for kind in sorted(set(a) | set(b)):
            n = a[kind][0] + a[kind][2]
            (p1, r1, f1), (p2, r2, f2) = prf(*a[kind]), prf(*b[kind])
            flag = "  <- recall below naive" if r2 < r1 else ""
            print(f"{kind:<27} {n:>5} | {p1:>7.3f} {r1:>5.3f} {f1:>5.3f} | {p2:>8.3f} {r2:>5.3f} {f2:>5.3f}{flag}")
    print(f"time: naive {t1 - t0:.1f} s (model load included), curate {t2 - t1:.1f} s")
    for case, found in zip(cases, ours_found, strict=True) if args.errors else ():
        got = {f for f in case.scored(found) if f[0] == args.errors}
        want = {t for t in case.truth if t[0] == args.errors}
        for label, items in (("missed", want - got), ("false positive", got - want)):
            for _, s, e in sorted(items):
                print(f"  {label}: {case.text[s:e]!r} in {case.text[max(0, s - 40):e + 20]!r}")


if __name__ == "__main__":
    main()
