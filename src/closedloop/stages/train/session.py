"""Shared state of one training stage run: data in memory, engine, time budget, decision log, curves,
the finished phases' typed outcomes, and the names of the files phases leave in ``work/``."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from closedloop.core.errors import ConfigError
from closedloop.core.io import save_npy_atomic
from closedloop.core.seeds import derive_seed
from closedloop.core.stage import RunContext
from closedloop.data.bundle import DatasetBundle
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.baseline import BaselineReport
from closedloop.stages.task import TaskSpec
from closedloop.stages.train.config import TrainConfig
from closedloop.stages.train.engine import Engine, FitResult, HParams, TensorSet, n_logits_for
from closedloop.stages.train.heldout import HeldOut
from closedloop.stages.train.outcomes import Outcome
from closedloop.stats.selection import SelectionBias

OutcomeT = TypeVar("OutcomeT", bound=Outcome)


class NetworkBuilder(Protocol):
    """The stage's custom-model hook (``TrainModel.build_network``)."""

    def build_network(self, spec: ModelSpec, input_shape: list[int], n_logits: int) -> torch.nn.Module: ...


# -- the files phases leave in work/ (one name per kind, built here only) ---------------------------
def rung_logits_file(index: int) -> str:
    """Validation logits of ladder rung ``index`` (0-based), relative to ``work/``."""
    return f"rung_{index}_val_logits.npy"


def trial_logits_file(number: int) -> str:
    """Validation logits of the Optuna trial ``number``."""
    return f"trials/{number}.npy"


DEFAULT_LOGITS_FILE = "default_val_logits.npy"

# -- what the budget keeps for the work after the last fit ------------------------------------------
DRAW_SECONDS = "figure draw seconds"
"""``ctx.timings`` label: one small figure's render, measured before the sanity loop; the phases keep
it (times their figures' panels) from their fits' deadlines for the figures drawn after them."""
COMPARISON_SECONDS = "beat_baseline comparison seconds"
"""``ctx.timings`` label: the beat_baseline phase's baseline refit and paired bootstrap on validation."""
LATEST_STEP_SECONDS = "latest seconds per step"
"""``ctx.timings`` label: seconds per training step (after its first) of the latest fit that took two."""
EVAL_ROW_SECONDS = "latest validation seconds per row"
"""``ctx.timings`` label: seconds per row of the latest validation pass (what predictions cost now)."""
TRIAL_STEP_SECONDS = "tune latest trial median seconds per step"
"""``ctx.timings`` label: the median seconds per training step of the latest tuning trial (the chosen
network's typical step under the load of the moment: what the final fit's first plan is sized with,
:mod:`.final_plan`)."""
RESERVE_SHARE = 0.15
"""Share of the last phase's budget kept for its work after the fit until this run has measured that
work's parts (before the beat_baseline comparison, or in a run without a baseline)."""
RESERVE_MARGIN = 1.25
"""The measured reserve times this: the load may change between a part's measurement and the
evaluation (benchmarks/bench_train_resume.py prints the reserve beside the evaluation's seconds)."""
COMPARISON_RESAMPLES = 1000
"""Resamples of the beat_baseline comparison (two models, one metric on validation)."""


@dataclass(frozen=True)
class Reserve:
    """Seconds kept at the end of the budget for the final phase's work after its fit, and how."""

    seconds: float
    how: str
    """What it was measured from (the decision log quotes it when the budget binds)."""
    measured: bool


@dataclass
class TrainSession:
    """Everything the phases share. Built by :meth:`TrainModel.make_session`."""

    cfg: TrainConfig
    task: TaskSpec
    data: DatasetBundle
    ctx: RunContext
    stage: NetworkBuilder
    pre: Preprocessing
    engine: Engine
    train: TensorSet
    val: TensorSet
    family: str
    base_hp: HParams
    budget_s: float
    heldout: HeldOut
    """Validation rows kept out of the final fit (:mod:`closedloop.stages.train.heldout`)."""
    budget: dict[str, float]
    """Phase -> share of the budget, in running order (the driver's table)."""
    ladder: list[dict[str, Any]]
    """Capacity rungs (family params), smallest first."""
    baseline: BaselineReport | None = None
    """The baseline stage's report (its best model is refitted for the comparisons), or None."""
    t0: float = field(default_factory=time.time)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    figures: list[dict[str, str]] = field(default_factory=list)
    n_configs: int = 0
    model: TrainedModel | None = None
    """Set by the final phase."""
    beats_baseline: dict[str, Any] | None = None
    """The test comparison with the best baseline (final phase; None without a baseline)."""
    selection: SelectionBias | None = None
    """The winner's validation score and the search's optimism (final phase; None when not estimated)."""
    tag: str = ""
    """A family list (:mod:`closedloop.stages.train.families`): the family's name, put before its
    decisions and figure captions; empty for a single-family run."""
    final_reserve: bool = True
    """Keep :meth:`reserve` before the last phase's end (False for a family of a family list, whose
    final fit, if chosen, runs later with the stage's whole budget)."""
    last_start: float | None = None
    """``time.time()`` at which the last phase began, less what interrupted attempts spent in it (None
    before it begins): it keeps its own share of the budget from then on however long the phases
    before it ran (:meth:`deadline`)."""
    rivals: list[tuple[str, Path]] = field(default_factory=list)
    """The other families' (name, work folder) of a family list: their candidates enter the selection
    bias (:mod:`closedloop.stages.train.selection`)."""

    # -- time -----------------------------------------------------------------------------------
    def deadline(self, phase: str) -> float:
        """End of ``phase``'s share of the budget (unused time of earlier phases rolls over). No phase
        before the last ends later than the budget's end less :meth:`reserve`: on a slow machine the
        last phase's work after its fit, which no deadline can cut, must still fit in the budget."""
        if phase not in self.budget:
            raise ConfigError(
                f"train: phase {phase!r} has no share in the time budget table {list(self.budget)}"
            )
        upto = 0.0
        for p, share in self.budget.items():
            upto += share
            if p == phase:
                break
        end = self.t0 + upto * self.budget_s
        if phase == list(self.budget)[-1]:
            return end + self.last_phase_overrun()
        if not self.final_reserve:
            return end
        return min(end, self.t0 + self.budget_s - self.reserve())

    def last_phase_overrun(self) -> float:
        """Seconds past the budget's end that the last phase is given so that it keeps its own share
        (0 unless the phases before it ran into that share: a family list's selection or a
        cross-validation under load can). Without it a late selection left the final fit no time and
        the stage shipped a network trained for one step (session 15, issue #25)."""
        if self.last_start is None or not self.budget:
            return 0.0
        own = self.last_start + list(self.budget.values())[-1] * self.budget_s
        return max(0.0, own - (self.t0 + self.budget_s))

    @property
    def val_groups(self) -> np.ndarray | None:
        """The group of each validation row (``data.group``), or None: paired comparisons and intervals on
        validation resample whole groups where it is given."""
        from closedloop.stats.bootstrap import usable_clusters

        return usable_clusters(self.data.splits["val"].groups)

    def groups_train_val(self) -> np.ndarray | None:
        """The group of each train then validation row (the order of ``TensorSet.concat(train, val)``), or
        None when the data has no ``group`` column."""
        tr, va = self.data.splits["train"].groups, self.data.splits["val"].groups
        return None if tr is None or va is None else np.concatenate([np.asarray(tr), np.asarray(va)])

    def reserve(self) -> float:
        """Seconds kept at the end of the budget for the last phase's work after its fit
        (:meth:`reserve_estimate`)."""
        return self.reserve_estimate().seconds

    def reserve_estimate(self) -> Reserve:
        """The final phase's work after its fit, estimated from what this run measured, so it follows
        the machine's speed and the splits' sizes: its bootstrap intervals and comparisons (the
        beat_baseline comparison's seconds per resampled row and model, times the final evaluation's
        resampled rows: every task metric on validation, held-out and test, the per-day framing and
        the paired test comparison, at ``n_bootstrap`` resamples), its predictions (validation and
        test rows at the latest validation pass's measured seconds per row) and its figures (the
        measured draw each), times :data:`RESERVE_MARGIN`. Before the comparison is measured,
        :data:`RESERVE_SHARE` of the last phase's budget."""
        cmp_s = self.ctx.timings.get(COMPARISON_SECONDS)
        n_val = len(self.val)
        if not cmp_s or not n_val:
            last = list(self.budget.values())[-1] if self.budget else 0.0
            share = RESERVE_SHARE * last * self.budget_s
            return Reserve(share, f"{RESERVE_SHARE:.0%} of the final phase's share: not measured yet", False)
        n_hold, n_test = len(self.heldout.indices), len(self.data.splits["test"])  # row counts only
        per_row = float(cmp_s) / (2 * COMPARISON_RESAMPLES * n_val)
        rows = len(self.task.metrics) * (n_val + n_hold + n_test) + 3 * n_test
        boot = per_row * rows * self.cfg.n_bootstrap
        row_s = float(self.ctx.timings.get(EVAL_ROW_SECONDS) or 0.0)
        predict = row_s * (n_val + n_test)
        # the final fit's loss curve, and for a single-label task the test confusion matrix
        n_figures = 2 if self.task.problem_type in ("binary", "multiclass", "ordinal") else 1
        figure = n_figures * float(self.ctx.timings.get(DRAW_SECONDS, 0.0))
        seconds = RESERVE_MARGIN * (boot + predict + figure)
        how = (
            f"measured: bootstrap {boot:.1f} s ({rows * self.cfg.n_bootstrap:,} resampled rows at the "
            f"beat_baseline comparison's {per_row * 1e6:.2g} us each), predictions {predict:.1f} s "
            f"({n_val + n_test} rows at the latest validation pass's {row_s * 1e3:.2g} ms each), "
            f"{n_figures} figure(s) {figure:.1f} s, "
            f"x {RESERVE_MARGIN:g}"
        )
        return Reserve(seconds, how, True)

    def elapsed(self) -> float:
        return time.time() - self.t0

    def note_cut(self, phase: str, what: str, res: FitResult, planned: int) -> None:
        """Say in the decision log when the time budget cut a fit short (a fit the clock did not cut
        adds nothing, so the log of a run the budget does not bind is the same however it ran)."""
        if res.stopped != "time_budget":
            return
        done = round(res.epochs_done, 2)
        # a tree fit still improving may boost past its plan (train.tree_extend): then "of" would mislead
        of = f"of {planned}" if done <= planned else f"({planned} planned, boosting on while improving)"
        self.decide(
            phase,
            f"{what} cut short by the time budget after {done:g} {of} epoch(s)",
            {"epochs_done": done, "epochs_planned": planned},
        )

    def note_fit(self, res: FitResult) -> None:
        """Keep a fit's measured step (when it took more than its first) and the engine's latest
        validation pass per row: what the next fits, the final plan and the reserve are sized with."""
        if res.step_seconds is not None and res.steps_timed:
            self.note_time(LATEST_STEP_SECONDS, res.step_seconds)
        if self.engine.eval_row_seconds:
            self.ctx.timings[EVAL_ROW_SECONDS] = self.engine.eval_row_seconds

    def least_fit_seconds(self) -> float:
        """What a new fit costs at least now: one training step and one validation pass, as last
        measured (0 before any fit): a loop does not start a fit (a rung, a trial) with less left."""
        t = self.ctx.timings
        return float(t.get(LATEST_STEP_SECONDS, 0.0)) + float(t.get(EVAL_ROW_SECONDS, 0.0)) * len(self.val)

    def note_time(self, label: str, seconds: float) -> None:
        """A wall time the budget uses later (kept in ``ctx.timings``, never in artifacts)."""
        self.ctx.timings[label] = round(seconds, 3)

    # -- outcomes of finished phases ----------------------------------------------------------------
    def get(self, kind: type[OutcomeT]) -> OutcomeT | None:
        """The outcome of the finished phase that returns ``kind`` (None when it did not run)."""
        for out in self.outcomes.values():
            if isinstance(out, kind):
                return out
        return None

    # -- log --------------------------------------------------------------------------------------
    def decide(self, phase: str, decision: str, evidence: Any) -> None:
        if self.tag:
            decision = f"{self.tag}: {decision}"
        self.decisions.append({"phase": phase, "decision": decision, "evidence": evidence})
        self.ctx.logger.info("train/%s: %s", phase, decision)

    @property
    def work(self) -> Path:
        return self.ctx.work_dir

    def load_logits(self, name: str) -> np.ndarray:
        return np.load(self.work / name)

    def save_logits(self, name: str, logits: np.ndarray | None) -> None:
        save_npy_atomic(self.work / name, logits)  # a kill never leaves half a file to read

    # -- models -----------------------------------------------------------------------------------
    @property
    def n_logits(self) -> int:
        return n_logits_for(self.task.problem_type, self.task.n_outputs)

    def seed(self, *place: str | int) -> int:
        """The seed of one use of randomness in this stage, e.g. ``sess.seed("tune", "trial", 3)``: a
        function of the run seed and the place alone (:mod:`closedloop.core.seeds`), so a resumed run
        draws what an uninterrupted one draws."""
        return derive_seed(self.ctx.seed, "train", *place)

    def build(self, params: dict[str, Any], seed: int) -> torch.nn.Module:
        """Network of the session's family initialized from ``seed`` alone (the global RNG is forked:
        it is neither read nor left changed), checked against the task's output shape."""
        spec = ModelSpec(family=self.family, params=params)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self.stage.build_network(spec, self.pre.input_shape, self.n_logits)
        check_network(net, spec, self)
        return net

    def record(self, description: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Every configuration scored on validation goes into the validation ledger."""
        self.n_configs += 1
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()
        }
        self.ctx.record_validation(description, params, clean)

    def figure(self, name: str, caption: str, phase: str) -> str:
        path = self.ctx.figures_dir / name  # a family of a family list draws in figures/<family>/
        rel = path.relative_to(self.ctx.stage_dir).as_posix()
        self.figures.append(
            {"path": rel, "caption": f"{self.tag}: {caption}" if self.tag else caption, "phase": phase}
        )
        return str(path)


def check_network(net: torch.nn.Module, spec: ModelSpec, sess: TrainSession) -> None:
    """A custom model must follow the convention and produce the task's output shape."""
    task = sess.task
    if not callable(getattr(net, "features", None)) or not isinstance(
        getattr(net, "head", None), torch.nn.Linear
    ):
        raise ConfigError(
            f"model family {spec.family!r}: the network must have features(x) -> (N, D) and head: nn.Linear "
            "(see closedloop.models.trained)"
        )
    x = sess.engine.to_input(sess.train.x[:2], None, None)
    net.eval()
    with torch.no_grad():
        out = net(x)
    expected = (2, sess.n_logits)
    if tuple(out.shape) != expected:
        raise ConfigError(
            f"model family {spec.family!r} returns outputs of shape {tuple(out.shape)} for a batch of 2, "
            f"but the {task.problem_type} task with {task.n_outputs} outputs needs shape {expected} "
            f"({'one logit' if sess.n_logits == 1 else f'{sess.n_logits} logits'} per sample)"
        )


def selection_value(engine: Engine, score: float | None) -> float | None:
    """Selection score (higher is better) -> the metric's own value."""
    if score is None or not np.isfinite(score):
        return None
    return score if (engine.higher_is_better and engine.metric != "loss") else -score


def flat(knobs: dict[str, Any]) -> dict[str, Any]:
    """Knob values as the ledger records them."""
    return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in knobs.items()}


def fmt(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)
