"""Licences: full texts and notices found by template matching, classified by use.

Modules: `expressions.py` (SPDX expressions, use classes), `fulltext.py` (full texts by similarity), `notices.py`
(notices and markers, `scan`), `scanner.py` (rules files, `Scanner`), `stage.py` (the Detector).
"""

from curate.stages.licenses.stage import Licenses

__all__ = ["Licenses"]
