from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import CURATE, write_jsonl

from curate import Workspace
from curate.core.workspace import WorkspaceError
from curate.stages.bias.stage import LexiconError, load_lexicon, load_lexicons, match
from curate.util.assets import rules_dir

DEMO = """axis = "demo"
version = "1"
rationale = "test lexicon"
exclude = ["man page"]

[groups]
men = ["man", "men"]
women = ["woman", "women", "women's"]
phrase = ["hard of hearing", "non-binary"]
"""


def counts(texts: list[str], lexicons) -> list[dict[str, int]]:
    found = match(texts, lexicons)
    out: list[dict[str, int]] = [{} for _ in texts]
    for i, axis, group, n in found.iter_rows():
        out[i][f"{axis}/{group}"] = n
    return out


@pytest.fixture
def demo_lexicons(tmp_path: Path) -> Path:
    d = tmp_path / "lexicons"
    d.mkdir()
    (d / "demo.toml").write_text(DEMO)
    return d


def test_lexicon_terms_match_whole_words_in_any_case(demo_lexicons):
    lex = load_lexicons(demo_lexicons)
    assert counts([
        "Man, MEN and men.",
        "manager, human, mankind, Manhattan; Women",
        "see the man page; man-made; a woman's voice; the /usr/bin/man.sh script",
        "Hard  of\nHearing, NON-BINARY, non binary, nonbinary",
        "\u00fcman\u00fc cafe\u0301 man\u2019s",
        "women's rights",
    ], lex) == [
        {"demo/men": 3},
        {"demo/women": 1},
        {"demo/women": 1},  # "man page" is excluded, "man-made" is one word, a dotted file name is not prose
        {"demo/phrase": 2},  # any whitespace inside a phrase; "non binary" is another spelling, not listed
        {"demo/men": 1},  # a non-ASCII letter is a letter: no "man" inside "\u00fcman\u00fc"
        {"demo/women": 1},  # the longest term wins: "women's" once, not also "women"
    ]


def test_shipped_lexicons_cover_the_axes_and_skip_technical_senses():
    lex = load_lexicons()
    assert [x.axis for x in lex] == ["age", "disability", "gender", "nationality_ethnicity", "religion",
                                     "sexual_orientation", "toxicity"]
    assert all(x.version and x.rationale and x.terms >= 40 for x in lex)
    assert counts([
        "African American women and older adults",
        "See the man page: the child process is killed; set TERM=dumb; blind spot",
        "Asian Americans, the elderly and a gay couple",
    ], lex) == [
        {"age/older": 1, "gender/female": 1, "nationality_ethnicity/black": 1},
        {},
        {"age/older": 1, "nationality_ethnicity/asian": 1, "sexual_orientation/gay": 1},
    ]


@pytest.mark.parametrize("body, problem", [
    (DEMO.replace('phrase = ["hard', 'phrase = ["man", "hard'), "'man' of group 'phrase' is already in group 'men'"),
    (DEMO.replace('exclude = ["man page"]', 'exclude = ["page"]'), "contains no term"),
    (DEMO.replace('"non-binary"]', '"non-binary", "m\u0101ori"]'), "not ASCII"),
    (DEMO.replace('version = "1"\n', ""), "missing version"),
])
def test_a_bad_lexicon_is_refused_naming_the_file(tmp_path, body, problem):
    f = tmp_path / "bad.toml"
    f.write_text(body)
    with pytest.raises(LexiconError, match="bad.toml") as e:
        load_lexicon(f)
    assert problem in str(e.value)


RULES = """[policy]
name = "bias-test"
version = "1"

[[rules]]
id = "drop-marked"
version = "1"
description = "Documents from a marked URL."
when = "contains(url, '/drop/')"
action = "drop"

[[rules]]
id = "flag-toxic"
version = "1"
description = "Any toxic term."
when = "bias_toxic_terms >= 1"
action = "flag"
"""


@pytest.fixture
def constructed(ws, tmp_path) -> Workspace:
    """100 documents of exactly 10 words: 20 mention women (10 dropped, 5 toxic), 30 men (3 dropped),
    40 the elderly (none dropped), 10 none of them (7 dropped)."""
    plan = [("women", 20, 10), ("men", 30, 3), ("elderly", 40, 0), ("team", 10, 7)]
    rows, i = [], 0
    for word, n, dropped in plan:
        for k in range(n):
            last = "idiot" if word == "women" and k < 5 else "again"
            rows.append({"id": f"d{i:03d}", "text": f"record {i:03d} notes that the {word} walked home {last} today",
                         "url": f"https://example.org/{'drop' if k < dropped else 'keep'}/{i}"})
            i += 1
    ws.ingest([str(write_jsonl(tmp_path / "constructed.jsonl", rows))])
    (tmp_path / "rules.toml").write_text(RULES)
    ws.run(stages=["bias"], rules=tmp_path / "rules.toml")
    return ws


def test_disparate_removal_matches_the_hand_computed_answer(constructed):
    r = constructed.bias()
    assert {k: r.sample[k] for k in ("documents_in_report", "documents_after", "tokens_before", "tokens_after",
                                     "toxic_documents")} == {
        "documents_in_report": 100, "documents_after": 80, "tokens_before": 1000, "tokens_after": 800,
        "toxic_documents": 5}
    rows = {(x["rule_id"], x["group_name"]): x for x in r.removal.iter_rows(named=True)}
    women, men, old = rows["drop-marked", "female"], rows["drop-marked", "male"], rows["drop-marked", "older"]
    assert (women["docs"], women["removed"], women["overall_rate"], women["ratio"]) == (20, 10, 0.2, 2.5)
    # Wilson 95% intervals: 10/20 -> 0.2993-0.7007, 3/30 -> 0.0346-0.2562, 0/40 -> 0-0.0876.
    assert women["ci_low"] == pytest.approx(0.2993, abs=1e-4) and women["ci_high"] == pytest.approx(0.7007, abs=1e-4)
    assert men["ci_low"] == pytest.approx(0.0346, abs=1e-4) and men["ci_high"] == pytest.approx(0.2562, abs=1e-4)
    assert old["ci_low"] == 0 and old["ci_high"] == pytest.approx(0.0876, abs=1e-4)
    assert (women["flag"], men["flag"], old["flag"]) == ("over", "", "under")
    assert rows["(policy)", "female"]["removed"] == 10 and rows["(policy)", "female"]["flag"] == "over"
    toxic = rows["flag-toxic", "female"]
    assert (toxic["measure"], toxic["removed"], toxic["overall_rate"], toxic["flag"]) == ("fired", 5, 0.05, "over")

    rep = {x["group_name"]: x for x in r.representation.iter_rows(named=True)}
    assert (rep["female"]["per_million_before"], rep["female"]["per_million_after"]) == (20000, 12500)
    assert (rep["male"]["per_million_before"], rep["male"]["per_million_after"]) == (30000, 33750)
    assert rep["gay"]["docs_before"] == 0  # every lexicon group is listed, mentioned or not

    co = {x["group_name"]: x for x in r.cooccurrence.iter_rows(named=True)}
    assert (co["female"]["toxic_docs"], co["female"]["lift"], co["female"]["flag"]) == (5, 5.0, "over")
    assert (co["male"]["toxic_docs"], co["male"]["flag"]) == (0, "")


def test_curate_bias_prints_plain_numbers_without_documents(constructed):
    res = subprocess.run([*CURATE, "bias", str(constructed.path), "--json"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert set(report) == {"sample", "lexicons", "representation", "removal", "cooccurrence"}
    assert {x["axis"] for x in report["lexicons"]} >= {"gender", "toxicity"}
    assert "d000" not in res.stdout and "walked" not in res.stdout  # no document ids, no text
    res = subprocess.run([*CURATE, "bias", str(constructed.path)], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"})
    assert res.returncode == 0, res.stderr
    flagged = [line.split("\u2502") for line in res.stdout.splitlines() if "drop-marked" in line]
    # Only flagged rows by default: fewer removed among older people, more among women (and toxic documents).
    assert [(cells[4].strip(), cells[-2].strip()) for cells in flagged] == [
        ("older", "under"), ("female", "over"), ("insult", "over")]


def test_editing_a_lexicon_recomputes_the_stage(ws, tmp_path, demo_lexicons):
    ws.ingest([str(write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": "A man and a boy."}]))])
    rules = tmp_path / "rules.toml"
    rules.write_text(f'[stages.bias]\nlexicons = "{demo_lexicons}"\n')
    ws.run(stages=["bias"], rules=rules)
    before = ws.sql("SELECT group_name, count FROM bias_terms ORDER BY 1").rows()
    (demo_lexicons / "demo.toml").write_text(DEMO.replace('men = ["man", "men"]', 'men = ["man", "men", "boy"]'))
    ws.run(stages=["bias"], rules=rules)
    assert before == [("men", 1)]
    assert ws.sql("SELECT group_name, count FROM bias_terms ORDER BY 1").rows() == [("men", 2)]
    assets = json.loads((ws.path / "manifest" / "run.json").read_text())["stages"]
    bias = next(s for s in assets if s["name"] == "bias")
    assert [a["version"] for a in bias["assets"]] == ["demo 1"] and bias["current"]


def test_the_report_needs_bias_signals(ws):
    with pytest.raises(WorkspaceError, match="no bias signals"):
        ws.bias()


def test_bias_on_the_samples(sample_ws):
    w = Workspace(sample_ws)
    r = w.bias()
    assert r.sample["documents_in_report"] == r.sample["documents"] > 0
    assert r.sample["lexicons_current"]
    run = json.loads((sample_ws / "manifest" / "run.json").read_text())
    assets = next(s for s in run["stages"] if s["name"] == "bias")["assets"]
    assert sorted(a["sha256"] for a in assets) == sorted(r.lexicons["sha256"].to_list())
    assert all(a["path"].startswith("rules/lexicons/") for a in assets)
    assert (rules_dir() / "lexicons" / "gender.toml").exists()
    ids = set(w.sql("SELECT doc_id FROM documents")["doc_id"].to_list())
    text = json.dumps(r.to_dict())
    assert not any(f'"{i}"' in text for i in ids)
    assert {"bias_tokens", "bias_toxic_terms", "bias_toxic_per_1k", "bias_groups"} <= set(
        w.sql("SELECT * FROM signals LIMIT 0").columns)
