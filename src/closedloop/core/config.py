"""Configuration: pydantic models, YAML loading, ``--set`` overrides and readable errors.

Every stage and data source has its own config model (``extra="forbid"``), so a misspelled key fails
with the file, the dotted path, the bad value, what was expected and a "did you mean".
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from closedloop.core.errors import ConfigError


class StageConfig(BaseModel):
    """Base of every stage's config: unknown keys fail, values are frozen after validation."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, use_attribute_docstrings=True, protected_namespaces=()
    )


class PluginSpec(BaseModel):
    """One configured plug-in (audit check, baseline, drift test): a registered name or
    ``pkg.module:Class``, and its params."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def parts(spec: str | PluginSpec) -> tuple[str, dict[str, Any]]:
        """``"name"`` or ``{name, params}`` -> (name, params)."""
        return (spec, {}) if isinstance(spec, str) else (spec.name, dict(spec.params))


class StageSpec(BaseModel):
    """One entry of a pipeline's ``stages:`` list."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: str
    """Registry key (``train``) or import path (``my_pkg.stages:MyStage``)."""
    name: str | None = None
    """Name in the run directory and summary; defaults to the kind's key."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Validated by the stage's own config model."""
    inputs_from: dict[str, str] = Field(default_factory=dict)
    """Input port -> the earlier artifact that feeds it, when the names differ (``{data: clean_data}``
    trains on the audit's de-duplicated bundle); unnamed ports take the artifact of their own name."""


class PipelineSpec(BaseModel):
    """The top level of a pipeline YAML file."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Pipeline name; runs go to ``<runs_dir>/<name>/``."""
    seed: int = 0
    """Seed for every stage (each stage derives its own from it)."""
    runs_dir: str = "runs"
    """Where run directories are created (relative to the working directory)."""
    data: dict[str, Any]
    """Data source: ``source`` names it, the other keys are its config."""
    stages: list[StageSpec]
    """Stages in order; each names a ``kind`` and its ``params``."""
    tracking: dict[str, Any] | None = None
    """Experiment tracking, e.g. ``{backend: mlflow, uri: sqlite:///mlflow.db}``; off when omitted.
    Checked by the tracking callback's own config (:class:`closedloop.tracking.config.TrackingSpec`):
    core does not know the trackers."""
    callbacks: list[str] = Field(default_factory=list)
    """Extra pipeline callbacks, by registry name or import path (``my_pkg.hooks:Notify``), called
    after the default ones (the HTML report, and the tracker when ``tracking`` is set)."""


def _fmt_value(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(
    exc: ValidationError, model: type[BaseModel], *, where: str, prefix: str = ""
) -> str:
    """Turn a pydantic error into lines ``where: field.path: got X; expected Y (did you mean Z?)``."""
    lines = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        path = ".".join(([prefix] if prefix else []) + loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(model, err["loc"][:-1])
            known = sorted(parent.model_fields) if parent else []
            hint = difflib.get_close_matches(loc[-1], known, n=1)
            msg = f"unknown key {loc[-1]!r}"
            msg += f" (did you mean {hint[0]!r}?)" if hint else ""
            msg += f"; allowed keys: {', '.join(known)}" if known else ""
        elif kind == "missing":
            msg = "required field is missing"
        elif kind == "value_error":  # a validator's own sentence already says what was expected
            msg = f"got {_fmt_value(err.get('input'))}: {err['msg'].removeprefix('Value error, ')}"
        else:
            msg = (
                f"got {_fmt_value(err.get('input'))}; expected {err['msg'].removeprefix('Input should be ')}"
            )
        lines.append(f"{where}: {path}: {msg}")
    return "\n".join(lines)


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _unwrap_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _unwrap_model(tp: Any) -> Any:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in getattr(tp, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def validate_model(model: type[BaseModel], data: Any, *, where: str, prefix: str = "") -> Any:
    """Validate ``data`` against ``model``; raise :class:`ConfigError` with readable lines."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, model, where=where, prefix=prefix)) from None


def load_yaml_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; malformed YAML names the file, line and column."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"{path}: is a directory; expected a YAML config file (e.g. configs/quickstart.yaml)"
        )
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8); "
            "expected a YAML config file"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}: malformed YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}: expected a mapping at the top level (name, data, stages), got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.max_epochs=3`` -> (["train", "max_epochs"], 3); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.max_epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides to a raw pipeline mapping.

    The first part names a top-level key (``name``, ``seed``, ``data``...) or a stage by its name
    or kind; the rest is a path inside that stage's ``params``. Types come from the schema when the
    result is validated.
    """
    import copy

    out = copy.deepcopy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        head, rest = parts[0], parts[1:]
        stage = _find_stage(out.get("stages") or [], head)
        if stage is not None:
            if not rest:
                raise ConfigError(
                    f"--set {text!r}: name a field of stage {head!r}, e.g. {head}.<field>=VALUE"
                )
            target = stage.setdefault("params", {})
        elif head in PipelineSpec.model_fields:
            if not rest:
                out[head] = value
                continue
            target = out.setdefault(head, {})
        else:
            names = [s.get("name") or s.get("kind") for s in out.get("stages") or []]
            hint = difflib.get_close_matches(head, names + list(PipelineSpec.model_fields), n=1)
            msg = f"--set {text!r}: {head!r} is neither a stage ({', '.join(map(str, names))}) nor a top-level key"
            raise ConfigError(msg + (f" (did you mean {hint[0]!r}?)" if hint else ""))
        for part in rest[:-1]:
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text!r}: {part!r} is not a mapping (it is {nxt!r})")
            target = nxt
        target[rest[-1]] = value
    return out


def _find_stage(stages: list[dict[str, Any]], head: str) -> dict[str, Any] | None:
    for s in stages:
        if isinstance(s, dict) and (s.get("name") or s.get("kind")) == head:
            return s
    for s in stages:
        if isinstance(s, dict) and s.get("kind") == head:
            return s
    return None
