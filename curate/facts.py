"""Old import path `curate.facts`, kept for users and notebooks: the module is `curate.audit.facts`."""

import sys

from curate.audit import facts as _module

sys.modules[__name__] = _module
