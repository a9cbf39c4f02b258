"""Quality and language: Gopher/C4/FineWeb metrics, fastText language id and a learned quality score."""

from curate.stages.quality.stage import Quality, score, train

__all__ = ["Quality", "score", "train"]
