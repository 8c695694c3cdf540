"""Metrics and statistics used by every stage."""
