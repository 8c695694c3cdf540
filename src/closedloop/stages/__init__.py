"""Pipeline stages, one module or package per stage. Importing this registers the built-ins."""

from closedloop.stages import audit, load_data, task  # noqa: F401
from closedloop.stages import export  # noqa: F401
from closedloop.stages import train  # noqa: F401
from closedloop.stages import baseline  # noqa: F401
from closedloop.stages import monitor  # noqa: F401
