"""Exact duplicates: documents whose normalised text hashes the same."""

from curate.stages.dedup_exact.stage import ExactDedup

__all__ = ["ExactDedup"]
