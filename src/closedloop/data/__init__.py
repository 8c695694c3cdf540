"""Data: the dataset bundle and the data sources that produce it."""
