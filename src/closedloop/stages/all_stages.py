"""Import every built-in stage so that it registers itself (the stage registry imports this module)."""

from closedloop.stages import (  # noqa: F401
    audit,
    baseline,
    export,
    load_data,
    task,
    train,
)
from closedloop.stages.monitor import stage as monitor_stage  # noqa: F401
