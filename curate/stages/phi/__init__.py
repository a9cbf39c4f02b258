"""Health data: medical record and health-plan numbers, NHS numbers, Medicare MBIs near diagnoses and drugs."""

from curate.stages.phi.stage import Phi

__all__ = ["Phi"]
