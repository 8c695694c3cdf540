"""The stage contract.

A stage declares a config model, typed ``Inputs`` and ``Outputs`` (artifacts), and implements one
method, :meth:`Stage.run`. The framework owns :meth:`Stage.execute` (check inputs, seed, run, check
outputs); do not override it. Optional hooks: :meth:`Stage.summarize` (headline figures for
``summary.json``) and :meth:`Stage.report` (blocks for ``report.html``); both work from the saved
outputs, so a cached stage still reports.

Example:
    >>> from closedloop.core.stage import Stage, StageIO
    >>> from closedloop.core.config import StageConfig
    >>> from closedloop.core.artifacts import JsonArtifact
    >>> class Count(JsonArtifact):
    ...     n: int
    >>> class CountConfig(StageConfig):
    ...     offset: int = 0
    >>> class CountThings(Stage):
    ...     Config = CountConfig
    ...     class Inputs(StageIO):
    ...         pass
    ...     class Outputs(StageIO):
    ...         count: Count
    ...     def run(self, inputs, ctx):
    ...         return self.Outputs(count=Count(n=3 + self.config.offset))
    >>> CountThings(offset=1).config.offset
    1
"""

from __future__ import annotations

import inspect
import logging
import random
import time
import types
import typing
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Union

import numpy as np
from pydantic import BaseModel, ConfigDict

from closedloop.core.artifacts import Artifact
from closedloop.core.config import StageConfig, validate_model
from closedloop.core.errors import ConfigError, WiringError
from closedloop.core.ledger import Purpose, TestLedger, ValidationLedger

_TEST_TOKEN = object()
log = logging.getLogger("closedloop")


class StageIO(BaseModel):
    """Declared inputs or outputs of a stage: each field is an artifact (``X | None`` = optional)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")


@dataclass(frozen=True)
class Port:
    """One declared input or output."""

    name: str
    type: type
    required: bool


def _ports(io: type[StageIO]) -> list[Port]:
    hints = typing.get_type_hints(io)
    ports = []
    for name, fld in io.model_fields.items():
        tp = hints.get(name, fld.annotation)
        required = fld.is_required()
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                raise TypeError(f"{io.__qualname__}.{name}: a port is one artifact type or 'Type | None'")
            tp = args[0]
            required = False
        ports.append(Port(name, tp, required))
    return ports


@dataclass
class RunContext:
    """What a running stage may use: its folders, seed, progress bars, logger and the ledgers."""

    stage_name: str
    stage_dir: Path
    seed: int
    fingerprint: str = ""
    run_dir: Path | None = None
    test_ledger: TestLedger | None = None
    validation_ledger: ValidationLedger | None = None
    progress_enabled: bool = False
    logger: logging.Logger = field(default_factory=lambda: log)
    timings: dict[str, float] = field(default_factory=dict)
    """Wall times by label (``ctx.timed("fit knn")``): saved in the manifest, stage.json and summary,
    never inside artifacts, so that artifacts (and the fingerprints built on them) stay deterministic."""
    _opened: list[dict[str, Any]] = field(default_factory=list)

    @property
    def figures_dir(self) -> Path:
        """Where the stage writes pictures (``figures/`` in its folder)."""
        p = self.stage_dir / "figures"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def work_dir(self) -> Path:
        """Scratch space that survives a crash (checkpoints); kept in the stage's folder."""
        p = self.stage_dir / "work"
        p.mkdir(parents=True, exist_ok=True)
        return p

    @contextmanager
    def timed(self, label: str) -> Iterator[None]:
        """Add the wall time of the ``with`` block to ``timings[label]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.timings[label] = round(self.timings.get(label, 0.0) + time.perf_counter() - t0, 3)

    def rng(self, salt: str = "") -> np.random.Generator:
        """A generator seeded from the run seed, the stage and ``salt``: reproducible and independent."""
        from zlib import crc32

        return np.random.default_rng([self.seed, crc32(f"{self.stage_name}/{salt}".encode())])

    def progress(
        self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = ""
    ) -> Iterator[Any]:
        """A tqdm progress bar when enabled (a terminal, not CI), else the plain iterable."""
        from tqdm.auto import tqdm

        return tqdm(
            iterable,
            total=total,
            desc=desc or self.stage_name,
            disable=not self.progress_enabled,
            leave=False,
        )

    def open_test(self, data: Any, *, reason: str, purpose: Purpose = "evaluation") -> Any:
        """Return ``data``'s test split and record the opening in the test ledger.

        ``purpose="evaluation"`` (scoring a model) is allowed once per pipeline fingerprint;
        ``purpose="audit"`` (looking at inputs for overlap/shift, no model scored) is recorded too.
        """
        if self.test_ledger is not None:
            rec = self.test_ledger.open(
                stage=self.stage_name, fingerprint=self.fingerprint, purpose=purpose, reason=reason
            )
            self._opened.append(rec)
        return data.unsealed_test(_TEST_TOKEN)

    def record_validation(self, description: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Add one evaluated configuration to the validation ledger ("selected among N")."""
        if self.validation_ledger is not None:
            self.validation_ledger.record(
                stage=self.stage_name, description=description, params=params, metrics=metrics
            )


def stage_timings(stage_dir: Path) -> dict[str, float]:
    """The wall times a finished stage recorded with ``ctx.timed`` (from its ``stage.json``)."""
    path = Path(stage_dir) / "stage.json"
    if not path.is_file():
        return {}
    import json

    return dict(json.loads(path.read_text(encoding="utf-8")).get("timings", {}))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # torch is a dependency, but keep the core importable without it
        pass


class Stage:
    """Base class of every pipeline stage. Subclasses set ``Config``, ``Inputs``, ``Outputs`` and
    implement :meth:`run`. Constructing a stage only stores its config (no I/O)."""

    key: ClassVar[str] = ""
    """Registry key (set by :func:`~closedloop.core.registry.register_stage`)."""
    version: ClassVar[str] = "1"
    """Bump to invalidate cached results when the stage's logic changes."""
    nondeterministic_outputs: ClassVar[tuple[str, ...]] = ()
    """Output ports that legitimately differ between identical runs (e.g. they hold measured
    latencies); the common determinism check skips them."""
    scores_on_test: ClassVar[bool] = False
    """True when the stage opens the test split to score a model (``purpose="evaluation"``): the
    pipeline then refuses it before it runs, not after its work, when this exact pipeline's test split
    was already opened by another run (:meth:`~closedloop.core.ledger.TestLedger.refuse_if_sealed`)."""
    Config: ClassVar[type[StageConfig]] = StageConfig
    Inputs: ClassVar[type[StageIO]] = StageIO
    Outputs: ClassVar[type[StageIO]] = StageIO
    pipeline_home: Path | None = None
    """``<runs_dir>/<name>/`` of the pipeline this stage belongs to (set by the Pipeline), where files
    shared by all its runs live: the test ledger, a measured human reference. None outside a pipeline."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "execute" in cls.__dict__:
            raise TypeError(f"{cls.__qualname__}: do not override execute(); implement run() and the hooks")
        if inspect.isabstract(cls) or cls.__dict__.get("__abstract__", False):
            return
        if cls.run is Stage.run:
            return  # an intermediate base class; checked when a concrete subclass is defined
        for attr, base in (("Config", StageConfig), ("Inputs", StageIO), ("Outputs", StageIO)):
            val = getattr(cls, attr)
            if not (isinstance(val, type) and issubclass(val, base)):
                raise TypeError(f"{cls.__qualname__}.{attr} must be a subclass of {base.__name__}")
        for port in _ports(cls.Inputs) + _ports(cls.Outputs):
            if not (isinstance(port.type, type) and issubclass(port.type, Artifact)):
                raise TypeError(
                    f"{cls.__qualname__}: port {port.name!r} has type {port.type!r}; ports must be Artifact subclasses"
                )

    def __init__(
        self,
        config: StageConfig | dict[str, Any] | None = None,
        /,
        *,
        name: str | None = None,
        inputs_from: dict[str, str] | None = None,
        **params: Any,
    ) -> None:
        if isinstance(config, StageConfig):
            if params:
                config = config.model_copy(update=params)
            self.config = validate_model(
                type(self).Config, config.model_dump(), where=self.display_name(name)
            )
        else:
            merged = {**(config or {}), **params}
            self.config = validate_model(type(self).Config, merged, where=self.display_name(name))
        self.name = name or type(self).key or _snake(type(self).__name__)
        ports = [p.name for p in type(self).input_ports()]
        unknown = sorted(set(inputs_from or {}) - set(ports))
        if unknown:
            raise ConfigError(
                f"{self.display_name(name)}: inputs_from names unknown input port(s) {unknown}; "
                f"its input ports are {ports}"
            )
        self.inputs_from: dict[str, str] = dict(inputs_from or {})
        """Input port -> name of the earlier artifact feeding it (default: the port's own name)."""

    def source_of(self, port: str) -> str:
        """The artifact name that feeds input ``port`` in a pipeline."""
        return self.inputs_from.get(port, port)

    @classmethod
    def display_name(cls, name: str | None = None) -> str:
        return f"stage {name or cls.key or cls.__name__!r}"

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{k}={v!r}"
            for k, v in self.config.model_dump().items()
            if v != type(self).Config.model_fields[k].default
        )
        return f"{type(self).__name__}({fields})"

    def cache_key(self) -> str:
        """Extra fingerprint input for what the config cannot see (e.g. a data file's mtime)."""
        return ""

    # -- ports --------------------------------------------------------------------------------
    @classmethod
    def input_ports(cls) -> list[Port]:
        return _ports(cls.Inputs)

    @classmethod
    def output_ports(cls) -> list[Port]:
        return _ports(cls.Outputs)

    # -- the one required method and the hooks ------------------------------------------------
    def run(self, inputs: Any, ctx: RunContext) -> Any:
        """Compute the outputs from the inputs. Write figures to ``ctx.figures_dir``."""
        raise NotImplementedError

    def check_producers(self, producers: dict[str, Stage]) -> None:
        """A check across stages when the pipeline is built (``closedloop validate``), before any work:
        ``producers`` maps each wired input port to the stage that produces it. Raise
        :class:`~closedloop.core.errors.ConfigError` naming the field. Default: nothing to check."""
        return None

    def summarize(self, outputs: Any) -> dict[str, Any]:
        """Headline figures for ``summary.json`` (``stages.<name>.*``). Default: none."""
        return {}

    def report(self, outputs: Any, stage_dir: Path) -> list[Any]:
        """Blocks for this stage's section of ``report.html``. Default: the summary as key/values."""
        from closedloop.core.blocks import KeyValues

        summary = self.summarize(outputs)
        return [KeyValues(summary)] if summary else []

    # -- driver (final) -----------------------------------------------------------------------
    def execute(self, inputs: StageIO | dict[str, Any], ctx: RunContext) -> Any:
        """Check inputs, seed, run, check outputs. Do not override this: implement :meth:`run`."""
        if isinstance(inputs, dict):
            missing = [p.name for p in self.input_ports() if p.required and inputs.get(p.name) is None]
            if missing:
                raise WiringError(f"stage {self.name!r}: missing required input(s) {missing}")
            for p in self.input_ports():
                val = inputs.get(p.name)
                if val is not None and not isinstance(val, p.type):
                    raise WiringError(
                        f"stage {self.name!r}: input {p.name!r} should be {p.type.__name__}, got {type(val).__name__}"
                    )
            inputs = type(self).Inputs(
                **{k: v for k, v in inputs.items() if k in type(self).Inputs.model_fields}
            )
        seed_everything(ctx.seed)
        outputs = self.run(inputs, ctx)
        if not isinstance(outputs, type(self).Outputs):
            raise TypeError(
                f"stage {self.name!r}: run() must return {type(self).__qualname__}.Outputs, got {type(outputs).__name__}"
            )
        for p in self.output_ports():
            val = getattr(outputs, p.name)
            if p.required and val is None:
                raise TypeError(f"stage {self.name!r}: run() returned no {p.name!r}")
        return outputs


def _snake(name: str) -> str:
    import re

    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
