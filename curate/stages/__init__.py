"""The detectors, one package per stage (`stages/<name>/stage.py` holds its Detector).

`curate.stages` is also the old import path of the stage contract: `from curate.stages import Detector,
register` keeps working (the contract lives in `curate.core.stage`).
"""

from curate.core.stage import REGISTRY, Detector, detectors, instances, load_builtin, ordered, register

__all__ = ["REGISTRY", "Detector", "detectors", "instances", "load_builtin", "ordered", "register"]
