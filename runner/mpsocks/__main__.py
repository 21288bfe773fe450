"""``python -m mpsocks``: the same as ``mpsocks-run``."""

import sys

from mpsocks.cli import main

sys.exit(main())
