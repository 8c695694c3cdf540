"""Moved to :mod:`closedloop.monitoring.drift`. This name stays so drift-test plug-ins written against
``closedloop.stages.monitor.drift`` (the path docs/extending.md gave before the move) keep importing;
new code imports ``closedloop.monitoring.drift``. The names are that package's ``__all__``, listed once there."""

from closedloop.monitoring.drift import *  # noqa: F403
from closedloop.monitoring.drift import __all__  # noqa: F401
