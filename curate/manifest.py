"""Old import path `curate.manifest`, kept for users and notebooks: the module is `curate.core.manifest`."""

import sys

from curate.core import manifest as _module

sys.modules[__name__] = _module
