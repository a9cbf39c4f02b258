"""Near duplicates: MinHash signatures, LSH bands in DuckDB, verified edges, clusters."""

from curate.stages.dedup_fuzzy import minhash
from curate.stages.dedup_fuzzy.stage import FuzzyDedup

__all__ = ["FuzzyDedup", "minhash"]
