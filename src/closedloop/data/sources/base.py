"""The data source contract: a config model and one method, ``load(seed) -> DatasetBundle``."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from closedloop.core.config import validate_model
from closedloop.data.bundle import DatasetBundle


class SourceConfig(BaseModel):
    """Base of every source's config: unknown keys fail."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, protected_namespaces=()
    )


class DataSource:
    """Produces a :class:`DatasetBundle`. Subclass, set ``Config``, implement :meth:`load`, and
    register with ``@register_source("name")``."""

    key: ClassVar[str] = ""
    Config: ClassVar[type[SourceConfig]] = SourceConfig

    def __init__(self, config: SourceConfig | dict[str, Any] | None = None, **params: Any) -> None:
        data = config.model_dump() if isinstance(config, SourceConfig) else dict(config or {})
        self.config = validate_model(
            type(self).Config, {**data, **params}, where=f"data source {type(self).key!r}", prefix="data"
        )

    def load(self, seed: int) -> DatasetBundle:
        """Read (or download) the data and return train/val/test splits with metadata."""
        raise NotImplementedError
