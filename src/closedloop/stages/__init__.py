"""Pipeline stages, one module or package per stage. Importing this registers the built-ins."""

from closedloop.stages import load_data, task  # noqa: F401
