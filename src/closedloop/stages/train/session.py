"""Shared state of one training stage run: data in memory, engine, time budget, decision log, curves.

Each phase stores its outcome as JSON in ``work/phaseN.json``; a resumed run reuses finished phases.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from closedloop.core.errors import ConfigError
from closedloop.core.io import to_json, write_text_atomic
from closedloop.models.trained import ModelSpec, Preprocessing
from closedloop.stages.train.engine import Engine, HParams, TensorSet, n_logits_for

PHASES = ("sanity", "beat_baseline", "scale_up", "tune", "final")
BUDGET_SHARE = {"sanity": 0.03, "beat_baseline": 0.10, "scale_up": 0.27, "tune": 0.40, "final": 0.20}


@dataclass
class TrainSession:
    """Everything the phases share. Built by :meth:`TrainModel.run`."""

    cfg: Any
    task: Any
    data: Any
    ctx: Any
    stage: Any
    pre: Preprocessing
    engine: Engine
    train: TensorSet
    val: TensorSet
    family: str
    base_hp: HParams
    budget_s: float
    t0: float = field(default_factory=time.time)
    decisions: list[dict[str, Any]] = field(default_factory=list)
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    phases: dict[str, dict[str, Any]] = field(default_factory=dict)
    figures: list[dict[str, str]] = field(default_factory=list)
    n_configs: int = 0
    heldout: Any = None
    """:class:`closedloop.stages.train.heldout.HeldOut`: validation rows kept out of the final fit."""

    # -- time -----------------------------------------------------------------------------------
    def deadline(self, phase: str) -> float:
        """End of ``phase``'s share of the budget (unused time of earlier phases rolls over)."""
        upto = 0.0
        for p in PHASES:
            upto += BUDGET_SHARE[p]
            if p == phase:
                break
        return self.t0 + upto * self.budget_s

    def elapsed(self) -> float:
        return time.time() - self.t0

    # -- log --------------------------------------------------------------------------------------
    def decide(self, phase: str, decision: str, evidence: Any) -> None:
        self.decisions.append({"phase": phase, "decision": decision, "evidence": evidence})
        self.ctx.logger.info("train/%s: %s", phase, decision)

    @property
    def work(self) -> Path:
        return self.ctx.work_dir

    def load_phase(self, phase: str) -> dict[str, Any] | None:
        p = self.work / f"phase_{phase}.json"
        if not p.is_file():
            return None
        return json.loads(p.read_text(encoding="utf-8"))

    def save_phase(self, phase: str, out: dict[str, Any]) -> None:
        write_text_atomic(self.work / f"phase_{phase}.json", to_json(out))

    # -- models -----------------------------------------------------------------------------------
    @property
    def n_logits(self) -> int:
        return n_logits_for(self.task.problem_type, self.task.n_outputs)

    def build(self, params: dict[str, Any], seed: int) -> torch.nn.Module:
        """Seeded network of the session's family, checked against the task's output shape."""
        spec = ModelSpec(family=self.family, params=params)
        torch.manual_seed(seed)
        net = self.stage.build_network(spec, self.pre.input_shape, self.n_logits)
        check_network(net, spec, self, self.task)
        return net

    def record(self, description: str, params: dict[str, Any], metrics: dict[str, Any]) -> None:
        """Every configuration scored on validation goes into the validation ledger."""
        self.n_configs += 1
        clean = {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()
        }
        self.ctx.record_validation(description, params, clean)

    def figure(self, name: str, caption: str, phase: str) -> str:
        rel = f"figures/{name}"
        self.figures.append({"path": rel, "caption": caption, "phase": phase})
        return str(self.ctx.figures_dir / name)


def check_network(net: torch.nn.Module, spec: ModelSpec, sess: TrainSession, task: Any) -> None:
    """A custom model must follow the convention and produce the task's output shape."""
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
