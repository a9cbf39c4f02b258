"""Bias: lexicon mentions per group, and the bias report of the policy's own removals."""

from curate.stages.bias.stage import BiasReport, BiasTerms, report

__all__ = ["BiasReport", "BiasTerms", "report"]
