"""``check_stage``: the battery every stage must pass (like scikit-learn's ``check_estimator``).

``tests/test_common.py`` runs it over every registered stage, so a new stage is tested for free.
Use it on your own stages too::

    from closedloop.core.checks import check_stage
    check_stage(MyAudit(), inputs={"data": bundle, "task": task}, workdir=tmp_path)
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field

from closedloop.core.artifacts import Artifact
from closedloop.core.config import StageConfig
from closedloop.core.errors import ConfigError, WiringError
from closedloop.core.io import hash_tree
from closedloop.core.stage import RunContext, Stage, StageIO


class _GivenConfig(StageConfig):
    token: str = ""
    """Content hash of the given artifacts, so the fingerprint follows them."""
    names: list[str] = Field(default_factory=list)


class GivenArtifacts(Stage):
    """A stage that hands out artifacts made elsewhere (tests, notebooks). Not registered."""

    Config = _GivenConfig
    _store: ClassVar[dict[str, dict[str, Artifact]]] = {}

    class Inputs(StageIO):
        pass

    class Outputs(StageIO):
        pass

    @classmethod
    def of(cls, artifacts: dict[str, Artifact], workdir: Path) -> Stage:
        """Build a stage class whose Outputs match ``artifacts`` and an instance of it."""
        from pydantic import create_model

        hashes = {}
        for name, art in sorted(artifacts.items()):
            d = Path(workdir) / "given" / name
            d.mkdir(parents=True, exist_ok=True)
            art.save(d)
            hashes[name] = hash_tree(d)
        token = "-".join(f"{k}:{v[:12]}" for k, v in hashes.items())
        outputs = create_model(
            "Outputs", __base__=StageIO, **{k: (type(v), ...) for k, v in artifacts.items()}
        )
        sub = type("Given", (cls,), {"Outputs": outputs, "__module__": __name__})
        cls._store[token] = dict(artifacts)
        return sub(token=token, names=sorted(artifacts), name="given")

    def run(self, inputs: Any, ctx: RunContext) -> Any:
        return type(self).Outputs(**self._store[self.config.token])


def _output_hashes(stage: Stage, outputs: Any, root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    hashes = {}
    for port in stage.output_ports():
        art = getattr(outputs, port.name)
        if art is None or port.name in skip:
            continue
        d = root / port.name
        d.mkdir(parents=True, exist_ok=True)
        art.save(d)
        hashes[port.name] = hash_tree(d)
    return hashes


def _differing_files(a: Path, b: Path) -> list[str]:
    """The files (relative paths) whose bytes differ between saved artifacts ``a`` and ``b``, or that
    only one has (an output one run did not produce: every file of the other): what a failed
    determinism check names, so the cause can be found from the log."""
    if not (a.is_dir() and b.is_dir()):
        return [f"{d.parent.name}: not produced" for d in (a, b) if not d.is_dir()]
    rel = sorted(
        {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
        | {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    )
    return [
        str(f)
        for f in rel
        if not ((a / f).is_file() and (b / f).is_file() and (a / f).read_bytes() == (b / f).read_bytes())
    ]


def check_stage(stage: Stage, inputs: dict[str, Artifact], workdir: Path, *, seed: int = 0) -> dict[str, Any]:
    """Run the common contract checks on ``stage`` with ready-made ``inputs``; raise AssertionError
    naming the broken rule. Returns the smoke run's summary (for further assertions)."""
    cls = type(stage)
    workdir = Path(workdir)
    name = cls.__qualname__

    # 1. constructible with defaults (when every config field has one)
    if all(not f.is_required() for f in cls.Config.model_fields.values()):
        cls()
    # 2. config round trip through JSON
    dumped = stage.config.model_dump(mode="json")
    again = cls(**dumped)
    assert again.config == stage.config, f"{name}: config does not survive a JSON round trip"
    # 3. unknown key rejected with a ConfigError that names it
    try:
        cls(**{**dumped, "no_such_option_xyz": 1})
    except ConfigError as exc:
        assert "no_such_option_xyz" in str(exc), f"{name}: unknown-key error does not name the key: {exc}"
    else:
        raise AssertionError(f"{name}: an unknown config key was accepted")
    # 4. picklable, config intact
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.config == stage.config, f"{name}: config changed through pickling"
    # 5. smoke run on tiny data
    ctx_a = RunContext(stage_name=stage.name, stage_dir=workdir / "run_a", seed=seed)
    out_a = stage.execute(dict(inputs), ctx_a)
    assert isinstance(out_a, cls.Outputs), f"{name}: run() did not return Outputs"
    summary = stage.summarize(out_a)
    assert isinstance(summary, dict), f"{name}: summarize() must return a dict"
    # 6. outputs saved and reloaded: a reloaded artifact saves to the same bytes
    hashes_a = _output_hashes(stage, out_a, workdir / "saved_a")
    for port in stage.output_ports():
        if port.name not in hashes_a:
            continue
        loaded = port.type.load(workdir / "saved_a" / port.name)
        again_dir = workdir / "resaved" / port.name
        again_dir.mkdir(parents=True, exist_ok=True)
        loaded.save(again_dir)
        if port.name not in cls.nondeterministic_outputs:
            assert hash_tree(again_dir) == hashes_a[port.name], (
                f"{name}: output {port.name!r} changes through save/load"
            )
    stage.report(out_a, ctx_a.stage_dir)  # the report hook works from saved outputs
    # 7. deterministic with the same seed
    ctx_b = RunContext(stage_name=stage.name, stage_dir=workdir / "run_b", seed=seed)
    out_b = clone.execute(dict(inputs), ctx_b)
    skip = tuple(cls.nondeterministic_outputs)
    hashes_b = _output_hashes(stage, out_b, workdir / "saved_b", skip)
    compared = sorted(set(hashes_a) - set(skip) | set(hashes_b))
    differing = {
        port: _differing_files(workdir / "saved_a" / port, workdir / "saved_b" / port)
        for port in compared
        if hashes_a.get(port) != hashes_b.get(port)
    }
    assert not differing, f"{name}: two runs with seed {seed} differ: {differing}"
    # 8. clear error on a missing required input
    required = [p.name for p in stage.input_ports() if p.required]
    if required:
        partial = {k: v for k, v in inputs.items() if k != required[0]}
        try:
            stage.execute(partial, RunContext(stage_name=stage.name, stage_dir=workdir / "run_c", seed=seed))
        except WiringError as exc:
            assert required[0] in str(exc), f"{name}: missing-input error does not name {required[0]!r}"
        else:
            raise AssertionError(f"{name}: ran without its required input {required[0]!r}")
    # 9. cache hit on rerun inside a pipeline
    from closedloop.core.pipeline import Pipeline

    given = GivenArtifacts.of({k: v for k, v in inputs.items() if v is not None}, workdir)
    pipe = Pipeline(
        [given, cls(stage.config, name=stage.name)], name="check", seed=seed, runs_dir=workdir / "runs"
    )
    first = pipe.run(progress=False)
    assert first.ok, f"{name}: failed inside a pipeline: {first.summary['stages'][stage.name].get('error')}"
    second = pipe.run(progress=False)
    assert second.summary["stages"][stage.name]["cached"], f"{name}: identical rerun was not a cache hit"
    return summary


def check_plugin_naming(cls: type, resolve: Any, name: str) -> None:
    """Part of every plug-in battery: an unknown config key fails with a :class:`ConfigError` naming it,
    and ``resolve("module:Class")`` (the registry's lookup) gives back this very class."""
    try:
        cls({"no_such_option": 1})
    except ConfigError as exc:
        assert "no_such_option" in str(exc), f"{name}: the config error does not name the key: {exc}"
    else:
        raise AssertionError(f"{name}: an unknown config key was accepted")
    path = f"{cls.__module__}:{cls.__qualname__}"
    assert resolve(path) is cls, f"{name}: {path!r} does not resolve to the class"
