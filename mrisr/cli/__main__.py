"""``python -m mrisr.cli``: the same as the ``mrisr`` command."""

import sys

from mrisr.cli import main

sys.exit(main())
