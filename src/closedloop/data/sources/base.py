"""The data source contract: a config model and one method, ``load(seed) -> DatasetBundle``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from closedloop.core.config import validate_model
from closedloop.data.bundle import DatasetBundle


def _fspath(value: Any) -> Any:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


#: A path option: YAML gives a string, Python may pass a ``pathlib.Path``; stored as ``str``.
PathStr = Annotated[str, BeforeValidator(_fspath)]


class SourceConfig(BaseModel):
    """Base of every source's config: unknown keys fail."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, protected_namespaces=()
    )


class SplitFractionsConfig(SourceConfig):
    """Config fields shared by sources that split the data themselves."""

    val_fraction: float = Field(0.15, gt=0, lt=1)
    """Share of the rows that goes to the validation split (when the data has no splits)."""
    test_fraction: float = Field(0.15, gt=0, lt=1)
    """Share of the rows that goes to the sealed test split (when the data has no splits)."""

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitFractionsConfig:
        if self.val_fraction + self.test_fraction >= 0.95:
            raise ValueError(
                f"val_fraction + test_fraction = {self.val_fraction + self.test_fraction:.2f}; "
                "expected below 0.95 so that the train split keeps data"
            )
        return self


class DataSource:
    """Produces a :class:`DatasetBundle`. Subclass, set ``Config``, implement :meth:`load`, and
    register with ``@register_source("name")``."""

    key: ClassVar[str] = ""
    Config: ClassVar[type[SourceConfig]] = SourceConfig

    def __init__(self, config: SourceConfig | dict[str, Any] | None = None, **params: Any) -> None:
        data = config.model_dump() if isinstance(config, SourceConfig) else dict(config or {})
        self.config = validate_model(
            type(self).Config,
            {**data, **params},
            where=f"data source {type(self).key or type(self).__qualname__!r}",
            prefix="data",
        )

    def load(self, seed: int) -> DatasetBundle:
        """Read (or download) the data and return train/val/test splits with metadata."""
        raise NotImplementedError

    def content_key(self) -> str:
        """A cheap key that changes when the files behind this source change (size and mtime of
        every file named by a ``path``/``root`` field), so an edited file is not served from cache."""
        import os

        parts = []
        for field_name in ("path", "root"):
            value = getattr(self.config, field_name, None)
            if not value:
                continue
            p = Path(os.path.expanduser(str(value)))
            files = [p] if p.is_file() else sorted(p.rglob("*"))[:200_000] if p.is_dir() else []
            for f in files:
                if f.is_file():
                    st = f.stat()
                    parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        return "|".join(parts)
