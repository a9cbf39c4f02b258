from __future__ import annotations

from conftest import doc, v1_workspace, write_jsonl

from curate import Workspace
from curate.core.schema import SCHEMA_VERSION


def test_a_version_1_workspace_with_documents_migrates_and_keeps_working(tmp_path):
    path = v1_workspace(
        tmp_path / "old",
        """INSERT INTO shards VALUES ('s1', '/x/old.jsonl', 'old.jsonl', 'jsonl', 'ab', 10, 2, 2, 0, 'ok',
           now()::TIMESTAMP)""",
        """INSERT INTO documents VALUES ('a', 1, 's1', 0, NULL, NULL, 'café au lait', 'h1', NULL),
                                       ('b', 2, 's1', 1, NULL, NULL, ' \n\t ', 'h2', NULL)""")
    ws = Workspace(path)
    ws.ingest([str(write_jsonl(tmp_path / "new.jsonl", [doc(1)]))])  # the first write migrates
    assert ws.sql("SELECT value FROM meta WHERE key = 'schema_version'").item() == str(SCHEMA_VERSION)
    rows = ws.sql("SELECT doc_id, chars, bytes, blank FROM documents ORDER BY seq").rows()
    assert rows[:2] == [("a", 12, 13, False), ("b", 4, 4, True)]
    assert rows[2][0] == "doc-1" and rows[2][1] == len(doc(1)["text"]) and rows[2][3] is False
    ws.run()
    assert ws.sql("SELECT action FROM decisions WHERE doc_id = 'b'").item() == "drop"  # empty-text
