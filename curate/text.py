"""Old import path `curate.text`, kept for users and notebooks: the module is `curate.util.text`."""

import sys

from curate.util import text as _module

sys.modules[__name__] = _module
