"""Nothing personal leaves through export: `meta` goes through the `[pii.meta]` policy, and no value the pii stage
found (and the policy redacts) is in any exported file."""

from __future__ import annotations

import json
import re
import tomllib

import pyarrow.parquet as pq
import pytest
from conftest import ROOT, SAMPLES, doc, write_jsonl

from curate import Workspace
from curate.core.errors import ConfigError
from curate.core.redact import MetaPolicy, redacted_values

RULES = tomllib.loads((ROOT / "rules" / "default.toml").read_text())
HEADERS = {"X-Robots-Tag": "all", "Cookie": "session=7f3a9c1e55", "Authorization": "Basic YWxhZGRpbjpvcGVu",
           "X-Forwarded-For": "203.0.113.195", "From": "harriet.quimby@example.net", "Content-Type": "text/html"}
PLANTED = [  # (document, the values of its meta that must not be exported)
    (doc(900, text="Harriet Quimby wrote to us from 203.0.113.195 about the flight.",
         meta={"author": "Harriet Quimby", "source": "forum", "headers": HEADERS,
               "user": "hquimby", "title": "Flight notes by Harriet Quimby"}),
     ["Harriet Quimby", "hquimby", "203.0.113.195", "harriet.quimby@example.net", "session=7f3a9c1e55",
      "YWxhZGRpbjpvcGVu"]),
    (doc(901, text="Nothing personal here, only a note about the weather and the build.",
         meta={"author": ["Wilbur Wright", "Orville Wright"], "email": "orville@example.org", "package": "kite"}),
     ["Wilbur Wright", "Orville Wright", "orville@example.org"]),
]


def test_meta_policy_keeps_listed_keys_redacts_personal_ones_and_leaves_out_the_rest():
    policy = MetaPolicy.from_rules(RULES)
    meta = PLANTED[0][0]["meta"]
    out = policy.apply(meta, [("Harriet Quimby", "PERSON")])
    assert out == {"author": "<PERSON>", "source": "forum", "user": "<PERSON>",
                   "headers": {"X-Robots-Tag": "all", "X-Forwarded-For": "<IP_ADDRESS>", "From": "<EMAIL_ADDRESS>",
                               "Content-Type": "text/html"}}  # title, Cookie, Authorization: not listed, left out
    assert policy.apply({"package": "kite by Harriet Quimby"}, [("Harriet Quimby", "PERSON")]) == \
        {"package": "kite by <PERSON>"}  # a kept value loses what the text's redaction replaced
    assert policy.apply({"author": ["A B", None, ""]}) == {"author": ["<PERSON>", None, ""]}
    assert policy.apply(None) is None and policy.apply(["not", "an", "object"]) is None
    assert MetaPolicy.from_rules({}).apply(meta) == {}  # no [pii.meta]: nothing is exported


@pytest.mark.parametrize(("section", "message"), [
    ({"keep": "source"}, "keep must be a list"), ({"redact": {"author": 1}}, "redact must be a table"),
    ({"keep": ["author"], "redact": {"Author": "PERSON"}}, "both kept and redacted"),
    ({"drop": ["x"]}, "unknown key"), ("all", "must be a table")])
def test_a_bad_meta_policy_is_refused(section, message):
    with pytest.raises(ConfigError, match=message):
        MetaPolicy.from_rules({"pii": {"meta": section}})


def test_redacted_values_are_longest_first_and_skip_tiny_ones():
    text = "Ann Lee and Lee and Al"
    spans = [{"entity_type": "PERSON", "start": 0, "end": 7}, {"entity_type": "PERSON", "start": 12, "end": 15},
             {"entity_type": "PERSON", "start": 20, "end": 22}]
    assert redacted_values(text, spans) == [("Ann Lee", "PERSON"), ("Lee", "PERSON")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """300 real changelog entries (names and e-mail addresses in text and meta.author) and the planted documents,
    through the pii stage and the default policy, exported as JSONL and as Parquet."""
    path = tmp_path_factory.mktemp("pii-export")
    rows = [json.loads(line) for line in (SAMPLES / "changelogs.jsonl").read_text().splitlines()[:300]]
    ws = Workspace.init(path / "ws")
    ws.ingest([str(write_jsonl(path / "c.jsonl", rows + [d for d, _ in PLANTED]))])
    ws.run(stages=["pii"])
    ws.export(path / "jsonl")
    ws.export(path / "parquet", format="parquet")
    return ws, path


@pytest.mark.slow
def test_no_found_value_and_no_personal_meta_field_is_in_any_exported_file(exported):
    """Every exported file (JSONL and Parquet) is searched for every value the policy redacts (the spans at or
    above their type's minimum, in documents exported redacted) and for every personal meta value (author,
    user, From, X-Forwarded-For, ...): none is there. Across documents, a single word found as a name in one
    ('Mark', 'Drop': the model's errors) is not a name in another, so single-word PERSON values are searched for
    in their own document's record only."""
    ws, path = exported
    from curate.core.policy import current_rules
    from curate.core.redact import redactions_sql
    from curate.stages.pii.engine import NOT_PERSON

    with ws.connect() as con:
        found = con.execute(f"""
            WITH r AS (SELECT doc_id, unnest(redactions) AS x FROM ({redactions_sql(con, current_rules(con).raw)}))
            SELECT DISTINCT r.doc_id, r.x.entity_type, substr(d.text, r.x."start" + 1, r.x."end" - r.x."start")
            FROM r JOIN documents d USING (doc_id) JOIN decisions c USING (doc_id)
            WHERE c.action = 'redact'""").fetchall()
        authors = con.execute("""SELECT DISTINCT json_extract_string(meta, '$.author') FROM documents
                                 WHERE json_extract_string(meta, '$.author') IS NOT NULL""").fetchall()
    found = [(d, k, v) for d, k, v in found if len(v.strip()) >= 3]
    everywhere = {v for _, k, v in found if k != "PERSON" or " " in v.strip()}
    everywhere |= {a for (a,) in authors if not NOT_PERSON.search(a)} | {v for _, vs in PLANTED for v in vs}
    assert len(found) > 300 and len(everywhere) > 300
    files = sorted((path / "jsonl").glob("part-*.jsonl")) + sorted((path / "parquet").glob("part-*.parquet"))
    assert len(files) == 2
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    records = {"jsonl": {r["id"]: json.dumps(r, ensure_ascii=False) for r in rows},
               "parquet": {r["id"]: json.dumps(r, ensure_ascii=False) for r in pq.read_table(files[1]).to_pylist()}}
    for kind, record in records.items():
        blob = "\n".join(record.values())
        leaks = sorted(v for v in everywhere if json.dumps(v, ensure_ascii=False)[1:-1] in blob)
        assert leaks == [], f"{kind}: {len(leaks)} value(s) exported"
        own = sorted({(d, v) for d, _, v in found if re.search(  # as a word: 'Arch' is not in 'Multi-Arch'
            rf"(?<![\w@.\-]){re.escape(json.dumps(v, ensure_ascii=False)[1:-1])}(?![\w@\-])", record.get(d, ""))})
        assert own == [], f"{kind}: {len(own)} value(s) exported in their own document"
    authors_out = [r["meta"].get("author") for r in rows if r["id"].startswith("chg-")]
    assert set(authors_out) <= {"<PERSON>", None} and authors_out.count("<PERSON>") > 200
    planted = next(r for r in rows if r["id"] == "doc-900")
    assert planted["meta"]["headers"] == {"X-Robots-Tag": "all", "X-Forwarded-For": "<IP_ADDRESS>",
                                          "From": "<EMAIL_ADDRESS>", "Content-Type": "text/html"}
    index = json.loads((path / "jsonl" / "export.json").read_text())
    assert index["meta"]["redact"]["author"] == "PERSON" and "source" in index["meta"]["keep"]


@pytest.mark.slow
def test_the_manifest_still_verifies_after_a_meta_redacting_export(exported):
    import hashlib

    ws, path = exported
    manifest = ws.path / "manifest"  # the release `run` wrote
    report = ws.verify(manifest)
    assert report.ok, report.problems
    rows = {r["doc_id"]: r for r in pq.read_table(manifest / "manifest.parquet").to_pylist()}
    lines = (path / "jsonl" / "part-00000.jsonl").read_text().splitlines()
    assert len(lines) == sum(r["action"] in ("keep", "redact") for r in rows.values())
    for line in lines:  # output_sha256 covers the exported text; meta's policy is in export.json and the rules hash
        d = json.loads(line)
        assert hashlib.sha256(d["text"].encode()).hexdigest() == rows[d["id"]]["output_sha256"]
