"""Core: config, stage contract, artifacts, registry, pipeline, run directory."""
