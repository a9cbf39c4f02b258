"""Personal data: Presidio's recognizers and our secret patterns; where, never what."""

from curate.stages.pii.stage import PiiDetector

__all__ = ["PiiDetector"]
