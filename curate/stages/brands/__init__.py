"""Brand guardrails: mentions of a brand and its competitors, and the terms the brand is mentioned next to."""

from curate.stages.brands.stage import Brands

__all__ = ["Brands"]
