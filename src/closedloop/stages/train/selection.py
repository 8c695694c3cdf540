"""The winner's validation score, with the optimism of the search that picked it.

The hold-out selection (capacity ladder rungs and tuning trials) keeps every candidate's validation
logits in the stage's ``work/`` folder (``rung_<r>_val_logits.npy``, ``trials/<n>.npy``). Re-running
that selection on bootstrap resamples of the validation rows estimates how much the winner's
validation score is flattered by having been the best of N
(:func:`closedloop.stats.selection.selection_bias`). The estimate sits next to the winner's validation
score in the report and in ``summary.json`` (``stages.train.selection``, ``evaluated_on: validation``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from closedloop.models.trained import logits_to_proba
from closedloop.stages.train.outcomes import TunedConfig
from closedloop.stages.train.session import TrainSession, rung_logits_file, trial_logits_file
from closedloop.stats.errors import StatsError
from closedloop.stats.selection import SelectionBias, selection_bias


def candidate_files(work: Path) -> list[tuple[str, str]]:
    """``(name, path relative to work)`` of every hold-out candidate with saved validation logits."""
    # a file is a candidate's when its name is what session's name helper gives for its number
    rungs = sorted(_num(p.name) for p in work.glob("*.npy") if p.name == rung_logits_file(_num(p.name)))
    out = [(f"ladder rung {r + 1}", rung_logits_file(r)) for r in rungs]
    trials = sorted(
        _num(p.name)
        for p in (work / trial_logits_file(0)).parent.glob("*.npy")
        if p.relative_to(work).as_posix() == trial_logits_file(_num(p.name))
    )
    out += [(f"tuning trial {t}", trial_logits_file(t)) for t in trials]
    return out


def _num(name: str) -> int:
    m = re.search(r"\d+", name)
    return int(m.group()) if m else -1


def selection_evidence(sess: TrainSession, tuned: TunedConfig) -> SelectionBias | None:
    """Selection bias of the chosen configuration's hold-out validation score (None without
    candidates, e.g. a resumed run whose logits are gone; the reason is logged as a decision)."""
    own = [(f"{sess.family} {n}" if sess.rivals else n, sess.work / r) for n, r in candidate_files(sess.work)]
    # a family list: every family's candidates were in the selection, so all enter the estimate
    rival = [(f"{fam} {n}", work / r) for fam, work in sess.rivals for n, r in candidate_files(work)]
    files = own + rival
    chosen = sess.work / tuned.val_logits_file
    names = [n for n, _ in files]
    rels = [r for _, r in files]
    if not own or chosen not in rels:
        sess.decide(
            "final", "selection bias not estimated: the candidates' validation logits are missing", {}
        )
        return None
    task = sess.task
    try:
        probas = [logits_to_proba(np.load(r), task.problem_type) for r in rels]
        sb = selection_bias(
            task.primary_metric,
            sess.val.y_np,
            probas,
            task.problem_type,
            names=names,
            winner=rels.index(chosen),
            convention=task.metric_convention,
            n_resamples=sess.cfg.n_bootstrap,
            seed=sess.ctx.seed,
            clusters=sess.val_groups,
        )
    except StatsError as exc:  # evidence, not a reason to stop training
        sess.decide("final", f"selection bias not estimated: {exc}", {})
        return None
    sess.decide(
        "final",
        f"{sb.sentence[0].upper()}{sb.sentence[1:]}. {sess.n_configs} configurations were scored on "
        f"validation in this stage in all ({sb.n_candidates} complete candidates with saved predictions "
        "entered the estimate); the test split played no part in the choice.",
        sb.model_dump(mode="json"),
    )
    return sb
