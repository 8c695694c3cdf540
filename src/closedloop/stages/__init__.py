"""Pipeline stages, one module or package per stage. Importing this registers the built-ins."""

from closedloop.stages import (  # noqa: F401
    audit,
    baseline,  # noqa: F401
    export,  # noqa: F401
    load_data,
    monitor,  # noqa: F401
    task,
    train,  # noqa: F401
)
