"""Old import path `curate.dedup` (its `minhash` included), kept for users and notebooks: the stages are
`curate.stages.dedup_exact` and `curate.stages.dedup_fuzzy`."""

from curate.stages.dedup_exact import ExactDedup
from curate.stages.dedup_fuzzy import FuzzyDedup

__all__ = ["ExactDedup", "FuzzyDedup"]
