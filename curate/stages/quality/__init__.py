"""Quality and language: Gopher/C4/FineWeb metrics, fastText language id and a learned quality score.

Modules: `datatrove.py` (the definitions copied from DataTrove, and the default rules per DataTrove filter),
`words.py` (tokenisation), `metrics.py` (the metrics), `model.py` (fastText models), `train.py` (training and
ad-hoc scoring), `stage.py` (the Detector).
"""

from curate.stages.quality.stage import Quality
from curate.stages.quality.train import score, train

__all__ = ["Quality", "score", "train"]
