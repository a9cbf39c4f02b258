"""Benchmark of the guardrail stages (confidential, phi, brands): accuracy on real text, speed against licences.

    PYTHONPATH=. .venv/bin/python benchmarks/guardrails.py confidential   # precision / recall of markers
    PYTHONPATH=. .venv/bin/python benchmarks/guardrails.py phi            # PHI types and clinical-context documents
    PYTHONPATH=. .venv/bin/python benchmarks/guardrails.py speed          # docs/s of each stage vs `licenses`
                                                                          # (CPU time of one process)

Real text from this machine, never data/samples for accuracy: man pages (/usr/share/man, zcat), the licences in
/usr/share/common-licenses, package changelogs and copyright files (/usr/share/doc), package READMEs
(.venv's METADATA files) and the Python standard library's sources (docstrings: "for internal use only" is a
common phrase there). Speed is measured on data/samples, the same documents for every stage.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = 20261202


# -- real text ------------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        raw = gzip.open(path).read() if path.endswith(".gz") else open(path, "rb").read()
    except (OSError, EOFError):
        return None
    text = raw.decode("utf-8", "replace")
    return text if text.strip() else None


def corpus(per_source: int, rng: random.Random, max_chars: int = 20_000) -> list[tuple[str, str, str]]:
    """(source, path, text) of real documents from this machine: up to `per_source` of each source, cut to
    `max_chars` (a document-sized piece, at a line boundary)."""
    sources = {
        "man": sorted(glob.glob("/usr/share/man/man[1-8]/*.gz")),
        "licence": sorted(p for p in glob.glob("/usr/share/common-licenses/*") if os.path.isfile(p)),
        "changelog": sorted(glob.glob("/usr/share/doc/*/changelog*")),
        "copyright": sorted(glob.glob("/usr/share/doc/*/copyright")),
        "readme": sorted(glob.glob(str(ROOT / ".venv/lib/python3*/site-packages/*.dist-info/METADATA"))),
        "python": sorted(glob.glob("/usr/lib/python3*/*.py")),
    }
    out = []
    for name, paths in sources.items():
        rng.shuffle(paths)
        n = 0
        for p in paths:
            text = _read(p)
            if text is None:
                continue
            if len(text) > max_chars:
                text = text[:text.rfind("\n", 0, max_chars) + 1] or text[:max_chars]
            out.append((name, p, text))
            n += 1
            if n >= per_source:
                break
    return out


# -- confidential -----------------------------------------------------------------------------------------
COMPANIES = ["Acme Corp", "Initech", "Globex Corporation", "Umbrella Ltd", "Hooli", "Stark Industries",
             "Wayne Enterprises GmbH", "Contoso", "Northwind Traders", "Vandelay Industries"]
# Markers as real documents carry them, written from memory of real documents (not from the rules' examples).
HEADERS = ["CONFIDENTIAL", "Confidential", "STRICTLY CONFIDENTIAL", "{c} Confidential", "{c} CONFIDENTIAL",
           "INTERNAL USE ONLY", "For Internal Use Only", "PROPRIETARY & CONFIDENTIAL", "Proprietary and Confidential",
           "Privileged & Confidential - Attorney-Client Communication", "ATTORNEY-CLIENT PRIVILEGED",
           "TOP SECRET//SI//NOFORN", "SECRET//NOFORN", "UNCLASSIFIED//FOR OFFICIAL USE ONLY", "OFFICIAL-SENSITIVE",
           "CONFIDENTIAL - DO NOT DISTRIBUTE", "Company Confidential - Not for distribution", "DRAFT - CONFIDENTIAL",
           "Highly Confidential", "{c} Proprietary Information", "*** INTERNAL USE ONLY ***", "TRADE SECRET",
           "Confidential - Do not forward", "NOT FOR PUBLIC RELEASE", "== CONFIDENTIAL ==", "Internal Only",
           "(U//FOUO)", "Confidential | {c}", "CONFIDENTIAL AND PROPRIETARY", "Shared under NDA"]
FOOTERS = ["{c} Confidential | Page {n} of {m}", "(c) 2024 {c}. Proprietary and Confidential.",
           "Internal Use Only - {c}", "CONFIDENTIAL - {c}", "Page {n} of {m}    CONFIDENTIAL",
           "{c} - Strictly Confidential - Page {n}", "Confidential and proprietary information of {c}",
           "Do Not Distribute", "FOR INTERNAL USE ONLY  |  {n}", "PROPRIETARY"]
SIGNATURES = [
    "This email and any attachments are confidential and may be privileged. If you are not the intended "
    "recipient, please notify the sender immediately and delete this message.",
    "CONFIDENTIALITY NOTICE: This e-mail message, including any attachments, is for the sole use of the intended "
    "recipient(s) and may contain confidential and privileged information.",
    "The information contained in this message is confidential and intended only for the addressee. If you have "
    "received it in error, please destroy it.",
    "This message and any files transmitted with it are strictly confidential and intended solely for the "
    "named recipient.",
    "If you are not the intended recipient you are notified that disclosing, copying, distributing or taking any "
    "action in reliance on the contents of this information is strictly prohibited.",
]
SENTENCES = [
    "This document contains trade secrets of {c} and may not be disclosed.",
    "This presentation is provided subject to the non-disclosure agreement between {c} and the recipient.",
    "The attached specification is covered by the mutual confidentiality agreement signed with {c}.",
    "This document is confidential and proprietary to {c}; it is shared under the terms of the mutual NDA.",
    "The enclosed roadmap is shared under a non-disclosure agreement and must not be forwarded.",
]


def place(text: str, how: str, rng: random.Random) -> str:
    """`text` with a marker placed the way real documents carry one."""
    c = rng.choice(COMPANIES)
    lines = text.splitlines()
    fill = {"c": c, "n": 1, "m": max(2, len(lines) // 40)}
    if how == "header":
        return rng.choice(HEADERS).format(**fill) + "\n\n" + text
    if how == "footer":
        return text.rstrip("\n") + "\n\n" + rng.choice(FOOTERS).format(**fill) + "\n"
    if how == "header+footer":  # a classification banner top and bottom, as government documents carry it
        banner = rng.choice(HEADERS).format(**fill)
        return banner + "\n" + text.rstrip("\n") + "\n" + banner + "\n"
    if how == "page-footers":  # a footer repeated on every page of a converted document
        footer, out = rng.choice(FOOTERS), []
        for i in range(0, len(lines), 40):
            fill["n"] = i // 40 + 1
            out += lines[i:i + 40] + ["", footer.format(**fill), ""]
        return "\n".join(out) + "\n"
    if how == "signature":
        name = rng.choice(["Jane Doe", "Raj Patel", "Anna Schmidt", "Wei Chen"])
        return (text.rstrip("\n") + f"\n\n--\n{name}\nSenior Engineer, {c}\n\n" + rng.choice(SIGNATURES) + "\n")
    if how == "inline":  # a marking sentence inside a paragraph of the body
        paras = text.split("\n\n")
        k = rng.randrange(1, max(2, len(paras) - 1)) if len(paras) > 2 else 0
        paras[k] = paras[k].rstrip("\n") + " " + rng.choice(SENTENCES).format(**fill)
        return "\n\n".join(paras)
    raise ValueError(how)


PLACEMENTS = ("header", "footer", "header+footer", "page-footers", "signature", "inline")


def bench_confidential(args) -> None:
    from curate.stages.confidential.markers import load_markers, markers_path

    rng = random.Random(SEED)
    ms = load_markers(markers_path())
    docs = corpus(args.per_source, rng)
    rng.shuffle(docs)
    half = len(docs) // 2
    negatives, bases = docs[:half], docs[half:]
    threshold = args.threshold

    def flagged(text: str) -> bool:
        return any(f.score >= threshold for f in ms.scan(text))

    t0 = time.perf_counter()
    fp = [(src, path) for src, path, text in negatives if flagged(text)]
    by_source: dict[str, list[int]] = {}
    for src, _, _text in negatives:
        by_source.setdefault(src, [0, 0])[0] += 1
    for src, _ in fp:
        by_source[src][1] += 1
    positives = [(how, place(text, how, rng)) for i, (_, _, text) in enumerate(bases)
                 for how in [PLACEMENTS[i % len(PLACEMENTS)]]]
    hits: dict[str, list[int]] = {}
    misses = []
    for how, text in positives:
        h = hits.setdefault(how, [0, 0])
        h[0] += 1
        found = flagged(text)
        h[1] += found
        if not found:
            misses.append((how, text))
    seconds = time.perf_counter() - t0
    tp = sum(h[1] for h in hits.values())
    print(f"confidential: markers file v{ms.version}, threshold {threshold}; {len(negatives)} marker-free real "
          f"documents, {len(positives)} real documents with a marker placed ({seconds:.1f} s)")
    print("\nmarker-free documents (false positives):")
    print("| source | documents | flagged |\n|---|---:|---:|")
    for src, (n, f) in sorted(by_source.items()):
        print(f"| {src} | {n} | {f} |")
    for src, path in fp:
        print(f"  false positive: {src} {path}")
    print("\nrecall by placement:")
    print("| placement | documents | found | recall |\n|---|---:|---:|---:|")
    for how in PLACEMENTS:
        n, f = hits.get(how, [0, 0])
        print(f"| {how} | {n} | {f} | {f / max(n, 1):.3f} |")
    if args.misses:
        for how, text in misses:
            lines = text.strip("\n").splitlines()
            print(f"  missed ({how}): {lines[0][:100]!r} ... {lines[-1][:100]!r}")
    precision = tp / max(tp + len(fp), 1)
    print(f"\nprecision {precision:.4f} (true {tp}, false {len(fp)}); false-positive rate on marker-free text "
          f"{len(fp) / max(len(negatives), 1):.4f}; recall {tp / max(len(positives), 1):.4f}")


# -- phi --------------------------------------------------------------------------------------------------
FIRST = ["John", "Maria", "Wei", "Aisha", "Peter", "Olga", "Carlos", "Fatima", "David", "Keiko"]
LAST = ["Smith", "Garcia", "Chen", "Okafor", "Novak", "Ivanova", "Silva", "Haddad", "Brown", "Tanaka"]
CONDITIONS = ["type 2 diabetes", "hypertension", "asthma", "major depressive disorder", "COPD", "atrial fibrillation",
              "chronic kidney disease", "breast cancer", "HIV", "epilepsy"]
DRUGS = ["metformin", "lisinopril", "albuterol", "sertraline", "apixaban", "levothyroxine", "insulin glargine",
         "tamoxifen", "dolutegravir", "lamotrigine"]
ICD = ["E11.9", "I10", "J45.909", "F32.9", "J44.9", "I48.91", "N18.3", "C50.919", "B20", "G40.909"]
MBI_L = "ACDEFGHJKMNPQRTUVWXY"


def nhs(rng: random.Random) -> str:
    while True:
        d = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(x * w for x, w in zip(d, range(10, 1, -1), strict=True)) % 11
        if check == 11:
            check = 0
        if check != 10:
            s = "".join(map(str, d + [check]))
            return f"{s[:3]} {s[3:6]} {s[6:]}"


def mbi(rng: random.Random) -> str:
    n, a, an = "0123456789", MBI_L, "0123456789" + MBI_L
    c = [rng.choice(x) for x in (n[1:], a, an, n, a, an, n, a, a, n, n)]
    return "".join(c[:4]) + "-" + "".join(c[4:7]) + "-" + "".join(c[7:])


def note(rng: random.Random) -> tuple[str, set[tuple[str, str]]]:
    """A clinical note as EHR exports and referral letters lay them out, and the identifiers it holds."""
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    k = rng.randrange(len(CONDITIONS))
    mrn, nhs_no, mbi_no = f"{rng.randrange(10**7, 10**8):08d}", nhs(rng), mbi(rng)
    ident = rng.choice(["mrn", "nhs", "mbi", "name"])
    head = {"mrn": f"MRN: {mrn}", "nhs": f"NHS number: {nhs_no}", "mbi": f"Medicare Beneficiary ID: {mbi_no}",
            "name": f"Patient: {name}"}[ident]
    truth = {"mrn": ("MEDICAL_RECORD_NUMBER", mrn), "nhs": ("UK_NHS", nhs_no), "mbi": ("US_MBI", mbi_no),
             "name": ("PATIENT_CUE", f"Patient: {name}")}[ident]
    body = rng.choice([
        f"{head}\nDate of visit: 2024-0{rng.randrange(1, 9)}-1{rng.randrange(9)}\n\nHistory: known {CONDITIONS[k]}, "
        f"diagnosed {rng.randrange(2, 15)} years ago.\nMedications: {DRUGS[k]} daily.\nPlan: review in 3 months.\n",
        f"Referral letter\n\nRe: {head}\n\nThank you for seeing this patient, who was diagnosed with {CONDITIONS[k]} "
        f"({ICD[k]}) last year and has been on {DRUGS[k]} since.\n",
        f"DISCHARGE SUMMARY\n{head}\nDiagnosis: {CONDITIONS[k]}\nDischarge medication: {DRUGS[k]}\n",
    ])
    return body, {truth}


HARD_NEGATIVES = [  # medical prose with no patient: written for this benchmark (no such text ships on the machine)
    "Metformin is the first-line drug for type 2 diabetes. It lowers hepatic glucose output and is avoided in severe "
    "renal failure. Insulin is added when glycaemic targets are not met.",
    "Asthma is a chronic inflammatory disease of the airways. Albuterol relieves symptoms; fluticasone controls them. "
    "The ICD-10 code for unspecified asthma is J45.909.",
    "Patients with atrial fibrillation have a higher risk of stroke; apixaban and warfarin reduce it. The chart below "
    "compares bleeding rates.",
    "Hospital number formats vary between trusts. The NHS number is ten digits with a modulus-11 check digit.",
    "Major depressive disorder is treated with sertraline, escitalopram or psychotherapy. Patients should be "
    "reviewed within four weeks of starting treatment.",
]


def bench_phi(args) -> None:
    from curate.stages.phi.lexicon import lexicon_path, load_lexicon

    rng = random.Random(SEED)
    lx = load_lexicon(lexicon_path())
    negatives = [(src, text) for src, _, text in corpus(args.per_source, rng)]
    negatives += [("hard-negative", t) for t in HARD_NEGATIVES]
    notes = [note(rng) for _ in range(args.notes)]
    t0 = time.perf_counter()
    per_type: dict[str, list[int]] = {}  # type -> [truth, found, false]
    doc_tp = 0
    for text, truth in notes:
        spans = lx.scan(text)
        doc_tp += any(s.clinical for s in spans)
        got = {(s.entity_type, text[s.start:s.end]) for s in spans if s.entity_type in {t for t, _ in truth}}
        for t, v in truth:
            e = per_type.setdefault(t, [0, 0, 0])
            e[0] += 1
            e[1] += (t, v) in got
        for t, _v in got - truth:
            per_type.setdefault(t, [0, 0, 0])[2] += 1
    fp: dict[str, list[int]] = {}
    for src, text in negatives:
        e = fp.setdefault(src, [0, 0])
        e[0] += 1
        e[1] += any(s.clinical for s in lx.scan(text))
    seconds = time.perf_counter() - t0
    print(f"phi: lexicon v{lx.version}; {len(notes)} templated clinical notes, {len(negatives)} documents without "
          f"PHI ({seconds:.1f} s)\n")
    print("| identifier type | truth | found | false | recall |\n|---|---:|---:|---:|---:|")
    for t, (n, f, x) in sorted(per_type.items()):
        print(f"| {t} | {n} | {f} | {x} | {f / max(n, 1):.3f} |")
    print("\n| documents without PHI | documents | flagged clinical |\n|---|---:|---:|")
    for src, (n, f) in sorted(fp.items()):
        print(f"| {src} | {n} | {f} |")
    false = sum(f for _, f in fp.values())
    print(f"\nclinical notes flagged: {doc_tp}/{len(notes)} (recall {doc_tp / len(notes):.3f}); precision "
          f"{doc_tp / max(doc_tp + false, 1):.4f} (false {false})")


# -- speed ------------------------------------------------------------------------------------------------
def bench_speed(args) -> None:
    """Each stage's per-document work (`__call__` over Arrow batches of 256) on the same sample documents, one
    process, against the licence stage's; best of `--repeat` runs, after one warm-up (models and indexes load)."""
    import tempfile

    import pyarrow as pa

    from curate import Workspace
    from curate.core.stage import REGISTRY, load_builtin

    load_builtin()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        ws.ingest([str(ROOT / "data" / "samples")])
        docs = ws.sql("SELECT doc_id, text FROM documents WHERE NOT blank ORDER BY seq")
    table = docs.to_arrow()
    batches = pa.Table.from_batches(table.to_batches()).combine_chunks().to_batches(max_chunksize=256)
    chars = sum(len(t) for t in table.column("text").to_pylist())
    print(f"speed: {table.num_rows:,} sample documents, {chars / 1e6:.2f} M chars, batches of 256, one process")
    print("| stage | docs/s | M chars/s | ms/doc | vs licenses |\n|---|---:|---:|---:|---:|")
    results = {}
    for name in ["licenses", *args.stages]:
        det = REGISTRY[name]()
        for b in batches[:2]:
            det(b)
        best = float("inf")
        for _ in range(args.repeat):
            t0 = time.process_time()
            for b in batches:
                det(b)
            best = min(best, time.process_time() - t0)
        results[name] = best
        per_doc = 1000 * best / table.num_rows
        print(f"| {name} | {table.num_rows / best:,.0f} | {chars / best / 1e6:.2f} | {per_doc:.3f} "
              f"| {results['licenses'] / best:.1f}x |")


# -- brands -----------------------------------------------------------------------------------------------
def bench_brands(args) -> None:
    """The brands stage with the sample profiles (rules/brand.toml's [stages.brands]) against the licence stage, on
    the same sample documents, one process, CPU time (best of `--repeat` after a warm-up); then what it found on
    real text of this machine: mentions per brand, and words of a mark that the case and context rules refused."""
    import tempfile
    import tomllib

    import pyarrow as pa

    from curate import Workspace
    from curate.core.stage import REGISTRY, load_builtin

    load_builtin()
    config = tomllib.loads((ROOT / "rules" / "brand.toml").read_text())["stages"]["brands"]
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace.init(Path(tmp) / "ws")
        ws.ingest([str(ROOT / "data" / "samples")])
        table = ws.sql("SELECT doc_id, text FROM documents WHERE NOT blank ORDER BY seq").to_arrow()
    batches = pa.Table.from_batches(table.to_batches()).combine_chunks().to_batches(max_chunksize=256)
    print(f"brands: profiles {', '.join(config['profiles'])}; {table.num_rows:,} sample documents, batches of 256, "
          "one process, CPU time")
    print("| stage | docs/s | ms/doc | rows |\n|---|---:|---:|---:|")
    best = {}
    for name, det in (("licenses", REGISTRY["licenses"]()), ("brands", REGISTRY["brands"](config))):
        rows = sum(det(b).num_rows for b in batches[:2])
        best[name] = float("inf")
        for _ in range(args.repeat):
            t0 = time.process_time()
            rows = sum((r.num_rows if r is not None else 0) for r in (det(b) for b in batches))
            best[name] = min(best[name], time.process_time() - t0)
        print(f"| {name} | {table.num_rows / best[name]:,.0f} | {1000 * best[name] / table.num_rows:.3f} | {rows:,} |")
    print(f"\nbrands per document is {best['licenses'] / best['brands']:.1f}x the licence stage's speed")

    det = REGISTRY["brands"](config)
    docs = corpus(args.per_source, random.Random(SEED))
    found: dict[tuple[str, str, str], int] = {}
    refused: dict[tuple[str, str], int] = {}
    for _src, _path, text in docs:
        for pr in det.profiles():
            hits = pr.scan(text, det.toxic())
            for h in hits:
                found[(pr.name, h.kind, h.brand)] = found.get((pr.name, h.kind, h.brand), 0) + 1
            counted = {(h.start, h.end) for h in hits}
            for m in pr.regex.finditer(text):  # a term matched without regard to case, that its rules refused
                if (m.start(), m.end()) not in counted:
                    mark = pr.marks[pr.lookup[" ".join(m.group().lower().split())][0]]
                    refused[(pr.name, mark.id)] = refused.get((pr.name, mark.id), 0) + 1
    print(f"\nreal text of this machine: {len(docs):,} documents (man pages, licences, changelogs, copyright files, "
          "READMEs, Python sources)")
    print("| profile | kind | brand or group | hits |\n|---|---|---|---:|")
    for (pr, kind, brand), n in sorted(found.items(), key=lambda x: (x[0][0], x[0][1], -x[1])):
        print(f"| {pr} | {kind} | {brand} | {n:,} |")
    print("\nterm occurrences a mark's case or context rule refused:")
    print("| profile | mark | refused |\n|---|---|---:|")
    for (pr, mark), n in sorted(refused.items(), key=lambda x: -x[1]):
        print(f"| {pr} | {mark} | {n:,} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    c = sub.add_parser("confidential")
    c.add_argument("--per-source", type=int, default=400, help="documents per real-text source (default 400)")
    c.add_argument("--misses", action="store_true", help="list the missed documents' first and last lines")
    c.add_argument("--threshold", type=float, default=0.7, help="the default rule's confidential_score cut")
    p = sub.add_parser("phi")
    p.add_argument("--per-source", type=int, default=300, help="documents per real-text source (default 300)")
    p.add_argument("--notes", type=int, default=400, help="templated clinical notes (default 400)")
    sp = sub.add_parser("speed")
    sp.add_argument("--stages", nargs="+", default=["confidential", "phi"], help="stages to time beside licenses")
    sp.add_argument("--repeat", type=int, default=3, help="runs per stage; the best CPU time counts")
    b = sub.add_parser("brands")
    b.add_argument("--per-source", type=int, default=300, help="real documents per source (default 300)")
    b.add_argument("--repeat", type=int, default=3, help="runs per stage; the best CPU time counts")
    args = ap.parse_args(argv)
    what = {"confidential": bench_confidential, "phi": bench_phi, "speed": bench_speed, "brands": bench_brands}
    what[args.what](args)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
