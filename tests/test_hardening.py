"""Hardening: a rules file cannot run SQL or crash, a failed safety stage holds its document back, and a forged
manifest is caught."""

from __future__ import annotations

import json
import subprocess

import pyarrow.parquet as pq
import pytest
from conftest import CURATE, doc, write_jsonl

from curate.core.manifest import MANIFEST, ROW_HASH_SQL, RUN
from curate.core.policy import RuleError, load_rules


def rules_file(path, when='"text_chars < 0"', action="drop", extra="", rid='"tiny"') -> str:
    path.write_text(f'{extra}\n[[rules]]\nid = {rid}\nversion = "1"\ndescription = "d"\nwhen = {when}\n'
                    f'action = "{action}"\n')
    return str(path)


@pytest.mark.parametrize("body, says", [
    ('when = true', "must be a string"),
    ('when = 5', "must be a string"),
    ('id = 5', "must be a string"),
    ('', "is empty"),
    ('rules = "x"', "array of tables"),
    ('[pii.entities]\n"X) AS y, (SELECT 1" = { action = "drop" }', "letters, digits and '_' only"),
])
def test_rules_files_of_the_wrong_shape_are_refused(tmp_path, body, says):
    p = tmp_path / "bad.toml"
    if body.startswith(("when", "id")):
        key, value = body.split(" = ")
        rules_file(p, **({"when": value} if key == "when" else {"rid": value}))
    else:
        p.write_text(body + "\n")
    with pytest.raises(RuleError, match=says.replace("[", r"\[").replace("(", r"\(")):
        load_rules(p)


@pytest.mark.parametrize("when, says", [
    ('"sqrt(- text_chars) > 0"', "square root"),
    ('"regexp_matches(url, \'(\')"', "missing )"),
    ('"json_extract_string(meta, \'$$$\') = \'x\'"', "JSON path"),
    ('"' + "(" * 200 + "text_chars > 1" + ")" * 200 + '"', "nests 200 levels"),
])
def test_a_rule_that_fails_at_run_time_is_one_line_naming_it_before_any_detector(ws, tmp_path, when, says):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(3)]))])
    r = subprocess.run([*CURATE, "run", str(ws.path), "--rules", rules_file(tmp_path / "r.toml", when)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "rule 'tiny'" in lines[0] and says in lines[0] and "Traceback" not in r.stderr
    assert ws.sql("SELECT count(*) FROM stage_runs").item() == 0  # refused before any detector ran


def test_a_document_a_safety_stage_failed_on_is_held_back(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(4)]))])
    ws.run(stages=["dedup_exact"])
    with ws.connect(write=True) as con:  # as the runner records a document a stage raised on
        con.execute("INSERT INTO stage_errors VALUES ('optout', 'doc-1', 'RecursionError: too deep')")
        con.execute("INSERT INTO stage_errors VALUES ('dedup_exact', 'doc-2', 'ValueError: x')")
    ws.decide()
    got = dict(ws.sql("SELECT doc_id, action FROM decisions").iter_rows())
    assert got["doc-1"] == "drop" and got["doc-2"] == "keep"
    assert "stage-error" in ws.sql("SELECT rule_ids FROM decisions WHERE doc_id = 'doc-1'").item()


@pytest.fixture
def released(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(6)] + [doc(9, text=doc(0)["text"])]))])
    ws.run(stages=["dedup_exact", "optout"])
    return ws, ws.path / "manifest"


def verify(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CURATE, "verify", *args], capture_output=True, text=True, timeout=120)


def test_a_rewritten_and_rehashed_row_is_caught_against_the_workspace(released, tmp_path):
    import duckdb

    ws, m = released
    forged = tmp_path / "forged"
    forged.mkdir()
    for name in ("run.json", "ROOT"):
        (forged / name).write_bytes((m / name).read_bytes())
    con = duckdb.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_parquet('{m / MANIFEST}')")
    con.execute("""UPDATE t SET "row" = "row" + 100 WHERE doc_id = 'doc-3'""")
    con.execute(f"UPDATE t SET row_hash = {ROW_HASH_SQL}")
    pq.write_table(con.sql("SELECT * FROM t ORDER BY doc_id").to_arrow_table(), forged / MANIFEST)
    r = verify(str(forged), "--workspace", str(ws.path))
    assert r.returncode == 1 and "doc-3: differs from the workspace in: row" in r.stdout


@pytest.mark.parametrize("edit", ["rules_sha", "when", "fingerprint", "counts"])
def test_any_edit_of_run_json_is_caught(released, tmp_path, edit):
    ws, m = released
    run = json.loads((m / RUN).read_text())
    if edit == "rules_sha":
        run["rules"]["sha256"] = "0" * 64
    elif edit == "when":
        run["rules"]["rules"][0]["when"] = "false"
    elif edit == "fingerprint":
        run["stages"][0]["fingerprints"] = ["feedfacefeedface"]
    else:
        run["counts"]["input_rows"] += 0  # unchanged counts ...
        run["tool"]["version"] = "9.9.9"  # ... but another tool version
    (m / RUN).write_text(json.dumps(run))
    r = verify(str(m))
    assert r.returncode == 1 and "run.json was changed" in r.stdout


def test_a_deleted_root_fails_and_a_signature_is_checked(released, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    ws, m = released
    key = Ed25519PrivateKey.generate()
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (tmp_path / "pub.pem").write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    other = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "other.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM,
                                                            serialization.PublicFormat.SubjectPublicKeyInfo))
    out = tmp_path / "signed"
    assert subprocess.run([*CURATE, "manifest", str(ws.path), "--out", str(out), "--sign", str(tmp_path / "key.pem")],
                          capture_output=True, timeout=120).returncode == 0
    assert verify(str(out), "--key", str(tmp_path / "pub.pem")).returncode == 0
    r = verify(str(out), "--key", str(tmp_path / "other.pem"))
    assert r.returncode == 1 and "not a signature of the root" in r.stdout
    (out / "ROOT").unlink()
    r = verify(str(out))
    assert r.returncode == 1 and "ROOT file is missing" in r.stdout


def test_ids_and_values_with_markup_are_shown_as_written(ws, tmp_path):
    row = {"id": "[/bold]x[red]", "text": "a [/] text [b]", "url": None}
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [row]))])
    ws.run(stages=["dedup_exact"])
    r = subprocess.run([*CURATE, "explain", str(ws.path), "[/bold]x[red]"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "[/bold]x[red]" in r.stdout, r.stderr
    r = subprocess.run([*CURATE, "sql", str(ws.path), "select doc_id, text from documents", "--format", "table"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "[/bold]x[red]" in r.stdout and "a [/] text [b]" in r.stdout, r.stderr


@pytest.mark.slow
def test_validate_fails_while_a_document_a_safety_stage_failed_on_is_kept(ws, tmp_path):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [doc(i) for i in range(4)]))])
    lenient = rules_file(tmp_path / "lenient.toml", '"text_chars < 0"')  # no stage-error rule: nothing held back
    ws.run(stages=["dedup_exact"], rules=lenient)
    with ws.connect(write=True) as con:
        con.execute("INSERT INTO stage_errors VALUES ('pii', 'doc-1', 'RuntimeError: recognizer failed')")
    ws.decide(lenient)
    assert ws.sql("SELECT action FROM decisions WHERE doc_id = 'doc-1'").item() == "keep"
    r = subprocess.run([*CURATE, "validate", str(ws.path), "--out", str(tmp_path / "v")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "fail closed" in " ".join(r.stdout.split()), r.stdout[-2000:]
    ws.decide()  # the default rules hold it back
    assert ws.sql("SELECT action FROM decisions WHERE doc_id = 'doc-1'").item() == "drop"


def test_a_document_with_deeply_nested_meta_does_not_stop_the_export(ws, tmp_path):
    inner = '{"a":' * 1500 + "1" + "}" * 1500
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps(doc(1)) + "\n" + '{"id": "deep", "text": "a document", "meta": ' + inner + "}\n")
    ws.ingest([str(p)])
    ws.run(stages=["dedup_exact", "optout"])
    r = subprocess.run([*CURATE, "export", str(ws.path), "--out", str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    index = json.loads((tmp_path / "out" / "export.json").read_text())
    assert index["documents"] == 2 and index["meta_not_exported"] == [
        {"id": "deep", "reason": "meta nested too deep to read: not exported"}]
