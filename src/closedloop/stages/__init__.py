"""Pipeline stages, one module or package per stage. Importing this registers the built-ins."""
