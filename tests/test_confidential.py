"""The `confidential` stage: classification banners and handling markers, where they stand, the default drop rule."""

from __future__ import annotations

import re

import pyarrow as pa
import pytest
from conftest import write_jsonl

from curate.core.errors import ConfigError
from curate.stages.confidential.markers import edges, load_markers, markers_path
from curate.stages.confidential.stage import Confidential

MARKERS = load_markers(markers_path())
BODY = ("The build system reads its configuration from the project file and writes the outputs to the build\n"
        "directory. Each target names its sources and the libraries it links against, one per line.\n")


def body(n: int = 4) -> str:
    return BODY * n


@pytest.mark.parametrize("marker", MARKERS.markers, ids=lambda m: m.id)
def test_each_marker_finds_its_examples_and_not_its_counter_examples(marker):
    prefilter = re.compile(MARKERS.prefilter, re.I)
    assert marker.examples, f"{marker.id} has no example"
    for example in marker.examples:
        assert prefilter.search(example), f"the anchors miss {example!r}"
        found = [f for f in MARKERS.scan(example) if f.marker == marker.id]
        assert found, f"{marker.id} misses {example!r}"
        assert all(found[0].kind == marker.kind for _ in found)
    for counter in marker.counter_examples:
        text = body() + counter + "\n" + body()  # in the middle of prose: neither header nor footer
        assert MARKERS.scan(text) == [], f"{counter!r} was taken for a marker"


@pytest.mark.parametrize("text", [
    "Please keep your password confidential and change it every 90 days.",
    "The recipient shall hold the Confidential Information in confidence and use it only for the Purpose.",
    "Our privacy policy explains how we keep your personal data confidential.",
    "This function is for internal use only.",
    "Do not distribute modified versions under the original name.",
    "SSH keeps the private key secret; the public key may be shared.",
    "Trade secret law protects information that derives value from not being generally known.",
    "A non-disclosure agreement (NDA) is a legal contract between two parties.",
])
def test_prose_about_confidentiality_is_not_a_marker(text):
    for doc in (body() + text + "\n" + body(), text + "\n" + body(), body() + text):
        assert MARKERS.scan(doc) == [], doc


def test_positions_banner_lines_and_exact_offsets():
    text = ("ACME CORP - CONFIDENTIAL\n\n" + body(3) + "As agreed, this document contains trade secrets of Acme Corp. "
            "It describes the next\nrelease.\n" + body(3) + "Page 2 of 9   INTERNAL USE ONLY\n")
    found = MARKERS.scan(text)
    got = [(f.marker, f.position, f.banner) for f in found]
    assert got == [("confidential", "header", True), ("trade-secret", "body", False),
                   ("internal-use-only", "footer", True)]
    assert [text[f.start:f.end] for f in found] == ["CONFIDENTIAL", "this document contains trade secrets",
                                                    "INTERNAL USE ONLY"]
    prose = found[1]
    assert prose.score == pytest.approx(0.9 * MARKERS.inline_factor)  # inside prose the score is lowered
    assert found[0].score == 0.9


def test_edges_count_non_blank_lines():
    text = "a\n\nb\nc\nd\ne\n\nf\n"
    head, tail = edges(text, 2)
    assert text[:head] == "a\n\nb" and text[tail:] == "e\n\nf\n"
    assert edges("", 3) == (0, 0)


def test_a_marker_inside_the_body_must_stand_on_a_banner_line():
    header_only = "STRICTLY CONFIDENTIAL"
    assert [f.marker for f in MARKERS.scan(header_only + "\n" + body())] == ["strictly-confidential"]
    # the same words inside a long prose line of the body are not a marker (`where = "edge"`)
    line = "the committee discussed the strictly confidential handling of the minutes at length yesterday evening"
    assert MARKERS.scan(body() + line.upper().replace("STRICTLY", "and STRICTLY") + "\n" + body()) == []


def test_the_stage_writes_spans_for_a_batch():
    texts = ["CONFIDENTIAL\n" + body(), body(), None, "SECRET//NOFORN\n" + body() + "SECRET//NOFORN"]
    batch = pa.RecordBatch.from_pydict({"doc_id": ["a", "b", "c", "d"], "text": texts})
    rows = Confidential()(batch).to_pylist()
    assert [(r["doc_id"], r["marker"], r["position"]) for r in rows] == [
        ("a", "confidential", "header"), ("d", "government-banner", "header"), ("d", "government-banner", "footer")]
    empty = Confidential()(pa.RecordBatch.from_pydict({"doc_id": ["b"], "text": [body()]}))
    assert empty.num_rows == 0 and empty.schema.names[:2] == ["doc_id", "marker"]


def test_the_default_policy_drops_marked_documents_and_keeps_prose(ws, tmp_path):
    docs = [
        {"id": "banner", "text": "CONFIDENTIAL\n\n" + body()},
        {"id": "internal", "text": body() + "\n*** INTERNAL USE ONLY ***\n"},
        {"id": "trade", "text": body(2) + "This document contains trade secrets of Initech and is\nprovided for "
                                          "review.\n" + body(2)},
        {"id": "mail", "text": "Hi team,\nthe numbers are attached.\n\nThis e-mail and any attachments are "
                               "confidential and intended solely for the addressee.\n"},
        {"id": "prose", "text": "Keep your password confidential.\n" + body()},
        {"id": "licence", "text": "Each party shall keep the other party's Confidential Information confidential "
                                  "and use it only to perform this Agreement.\n" + body()},
    ]
    ws.ingest([str(write_jsonl(tmp_path / "c.jsonl", docs))])
    ws.run(stages=["confidential"])
    got = dict(ws.sql("SELECT doc_id, action FROM decisions").rows())
    assert got == {"banner": "drop", "internal": "drop", "trade": "drop", "mail": "drop", "prose": "keep",
                   "licence": "keep"}
    rules = ws.sql("SELECT list_contains(rule_ids, 'confidential-marker') FROM decisions WHERE action = 'drop'")
    assert all(r[0] for r in rules.rows())
    kinds = dict(ws.sql("SELECT doc_id, confidential_kinds FROM signals WHERE confidential_markers > 0").rows())
    assert kinds == {"banner": ["classification"], "internal": ["handling"], "trade": ["trade_secret"],
                     "mail": ["disclaimer"]}


def test_a_broken_marker_file_is_refused_naming_it(tmp_path):
    bad = tmp_path / "m.toml"
    text = markers_path().read_text()
    bad.write_text(text.replace('kind = "handling"', 'kind = "secretish"', 1))
    with pytest.raises(ConfigError, match=r"m\.toml: marker 'internal-use-only': kind 'secretish'"):
        Confidential({"markers": str(bad)})
    bad.write_text(text.replace("pattern = '''(?:FOR", "pattern = '''(?:FOR(", 1))
    with pytest.raises(ConfigError, match=r"m\.toml: marker 'internal-use-only': bad pattern"):
        Confidential({"markers": str(bad)})
    with pytest.raises(ConfigError, match=r"unknown setting marker;"):
        Confidential({"marker": "x"})


def test_editing_the_marker_file_changes_the_fingerprint(tmp_path):
    copy = tmp_path / "m.toml"
    copy.write_text(markers_path().read_text())
    before = Confidential({"markers": str(copy)}).fingerprint()
    assert Confidential({"markers": str(copy)}).fingerprint() == before
    copy.write_text(markers_path().read_text().replace("score = 0.85", "score = 0.8", 1))
    assert Confidential({"markers": str(copy)}).fingerprint() != before
    assert Confidential().assets()[0]["sha256"] == MARKERS.sha256
