"""Old import path `curate.policy`, kept for users and notebooks: the module is `curate.core.policy`."""

import sys

from curate.core import policy as _module

sys.modules[__name__] = _module
