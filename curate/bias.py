"""Old import path `curate.bias`, kept for users and notebooks: the module is `curate.stages.bias`."""

import sys

from curate.stages import bias as _module

sys.modules[__name__] = _module
