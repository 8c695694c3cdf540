"""Metrics and statistics used by every stage.

* :mod:`~closedloop.stats.metrics` - metrics (MedMNIST-compatible or standard), vectorized over resamples
* :mod:`~closedloop.stats.bootstrap` - stratified, seeded bootstrap confidence intervals
* :mod:`~closedloop.stats.paired` - paired comparison of two models (bootstrap, DeLong, McNemar)
* :mod:`~closedloop.stats.multiple` - Holm adjustment
* :mod:`~closedloop.stats.business` - operating threshold by expected cost, "per day" framing
* :mod:`~closedloop.stats.gate` - "does the model beat the baseline?"
"""

from closedloop.stats.errors import StatsError

__all__ = ["StatsError"]
