"""``python -m tzcrawl``: the ``tzcrawl`` command."""

import sys

from tzcrawl.cli import main

sys.exit(main())
