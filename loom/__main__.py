"""``python -m loom``: the same as the ``loom`` command (needed under torchrun)."""

import sys

from loom.cli import main

sys.exit(main())
