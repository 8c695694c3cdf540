"""Built-in data sources (importing this registers them)."""
