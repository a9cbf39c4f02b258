"""Old import path `curate.dedup.minhash`, kept for users: the module is `curate.stages.dedup_fuzzy.minhash`."""

import sys

from curate.stages.dedup_fuzzy import minhash as _module

sys.modules[__name__] = _module
