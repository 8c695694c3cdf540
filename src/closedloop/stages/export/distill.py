"""Short training loops on raw inputs: knowledge distillation and the fine-tune after pruning.

Distillation loss (Hinton et al.): ``alpha * T^2 * soft(student/T, teacher/T) + (1 - alpha) * hard``;
soft is KL for softmax outputs, BCE against sigmoid(teacher/T) for one-logit / multi-label outputs
and MSE to the teacher for regression.

The student's size is bounded by construction: :func:`choose_student` builds candidates and keeps the
largest ``width`` whose parameter count is at most ``max_ratio`` x the teacher's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from closedloop.models.loop import fit_epochs


def hard_loss(logits: torch.Tensor, y: torch.Tensor, problem: str) -> torch.Tensor:
    if problem == "binary":
        return F.binary_cross_entropy_with_logits(logits.reshape(-1), y.reshape(-1).float())
    if problem == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.reshape(logits.shape).float())
    if problem == "regression":
        return F.mse_loss(logits.reshape(-1), y.reshape(-1).float())
    return F.cross_entropy(logits, y.reshape(-1).long())


def soft_loss(student: torch.Tensor, teacher: torch.Tensor, problem: str, T: float) -> torch.Tensor:
    if problem == "regression":
        return F.mse_loss(student, teacher)
    if problem in ("binary", "multilabel"):
        return F.binary_cross_entropy_with_logits(student / T, torch.sigmoid(teacher / T)) * T * T
    return (
        F.kl_div(
            F.log_softmax(student / T, 1),
            F.log_softmax(teacher / T, 1),
            log_target=True,
            reduction="batchmean",
        )
        * T
        * T
    )


def fit(
    module: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    problem: str,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 128,
    seed: int = 0,
    teacher_logits: np.ndarray | None = None,
    temperature: float = 4.0,
    alpha: float = 0.7,
    threads: int | None = None,
) -> nn.Module:
    """Train ``module`` (taking raw inputs) with Adam; with ``teacher_logits``, distill from them."""
    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(
        np.asarray(y).astype(np.float32 if problem in ("binary", "multilabel", "regression") else np.int64)
    )
    Tt = None if teacher_logits is None else torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32))
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        out = module(Xt[idx])
        loss = hard_loss(out, yt[idx], problem)
        if Tt is None:
            return loss
        return alpha * soft_loss(out, Tt[idx].reshape(out.shape), problem, temperature) + (1 - alpha) * loss

    module.train()
    # the recipes' shared loop (closedloop.models.loop); a one-row batch is skipped (BatchNorm)
    fit_epochs(
        len(Xt),
        epochs=epochs,
        batch_size=batch_size,
        generator=g,
        optimizer=opt,
        batch_loss=batch_loss,
        min_batch=2,
    )
    return module.eval()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_student(spec: Any, input_shape: list[int], n_logits: int) -> nn.Module:
    from closedloop.models.registry import build_network

    return build_network(spec, input_shape, n_logits)


def choose_student(
    family: str,
    params: dict[str, Any],
    input_shape: list[int],
    n_logits: int,
    *,
    teacher_parameters: int,
    max_ratio: float | None,
    default_width: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """The student's ModelSpec and how its size was chosen.

    With ``max_ratio``, and a family that takes ``width`` (small_cnn, mlp), the width is the largest
    one, up to ``params['width']`` (else ``default_width``, the teacher's, else 256), whose student
    has at most ``max_ratio * teacher_parameters`` parameters; candidates are built and counted.
    A family without ``width`` must fit as configured.

    Raises:
        ConfigError: no student of this family fits the bound.
    """
    from closedloop.core.errors import ConfigError
    from closedloop.models.trained import ModelSpec

    def count(p: dict[str, Any]) -> int:
        return n_params(build_student(ModelSpec(family=family, params=p), input_shape, n_logits))

    given = dict(params)
    if max_ratio is None:
        return ModelSpec(family=family, params=given), {"parameters": count(given), "max_ratio": None}
    bound = max_ratio * teacher_parameters
    tried: dict[int, int] = {}

    def fits(width: int) -> bool:
        tried[width] = count({**given, "width": width})
        return tried[width] <= bound

    try:
        has_width = fits(1)
    except TypeError:  # the family has no width knob
        has_width = None
    if has_width is None:
        n = count(given)
        if n > bound:
            raise ConfigError(
                f"stage 'export': distill student {family}({given}) has {n:,} parameters = "
                f"{n / teacher_parameters:.3f} of the teacher's {teacher_parameters:,} "
                f"(> max_parameter_ratio {max_ratio}); pick a smaller student"
            )
        return ModelSpec(family=family, params=given), {"parameters": n, "max_ratio": max_ratio}
    if not has_width:
        raise ConfigError(
            f"stage 'export': even width 1 of {family} has {tried[1]:,} parameters, more than "
            f"max_parameter_ratio {max_ratio} x the teacher's {teacher_parameters:,}"
        )
    lo, hi = 1, int(given.get("width") or default_width or 256)  # lo always fits
    if fits(hi):
        lo = hi
    while hi - lo > 1:  # parameter count grows with width: bisect for the largest width that fits
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    chosen = {**given, "width": lo}
    info = {
        "parameters": tried[lo],
        "max_ratio": max_ratio,
        "width": lo,
        "requested_width": given.get("width"),
        "candidates": {str(w): n for w, n in sorted(tried.items())},
    }
    return ModelSpec(family=family, params=chosen), info
