"""Duplicate detection: exact (normalised-text hash) and near (MinHash LSH)."""

from .exact import ExactDedup

__all__ = ["ExactDedup"]
