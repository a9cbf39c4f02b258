"""Licences: full texts and notices found by template matching, classified by use."""

from curate.stages.licenses.stage import Licenses

__all__ = ["Licenses"]
