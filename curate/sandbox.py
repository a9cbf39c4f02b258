"""Old import path `curate.sandbox`, kept for users and notebooks: the module is `curate.audit.sandbox`."""

import sys

from curate.audit import sandbox as _module

sys.modules[__name__] = _module
