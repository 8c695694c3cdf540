"""Adaptation: a deployed model re-fitted to production from a few production labels, judged on
production by the one promotion rule (``closedloop adapt RUN LABELS``; see :mod:`.run`)."""
