"""Built-in data sources (importing this registers them): sklearn, medmnist, image_folder, tabular."""

from closedloop.data.sources import image_folder, medmnist_npz, sklearn_datasets, tabular  # noqa: F401
from closedloop.data.sources.base import DataSource, SourceConfig, SplitFractionsConfig

__all__ = ["DataSource", "SourceConfig", "SplitFractionsConfig"]
