"""Built-in model families (importing this registers them)."""
