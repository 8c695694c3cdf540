"""Metrics and statistics used by every stage.

* :mod:`~closedloop.stats.metrics` - metrics (MedMNIST-compatible or standard), vectorized over resamples
* :mod:`~closedloop.stats.bootstrap` - stratified, seeded bootstrap confidence intervals
* :mod:`~closedloop.stats.paired` - paired comparison of two models (bootstrap, DeLong, McNemar)
* :mod:`~closedloop.stats.multiple` - Holm adjustment (over hypotheses tested on the same data)
* :mod:`~closedloop.stats.selection` - selection bias of the best-of-N validation score
* :mod:`~closedloop.stats.business` - operating threshold by expected cost, "per day" framing
* :mod:`~closedloop.stats.gate` - "does the model beat the baseline?" (the declared test comparison)
* :mod:`~closedloop.stats.promotion` - the champion/challenger promotion rule (``decide_promotion``)
* :mod:`~closedloop.stats.promotion_arguments` - that rule's command-line flags (no numpy: ``--help`` stays light)
"""

from closedloop.stats.errors import StatsError

__all__ = ["StatsError"]
