"""The `phi` stage: health identifiers and patient cues near health terms, clinical context, the default drop."""

from __future__ import annotations

import pyarrow as pa
import pytest
from conftest import write_jsonl

from curate.core.errors import ConfigError
from curate.stages.phi.lexicon import Span, lexicon_path, load_lexicon, mark_clinical
from curate.stages.phi.stage import Phi

LEX = load_lexicon(lexicon_path())
NOTE = ("Patient: John Smith   MRN: 00482913   DOB: 04/12/1961\n"
        "NHS number 943 476 5919. Medicare MBI 1EG4-TE5-MK73.\n"
        "Assessment: diagnosed with type 2 diabetes (E11.9). Started metformin 500 mg twice daily.\n")
MAN_PAGE = ("METFORMIN(7)\n\nNAME\n  metformin - oral treatment of type 2 diabetes\n\nDESCRIPTION\n  Metformin lowers "
            "hepatic glucose production. It is used alone or with insulin in diabetes mellitus and is avoided in "
            "renal failure. Patients with heart failure need monitoring. Common interactions include furosemide.\n")
TEXTBOOK = ("Hypertension is the most common risk factor for stroke and heart failure. First-line treatment in most "
            "patients is a thiazide such as hydrochlorothiazide, an ACE inhibitor such as lisinopril, or amlodipine. "
            "The patient's chart should record blood pressure at each visit (ICD-10 I10).\n")


def found(text: str) -> list[tuple[str, str, bool]]:
    return [(s.entity_type, text[s.start:s.end], s.clinical) for s in LEX.scan(text)]


def test_a_clinical_note_is_found_with_exact_spans_and_clinical_context():
    got = found(NOTE)
    assert got == [("PATIENT_CUE", "Patient: John Smith", True), ("MEDICAL_RECORD_NUMBER", "00482913", True),
                   ("PATIENT_CUE", "DOB: 04/12/1961", True), ("UK_NHS", "943 476 5919", True),
                   ("US_MBI", "1EG4-TE5-MK73", True), ("DIAGNOSIS", "type 2 diabetes", True),
                   ("ICD10_CODE", "E11.9", True), ("MEDICATION", "metformin", True)]


@pytest.mark.parametrize("text", [MAN_PAGE, TEXTBOOK])
def test_a_drug_page_or_textbook_passage_is_not_phi(text):
    assert not any(c for _, _, c in found(text))


def test_presidio_numbers_need_their_context_and_checksum():
    no_context = "Patient: John Smith. Build 943 476 5919 was slower than the last; asthma."
    assert "UK_NHS" not in [t for t, _, _ in found(no_context)]  # a valid checksum, but no NHS context word
    assert [t for t, _, _ in found("NHS number 943 476 5918, MRN 1234567, asthma")] == [
        "MEDICAL_RECORD_NUMBER", "DIAGNOSIS"]  # 5918 fails the NHS checksum
    assert "UK_NHS" in [t for t, _, _ in found("NHS number 943 476 5919, asthma")]


def test_health_terms_alone_record_nothing():
    assert LEX.scan("Type 2 diabetes is treated with metformin and insulin.") == []


def test_clinical_needs_the_two_sides_within_the_window():
    far = "MRN: 00482913\n" + ("Lorem ipsum dolor sit amet. " * 40) + "\nasthma\n"
    assert LEX.window < 1000
    assert [c for _, _, c in found(far)] == [False, False]
    spans = [Span("MEDICAL_RECORD_NUMBER", "identifier", 0, 5, 0.9, "x"), Span("DIAGNOSIS", "health", 10, 15, 0.8, "x")]
    assert [s.clinical for s in mark_clinical(spans, 5)] == [False, False]
    assert [s.clinical for s in mark_clinical(spans, 10)] == [True, True]


def test_the_stage_never_stores_a_value():
    rows = Phi()(pa.RecordBatch.from_pydict({"doc_id": ["n", "m"], "text": [NOTE, MAN_PAGE]})).to_pylist()
    assert {r["doc_id"] for r in rows} == {"n"}
    values = {"00482913", "943 476 5919", "1EG4-TE5-MK73", "John Smith"}
    assert not any(v in str(r) for r in rows for v in values)
    assert set(rows[0]) == {"doc_id", "entity_type", "start", "end", "score", "recognizer", "clinical"}


def test_the_default_policy_drops_clinical_notes(ws, tmp_path):
    docs = [{"id": "note", "text": NOTE}, {"id": "man", "text": MAN_PAGE}, {"id": "book", "text": TEXTBOOK},
            {"id": "plain", "text": "Nothing medical here, only a build log."}]
    ws.ingest([str(write_jsonl(tmp_path / "p.jsonl", docs))])
    ws.run(stages=["phi"])
    assert dict(ws.sql("SELECT doc_id, action FROM decisions").rows()) == {
        "note": "drop", "man": "keep", "book": "keep", "plain": "keep"}
    assert ws.sql("SELECT rule_ids FROM decisions WHERE doc_id = 'note'").item().to_list() == ["phi-clinical"]
    sig = ws.sql("SELECT phi_identifiers, phi_patient_cues, phi_health_terms, phi_clinical FROM signals "
                 "WHERE doc_id = 'note'").row(0)
    assert sig == (3, 2, 3, True)
    explained = str(ws.explain("note"))
    assert "00482913" not in explained and "John Smith" not in explained


def test_a_broken_lexicon_is_refused_naming_it(tmp_path):
    bad = tmp_path / "l.toml"
    text = lexicon_path().read_text()
    bad.write_text(text.replace('recognizers = ["UK_NHS"', 'recognizers = ["UK_NHZ"'))
    with pytest.raises(ConfigError, match=r"l\.toml: \[presidio\] recognizers: unknown UK_NHZ"):
        Phi({"lexicon": str(bad)})
    bad.write_text(text.replace("(?P<value>", "(?P<val>", 1))
    with pytest.raises(ConfigError, match=r"l\.toml: \[\[identifiers\]\] MEDICAL_RECORD_NUMBER: .*value"):
        Phi({"lexicon": str(bad)})
    with pytest.raises(ConfigError, match=r"unknown setting lexicons"):
        Phi({"lexicons": "x"})
