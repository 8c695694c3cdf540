"""Model families, one file per family."""
