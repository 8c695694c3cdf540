"""``closedloop worker CONFIG --storage URL`` (Python: :func:`join_study`): a process, usually on another
machine, that runs tuning trials for a leader's study and nothing else.

The leader (``closedloop run CONFIG --storage URL``) owns the run directory, every phase, the ledgers
and the report. The worker rebuilds the train stage's inputs from the same config (it runs the stages
that produce the train stage's ``data`` and ``task`` in a scratch folder it deletes), waits for the
leader's tune phase to open the study, checks the study's config fingerprint against its own
(:mod:`.phases.joining`; refused before any trial, naming the fields that differ), then runs trials
until the study holds its declared count of finished trials. Its trials' validation logits travel in
the study; it writes nothing the leader reads from disk.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from closedloop.core.errors import ConfigError, StageFailedError
from closedloop.core.stage import RunContext
from closedloop.stages.train.phases import joining as J
from closedloop.stages.train.phases import workers as W

log = logging.getLogger("closedloop")


class WorkerResult(BaseModel):
    """What one ``closedloop worker`` did."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    study: str
    storage: str
    """The storage URL, password hidden."""
    trials: list[int]
    """Numbers of the counted trials this worker finished."""
    counted: int
    """Counted trials in the study when the worker left."""
    n_trials: int
    """The study's declared trial count."""
    setup_seconds: float
    """Rebuilding the train stage's inputs and waiting for the leader's study."""


def _train_stage(pipeline: Any) -> Any:
    from closedloop.stages.train.stage import TrainModel

    found = [s for s in pipeline.stages if isinstance(s, TrainModel)]
    if len(found) != 1:
        raise ConfigError(
            f"closedloop worker: the config needs exactly one train stage to join its tuning study, "
            f"found {len(found)}"
        )
    return found[0]


def _train_inputs(pipeline: Any, stage: Any, scratch: Path) -> dict[str, Any]:
    """Run the stages that produce the train stage's ``data`` and ``task`` (not the baseline: trials do
    not use it) in ``scratch``, with their own runs folder so no ledger of the user's is touched."""
    wiring = pipeline.check_wiring()[stage.name]
    producers = sorted({wiring[p] for p in ("data", "task")})
    pipeline.runs_dir = scratch / "runs"
    for s in pipeline.stages:
        s.pipeline_home = pipeline.runs_dir / pipeline.name
    pipeline.callbacks, pipeline._tracker = [], None
    result = pipeline.run(out=scratch / "upstream", only=producers, cache=False, progress=False)
    if not result.ok:
        errors = [f"{n}: {st.get('error')}" for n, st in result.summary["stages"].items() if st.get("error")]
        raise StageFailedError(f"closedloop worker: the stages before train failed: {'; '.join(errors)}")
    return {p: result.artifact(stage.source_of(p)) for p in ("data", "task")}


def _find_study(
    storage: Any, url: str, name: str | None, mine: dict[str, dict[str, str]], wait_s: float
) -> tuple[str, str]:
    """The leader's open study this worker matches, and its family: ``name`` when given, else the open
    closedloop study with one of this worker's fingerprints (``mine``: family -> fingerprint; a family
    list tunes one family at a time, each in its own study; none open: a finished one, which the worker
    leaves at once). Waits up to ``wait_s`` for the leader to reach its tune phase; an open study whose
    fingerprint differs is refused with the differing fields."""
    import optuna

    t_end = time.time() + wait_s
    while True:
        summaries = optuna.study.get_all_study_summaries(storage, include_best_trial=False)
        # the leader publishes the fingerprint, the plan, then opens the study (``joining.publish``): one it is
        # still publishing is neither open nor closed, and a worker that took it then found no plan
        ours = [s for s in summaries if J.FINGERPRINT_ATTR in s.user_attrs and J.OPEN_ATTR in s.user_attrs]
        if name is not None:
            ours = [s for s in ours if s.study_name == name or s.study_name.startswith(f"{name}-")]
        open_ = [s for s in ours if s.user_attrs.get(J.OPEN_ATTR)]
        for pool in (open_, [] if open_ else ours):  # none open: the leader's phase already ended
            same = [
                (s, fam) for s in pool for fam, fp in mine.items() if s.user_attrs[J.FINGERPRINT_ATTR] == fp
            ]
            if same:
                study, family = max(same, key=lambda sf: sf[0].datetime_start or 0)
                return study.study_name, family
        if open_:
            other = max(open_, key=lambda s: s.datetime_start or 0)
            theirs = other.user_attrs[J.FINGERPRINT_ATTR]
            closest = mine.get(theirs.get("family", ""), next(iter(mine.values())))
            diff = J.differences(theirs, closest)
            raise ConfigError(
                f"closedloop worker: study {other.study_name!r} at {W.redact(url)} was started with a "
                f"different config (fingerprint mismatch); its trials would not be comparable. "
                f"Differing fields: {'; '.join(diff)}"
            )
        if time.time() > t_end:
            which = f"open study {name!r}" if name else "open closedloop study"
            raise ConfigError(
                f"closedloop worker: no {which} at {W.redact(url)} after {wait_s:g} s; start the leader "
                "(closedloop run CONFIG --storage URL) or raise --wait"
            )
        time.sleep(1.0)


def join_study(
    config: str | Path,
    storage: str,
    *,
    overrides: list[str] | None = None,
    study_name: str | None = None,
    wait_s: float = 600.0,
    scratch: str | Path | None = None,
) -> WorkerResult:
    """Join the leader's tuning study at ``storage`` with the pipeline of ``config`` (same config as
    the leader's, ``overrides`` as ``--set``), run trials until it holds its declared count, return
    what this worker did. Raises :class:`ConfigError` for a bad storage, a fingerprint mismatch or no
    study to join."""
    import optuna

    from closedloop.core.pipeline import Pipeline
    from closedloop.stages.train.phases import study as S
    from closedloop.stages.train.phases.tune import worker_trials

    problem = W.storage_problem(storage, workers=2)
    if problem is None and not W.is_shared(storage):
        problem = (
            f"--storage {storage!r}: a worker joins a study other processes share: give the leader's "
            "postgresql:// URL or its .journal file"
        )
    if problem:
        raise ConfigError(problem.replace("train.storage", "--storage"))
    try:
        W.check_reachable(storage)
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("train.storage", "--storage", 1)) from exc
    pipeline = Pipeline.from_yaml(config, overrides=list(overrides or []))
    stage = _train_stage(pipeline)
    t0 = time.time()
    own_scratch = scratch is None
    folder = Path(tempfile.mkdtemp(prefix="closedloop-worker-")) if scratch is None else Path(scratch)
    try:
        inputs = _train_inputs(pipeline, stage, folder)
        ctx = RunContext(stage_name=stage.name, stage_dir=folder / "train", seed=pipeline.seed)
        both = stage.Inputs(data=inputs["data"], task=inputs["task"])
        sessions = {f: stage.make_session(both, ctx, family=f) for f in stage.config.families(both.data.kind)}
        mine = {f: J.fingerprint(s) for f, s in sessions.items()}
        probe = W.shared_storage(storage, ctx.work_dir)
        name, family = _find_study(probe, storage, study_name or stage.config.study_name, mine, wait_s)
        sess = sessions[family]
        attrs = optuna.load_study(study_name=name, storage=probe).user_attrs
        plan = J.TrialPlan.model_validate(attrs[J.PLAN_ATTR])
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = S.open_study(
            sess, name, pipeline.seed, W.shared_storage(storage, ctx.work_dir, plan.heartbeat_seconds)
        )
        setup_s = time.time() - t0
        log.info("closedloop worker: joined study %s after %.1f s", name, setup_s)
        ran = worker_trials(sess, study, plan, keep_logits_in_study=True)
        n = len([t for t in study.get_trials(deepcopy=False) if W.counted(t)])
    finally:
        if own_scratch:
            shutil.rmtree(folder, ignore_errors=True)
    return WorkerResult(
        study=name,
        storage=W.redact(storage),
        trials=ran,
        counted=n,
        n_trials=plan.n_trials,
        setup_seconds=round(setup_s, 3),
    )
