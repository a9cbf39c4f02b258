"""Duplicate detection: exact (normalised-text hash) and near (MinHash LSH)."""

from .exact import ExactDedup
from .fuzzy import FuzzyDedup

__all__ = ["ExactDedup", "FuzzyDedup"]
