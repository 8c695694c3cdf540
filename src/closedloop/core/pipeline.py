"""The pipeline: an ordered list of stages whose typed inputs and outputs are wired by name.

Build it from YAML or from Python; the wiring is checked when it is built, before anything runs.

Example:
    >>> from closedloop import Pipeline
    >>> from closedloop.stages.load_data import LoadData
    >>> from closedloop.stages.task import DefineTask
    >>> p = Pipeline([DefineTask()], data=LoadData(source="sklearn", options={"name": "digits"}), name="doc")
    >>> [s.name for s in p.stages]
    ['data', 'task']
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from closedloop.core.artifacts import Artifact
from closedloop.core.cache import class_path, reuse_stage, stage_fingerprint, stage_spec_fingerprint
from closedloop.core.callbacks import CALLBACKS, Callback, CallbackList, RunState, resolve_callback
from closedloop.core.commit import execute_stage, load_outputs
from closedloop.core.config import (
    PipelineSpec,
    StageSpec,
    apply_overrides,
    load_yaml_file,
    validate_model,
)
from closedloop.core.errors import ConfigError, RunDirError, WiringError
from closedloop.core.io import canonical_json, read_json, sha256_text, write_json_atomic, write_text_atomic
from closedloop.core.ledger import TestLedger, ValidationLedger
from closedloop.core.records import (
    RunResult,
    StageRecord,
    build_summary,
    describe_error,
    jsonable,
    write_manifest,
)
from closedloop.core.registry import STAGES
from closedloop.core.resume import resume_refusal
from closedloop.core.rundir import MANIFEST, claim_out_dir, environment, new_run_dir, stage_dirname
from closedloop.core.stage import Stage

log = logging.getLogger("closedloop")


class Pipeline:
    """An ordered list of stages, wired by artifact name and checked when built.

    Args:
        stages: stage instances in order. If the first is not a data-loading stage, pass ``data``.
        data: a :class:`~closedloop.stages.load_data.LoadData` stage, or a mapping like
            ``{"source": "sklearn", "name": "digits"}``.
        name: pipeline name (runs go to ``<runs_dir>/<name>/``).
        seed: the run's seed.
        runs_dir: where run directories are created.
        tracking: experiment tracking (``{"backend": "mlflow", "uri": ...}``); off when ``None``.
        callbacks: extra :class:`~closedloop.core.callbacks.Callback` instances (or registry names /
            import paths), called after the defaults: the HTML report, then the tracker when
            ``tracking`` is set.
    """

    def __init__(
        self,
        stages: list[Stage],
        *,
        data: Stage | dict[str, Any] | None = None,
        name: str = "pipeline",
        seed: int = 0,
        runs_dir: str | Path = "runs",
        tracking: Any = None,
        callbacks: list[Callback | str] | None = None,
    ) -> None:
        stages = list(stages)
        if isinstance(data, dict):
            data = _load_data_stage(data, where="data")
        if data is not None:
            stages = [data, *stages]
        if not stages:
            raise WiringError("a pipeline needs at least one stage")
        for s in stages:
            if not isinstance(s, Stage):
                raise WiringError(f"pipeline stages must be Stage instances, got {type(s).__name__}: {s!r}")
        self.stages = stages
        self.name = name
        self.seed = seed
        self.runs_dir = Path(runs_dir)
        # the tracker checks its own section: core carries it without knowing the trackers
        self._tracker = CALLBACKS.resolve("tracking")(tracking) if tracking else None
        self.tracking = self._tracker.spec if self._tracker is not None else None
        self.callbacks: list[Callback] = [
            resolve_callback(c) if isinstance(c, str) else c for c in (callbacks or [])
        ]
        self._callback_names = [c for c in (callbacks or []) if isinstance(c, str)]
        bad = [c for c in self.callbacks if not isinstance(c, Callback)]
        if bad:
            raise WiringError(
                f"callbacks must be Callback instances, got {type(bad[0]).__name__}: {bad[0]!r}"
            )
        for s in stages:
            s.pipeline_home = self.runs_dir / name
        self._has_loader = isinstance(stages[0], _data_loader_class())
        self.check_wiring()

    # -- construction ---------------------------------------------------------------------------
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] | None = None) -> Pipeline:
        """Build from a YAML file; ``overrides`` are ``key.path=value`` strings (``--set``)."""
        raw = load_yaml_file(path)
        return cls.from_dict(raw, overrides=overrides, where=str(path))

    @classmethod
    def from_dict(
        cls, raw: dict[str, Any], *, overrides: list[str] | None = None, where: str = "<config>"
    ) -> Pipeline:
        raw = apply_overrides(raw, overrides or [])
        spec: PipelineSpec = validate_model(PipelineSpec, raw, where=where)
        data_stage = _load_data_stage(spec.data, where=where)
        stages: list[Stage] = []
        for i, st in enumerate(spec.stages):
            stages.append(_build_stage(st, where=where, index=i))
        names = [s.name for s in [data_stage, *stages]]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"{where}: stage name(s) {sorted(dup)} used twice; give each a distinct 'name'")
        tracking = None
        if spec.tracking is not None:
            tracking = CALLBACKS.resolve("tracking")(spec.tracking, where=where, prefix="tracking").spec
        callbacks = [resolve_callback(c, where=f"{where}: callbacks") for c in spec.callbacks]
        pipeline = cls(
            stages,
            data=data_stage,
            name=spec.name,
            seed=spec.seed,
            runs_dir=spec.runs_dir,
            tracking=tracking,
            callbacks=callbacks,
        )
        pipeline._callback_names = list(spec.callbacks)
        return pipeline

    def resolved_config(self) -> dict[str, Any]:
        """The config with all defaults filled and full class paths (saved as ``config.yaml``)."""
        first, rest = self.stages[0], self.stages[1:]
        data = {"source": first.config.source, **_source_options(first)} if self._has_loader else None
        out: dict[str, Any] = {"name": self.name, "seed": self.seed, "runs_dir": str(self.runs_dir)}
        if data is not None:
            out["data"] = data
        out["stages"] = [
            {"kind": class_path(type(s)), "name": s.name, "params": s.config.model_dump(mode="json")}
            | ({"inputs_from": dict(s.inputs_from)} if s.inputs_from else {})
            for s in rest
        ]
        if self.tracking is not None:
            out["tracking"] = self.tracking.model_dump(mode="json")
        if self._callback_names:
            out["callbacks"] = list(self._callback_names)
        return out

    def run_callbacks(self) -> list[Callback]:
        """The callbacks of one run, in calling order: the report, the tracker (if set), the extras."""
        defaults: list[Callback] = [CALLBACKS.resolve("report")()]
        if self._tracker is not None:
            defaults.append(self._tracker)
        return [*defaults, *self.callbacks]

    def fingerprint(self) -> str:
        return sha256_text(
            canonical_json({"seed": self.seed, "stages": [stage_spec_fingerprint(s) for s in self.stages]})
        )

    # -- wiring ---------------------------------------------------------------------------------
    def check_wiring(self) -> dict[str, dict[str, str]]:
        """Map each stage's inputs to the producing stage; raise :class:`WiringError` if impossible."""
        names = [s.name for s in self.stages]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise WiringError(f"stage name(s) {sorted(dup)} used twice; give each a distinct name")
        produced: dict[str, tuple[str, type]] = {}
        wiring: dict[str, dict[str, str]] = {}
        for i, stage in enumerate(self.stages):
            wiring[stage.name] = {}
            for port in stage.input_ports():
                source = stage.source_of(port.name)
                named = repr(port.name) if source == port.name else f"{port.name!r} (from {source!r})"
                if source in produced:
                    producer, tp = produced[source]
                    if not issubclass(tp, port.type):
                        raise WiringError(
                            f"stage {stage.name!r} needs input {named} of type {port.type.__name__}, but stage "
                            f"{producer!r} produces {source!r} of type {tp.__name__}"
                        )
                    wiring[stage.name][port.name] = producer
                else:
                    # An optional input produced only by a later stage is an ordering mistake (e.g. train
                    # before baseline would silently run without the baseline gate), not an absent input.
                    later = [
                        s.name
                        for s in self.stages[i + 1 :]
                        if any(p.name == source for p in s.output_ports())
                    ]
                    if later:
                        kind = "needs" if port.required else "takes the optional input"
                        raise WiringError(
                            f"stage {stage.name!r} {kind} {named}, which only the later stage {later[0]!r} "
                            f"produces: the wiring is cyclic or out of order; move {later[0]!r} before {stage.name!r}"
                        )
                    if not port.required and source == port.name:
                        continue
                    have = ", ".join(f"{k} (from {v[0]})" for k, v in produced.items()) or "nothing"
                    raise WiringError(
                        f"stage {stage.name!r} needs input {named} ({port.type.__name__}), but no earlier stage "
                        f"produces {source!r}; earlier stages produce: {have}"
                    )
            by_name = {s.name: s for s in self.stages[:i]}
            stage.check_producers({port: by_name[src] for port, src in wiring[stage.name].items()})
            for port in stage.output_ports():
                produced[port.name] = (stage.name, port.type)
        return wiring

    def _needed_for(self, only: list[str]) -> set[str]:
        wiring = self.check_wiring()
        known = {s.name for s in self.stages} | {type(s).key for s in self.stages}
        unknown = [o for o in only if o not in known]
        if unknown:
            raise ConfigError(
                f"--only: unknown stage(s) {unknown}; stages are {[s.name for s in self.stages]}"
            )
        by_key = {type(s).key: s.name for s in self.stages}
        todo = [by_key.get(o, o) for o in only]
        needed: set[str] = set()
        while todo:
            n = todo.pop()
            if n in needed:
                continue
            needed.add(n)
            todo.extend(wiring[n].values())
        return needed

    # -- running --------------------------------------------------------------------------------
    def run(
        self,
        *,
        out: str | Path | None = None,
        resume: str | Path | None = None,
        only: list[str] | None = None,
        unseal_test: str | None = None,
        progress: bool | None = None,
        cache: bool = True,
    ) -> RunResult:
        """Run the stages and write the run directory. Returns a :class:`RunResult`.

        Args:
            out: run directory to create (default ``<runs_dir>/<name>/<timestamp>-<fp8>/``).
            resume: an existing run directory to continue from its first unfinished stage.
            only: stage names to run (plus the stages they need); the others are skipped.
            unseal_test: a reason to re-open the test split for an already-evaluated pipeline.
            progress: show progress bars (default: on a terminal and not under CI).
            cache: reuse results of identical stages from earlier runs of this pipeline name.
        """
        fp = self.fingerprint()
        if resume is not None:
            run_dir = Path(resume)
            if not (run_dir / MANIFEST).is_file():
                raise RunDirError(
                    f"--resume {run_dir}: no {MANIFEST} there; it is not a closedloop run directory"
                )
            previous = read_json(run_dir / MANIFEST)
            old_config = run_dir / "config.yaml"
            refusal = resume_refusal(
                run_dir,
                yaml.safe_load(old_config.read_text(encoding="utf-8")) if old_config.is_file() else None,
                self.resolved_config(),
                read_json(run_dir / "env.json") if (run_dir / "env.json").is_file() else {},
            )
            if refusal is not None:
                raise RunDirError(refusal)
            if previous.get("pipeline_fingerprint") != fp:
                raise RunDirError(
                    f"--resume {run_dir}: that run was made by a different pipeline (fingerprint "
                    f"{str(previous.get('pipeline_fingerprint'))[:8]} vs {fp[:8]}); resume it with its own config.yaml"
                )
            run_id = previous.get("run_id", run_dir.name)
        else:
            previous = None
            run_dir = (
                claim_out_dir(Path(out), fp) if out is not None else new_run_dir(self.runs_dir, self.name, fp)
            )
            run_id = run_dir.name
        if progress is None:
            progress = sys.stderr.isatty() and not os.environ.get("CI")
        needed = self._needed_for(only) if only else {s.name for s in self.stages}

        write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(self.resolved_config(), sort_keys=False))
        env = environment(self.seed)
        if previous is None or not (run_dir / "env.json").is_file():
            write_json_atomic(run_dir / "env.json", env)
        test_ledger = TestLedger(
            global_path=self.runs_dir / self.name / "test_ledger.jsonl",
            run_path=run_dir / "test_ledger.jsonl",
            run_id=run_id,
            unseal_reason=unseal_test,
        )
        val_ledger = ValidationLedger(run_dir / "validation_ledger.jsonl")
        prev_records = {r["name"]: r for r in (previous or {}).get("stages", [])}

        records: list[StageRecord] = []
        outputs: dict[str, Artifact] = {}
        hooks = CallbackList(self.run_callbacks())
        state = RunState(self, run_dir, records, outputs)
        state._hooks = hooks
        hooks.call("on_run_start", state)
        artifact_hashes: dict[str, str] = {}
        failed = False
        wiring = self.check_wiring()
        t_run = time.perf_counter()
        for i, stage in enumerate(self.stages, start=1):
            rec = StageRecord(stage.name, type(stage).key, class_path(type(stage)), type(stage).version)
            rec.dir = f"stages/{stage_dirname(i, stage.name)}"
            records.append(rec)
            if failed or stage.name not in needed:
                rec.status = "skipped"
                continue
            sources = {p: stage.source_of(p) for p in wiring[stage.name]}
            inputs = {p: outputs[src] for p, src in sources.items() if src in outputs}
            rec.fingerprint = stage_fingerprint(
                stage, self.seed, {p: artifact_hashes[sources[p]] for p in inputs}
            )
            final_dir = run_dir / rec.dir
            hooks.call("on_stage_start", state, stage, rec)
            t0 = time.perf_counter()
            try:
                reused = reuse_stage(
                    rec,
                    final_dir,
                    prev_records.get(stage.name),
                    cache=cache,
                    pipeline_runs=self.runs_dir / self.name,
                )
                if reused:
                    stage_outputs = load_outputs(stage, final_dir)
                else:
                    if type(stage).scores_on_test:  # refused now, not after the stage's work
                        test_ledger.refuse_if_sealed(stage.name, rec.fingerprint)
                    stage_outputs = execute_stage(
                        stage, inputs, rec, final_dir, run_dir, self.seed, test_ledger, val_ledger, progress
                    )
                rec.status = "ok"
            except Exception as exc:  # a failing stage is recorded; the run stops but still reports
                rec.status = "failed"
                rec.error = describe_error(exc)
                log.error("stage %s failed: %s", stage.name, rec.error)
                failed = True
                rec.seconds = time.perf_counter() - t0
                write_manifest(run_dir, run_id, self.name, fp, records, "failed")
                hooks.call("on_stage_end", state, stage, rec)
                continue
            rec.seconds = time.perf_counter() - t0 if not rec.cached else rec.seconds
            for port in stage.output_ports():
                art = getattr(stage_outputs, port.name)
                if art is None:
                    continue
                outputs[port.name] = art
                artifact_hashes[port.name] = rec.artifacts[port.name]["hash"]
            try:
                rec.summary = jsonable(stage.summarize(stage_outputs))
            except Exception as exc:  # a broken summary must not lose the run
                rec.summary = {"summary_error": describe_error(exc)}
            write_manifest(run_dir, run_id, self.name, fp, records, "running")
            hooks.call("on_stage_end", state, stage, rec)

        status = "failed" if failed else "ok"
        write_manifest(run_dir, run_id, self.name, fp, records, status)
        summary = build_summary(
            self.name,
            self.seed,
            run_dir,
            records,
            status,
            time.perf_counter() - t_run,
            test_ledger,
            val_ledger,
        )
        if hooks.errors:  # a hook failed before there was a summary to say so
            summary["callback_errors"] = list(hooks.errors)
        state.summary = summary
        # The tracker logs the run here (its outcome goes into the summary); then summary.json is
        # written and the report renders from it.
        hooks.call("on_run_end", state)
        n_errors = len(hooks.errors)
        state.write_summary()
        if len(hooks.errors) > n_errors:  # a failure after the summary was written is still recorded
            write_json_atomic(run_dir / "summary.json", summary)
        return RunResult(run_dir, summary, outputs)


# -- helpers ------------------------------------------------------------------------------------------
def _data_loader_class() -> type[Stage]:
    # The registry names the loader (stage key "data"): core never imports the stages package.
    return STAGES.resolve("data")  # type: ignore[no-any-return]


def _load_data_stage(data: dict[str, Any], *, where: str) -> Stage:
    if not isinstance(data, dict) or "source" not in data:
        raise ConfigError(
            f"{where}: data: expected a mapping with a 'source' key, e.g. {{source: sklearn, name: digits}}"
        )
    options = {k: v for k, v in data.items() if k != "source"}
    return _data_loader_class()(source=data["source"], options=options, name="data")


def _source_options(stage: Stage) -> dict[str, Any]:
    src = stage.source()  # type: ignore[attr-defined]
    return src.config.model_dump(mode="json")


def _build_stage(st: StageSpec, *, where: str, index: int) -> Stage:
    cls = STAGES.resolve(st.kind, where=f"{where}: stages[{index}].kind")
    if not (isinstance(cls, type) and issubclass(cls, Stage)):
        raise ConfigError(f"{where}: stages[{index}].kind: {st.kind!r} is not a Stage subclass")
    name = st.name or cls.key or cls.__name__
    from pydantic import ValidationError

    from closedloop.core.config import format_validation_error

    try:
        config = cls.Config.model_validate(st.params)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, cls.Config, where=where, prefix=f"{name}")) from None
    try:
        return cls(config, name=name, inputs_from=st.inputs_from)
    except ConfigError as exc:
        raise ConfigError(f"{where}: stages[{index}].inputs_from: {exc}") from None
