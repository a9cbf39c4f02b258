"""Confidential documents: classification banners and handling markers (CONFIDENTIAL, SECRET//NOFORN, NDA, ...)."""

from curate.stages.confidential.stage import Confidential

__all__ = ["Confidential"]
