"""Old import path `curate.optout`, kept for users and notebooks: the module is `curate.stages.optout`."""

import sys

from curate.stages import optout as _module

sys.modules[__name__] = _module
