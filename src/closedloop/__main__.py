"""``python -m closedloop`` is the same as the ``closedloop`` command."""

import sys

from closedloop.cli import main

sys.exit(main())
