"""The Optuna study of the tune phase: opened (or resumed) by its public API only."""

from __future__ import annotations

from typing import Any

from closedloop.stages.train.phases.workers import is_shared, rdb_url, shared_storage
from closedloop.stages.train.session import TrainSession


def n_startup(sess: TrainSession) -> int:
    return max(2, min(5, (sess.cfg.n_trials or 1) // 3))


def in_workers(sess: TrainSession) -> bool:
    """Trials run in worker processes: several of them, or a storage ``closedloop worker``s can join."""
    return sess.cfg.workers > 1 or is_shared(sess.cfg.storage)


def storage_url(sess: TrainSession) -> Any:
    """The study's storage: the configured URL (an RDB with Optuna's heartbeat when workers share it);
    else Optuna's journal file in the work folder, which several workers can share (:mod:`.workers`)
    and one process writes cheaply: one appended line per write instead of a SQLite commit (the SQLite
    study was half of a small table's tree train stage: ``benchmarks/profile_tree_stage.py``)."""
    if in_workers(sess) or not sess.cfg.storage:
        return shared_storage(sess.cfg.storage, sess.work, sess.cfg.heartbeat_seconds)
    return rdb_url(sess.cfg.storage)


def prune_startup(sess: TrainSession) -> int:
    """Trials that complete before the pruner may stop one (``train.prune_startup``: a count,
    ``startup`` the sampler's start-up trials, ``all`` every trial; None: 0)."""
    setting = sess.cfg.prune_startup
    if setting == "startup":
        return n_startup(sess)
    if setting == "all":
        return sess.cfg.n_trials or 1
    return int(setting or 0)


def pruner_for(sess: TrainSession) -> Any:
    """Successive halving (reduction factor 3, first rung at a sixth of ``max_epochs``), held back until
    :func:`prune_startup` trials have completed."""
    import optuna

    halving = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=max(2, (sess.cfg.max_epochs or 1) // 6), reduction_factor=3
    )
    startup = prune_startup(sess)
    return AfterStartup(halving, startup) if startup else halving


class AfterStartup:
    """An Optuna pruner that asks ``inner`` at every report but stops no trial until ``n`` trials have
    completed. ``inner`` is still asked during the start-up so it records the start-up trials' rung
    scores (successive halving keeps them in the trial's system attributes) and later trials compete
    with them.

    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> pruner = AfterStartup(optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3), 2)
    >>> study = optuna.create_study(direction="maximize", pruner=pruner)
    >>> def objective(trial):
    ...     for step in range(4):
    ...         trial.report([0.9, 0.1, 0.1][min(trial.number, 2)], step)
    ...         if trial.should_prune():
    ...             raise optuna.TrialPruned()
    ...     return 1.0
    >>> study.optimize(objective, n_trials=3)
    >>> [t.state.name for t in study.trials]  # trial 1 scores below trial 0 but runs: start-up
    ['COMPLETE', 'COMPLETE', 'PRUNED']
    """

    def __init__(self, inner: Any, n: int) -> None:
        self.inner, self.n = inner, n

    def prune(self, study: Any, trial: Any) -> bool:
        import optuna

        verdict = bool(self.inner.prune(study, trial))
        if not verdict:
            return False
        done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        return len(done) >= self.n


def open_study(sess: TrainSession, name: str, seed: int, storage: Any = None) -> Any:
    import optuna

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup(sess))
    pruner = pruner_for(sess)
    return optuna.create_study(
        study_name=name,
        storage=storage if storage is not None else storage_url(sess),
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def study_for(sess: TrainSession) -> Any:
    """The session's study. A trial killed mid-way stays RUNNING: the search restarts from a copy
    without it, so the resumed study's history (and hence every later suggestion and pruning decision)
    equals an uninterrupted run's."""
    import optuna

    cfg = sess.cfg
    base_name = cfg.study_name or f"closedloop-train-{sess.ctx.fingerprint[:12] or 'run'}-seed{sess.ctx.seed}"
    if sess.tag:  # a family list: one study per family (a shared storage holds them side by side)
        base_name += f"-{sess.tag}"
    study = open_study(sess, base_name, sess.ctx.seed)
    running = optuna.trial.TrialState.RUNNING
    stale = [t for t in study.get_trials(deepcopy=False) if t.state == running]
    if stale and cfg.storage is None:
        finished = [t for t in study.get_trials() if t.state != running]
        names = set(optuna.get_all_study_names(storage=storage_url(sess)))
        k = 1
        while f"{base_name}-resumed{k}" in names:
            k += 1
        study = open_study(sess, f"{base_name}-resumed{k}", sess.ctx.seed)
        study.add_trials(finished)
        sess.decide(
            "tune",
            f"resumed the search: {len(finished)} finished trial(s) kept, {len(stale)} interrupted trial(s) re-run",
            {},
        )
    return study


def seeded_sampler(sess: TrainSession, k: int) -> Any:
    """A fresh sampler seeded by the trial's index: suggestions depend on the finished history only."""
    import optuna

    seed = sess.seed("tune", "sampler", k) % (1 << 32)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup(sess))


def intermediate_values(study: Any, trial: Any) -> list[float]:
    """The scores ``trial`` reported so far (public API: the study's frozen copy of the trial)."""
    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
    return list(frozen.intermediate_values.values())
