"""Old import path `curate.workspace`, kept for users and notebooks: the module is `curate.core.workspace`."""

import sys

from curate.core import workspace as _module

sys.modules[__name__] = _module
