"""``python -m closedloop.serving serve RUN_DIR ...``: the service's CLI without the training stack."""

from closedloop.serving.cli import main

raise SystemExit(main())
