"""The training engine: in-memory tensors, batched augmentation, AdamW, schedules, early stopping and
resumable checkpoints.

Data stay ``uint8`` tensors (images, NCHW) in memory; a batch is an index slice, converted to float,
augmented and normalized on the batch. Every random draw of the loop (shuffling, augmentation, mixup)
comes from one ``torch.Generator`` whose state is checkpointed with the model, optimizer, scheduler
and global RNG after every epoch, so a run killed mid-training resumes to the same result.

Over 400 lines but one idea: the training loop (the only place that iterates over batches).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from closedloop.core.killpoints import kill_point
from closedloop.core.seeds import derive_seed
from closedloop.models.loop import train_steps
from closedloop.stages.train import knobs as K
from closedloop.stages.train.augment import AugmentParams, augment_images, mix_batch
from closedloop.stages.train.hparams import HParams

CLASSIFICATION = ("binary", "multiclass", "multilabel", "ordinal")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite (the trial is stopped and recorded, not the run)."""


@dataclass
class TensorSet:
    """One split in memory: ``x`` uint8 NCHW images or float32 (N, F) normalized table rows;
    ``y`` targets (float (N, K) for binary/multilabel/regression, long (N,) for multiclass/ordinal)."""

    x: torch.Tensor
    y: torch.Tensor
    y_np: np.ndarray
    """Targets as given (for metrics)."""

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: np.ndarray | torch.Tensor) -> TensorSet:
        i = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return TensorSet(self.x[i], self.y[i], self.y_np[np.asarray(idx)])

    @staticmethod
    def concat(a: TensorSet, b: TensorSet) -> TensorSet:
        return TensorSet(torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), np.concatenate([a.y_np, b.y_np]))


def n_logits_for(problem_type: str, n_outputs: int) -> int:
    return 1 if problem_type in ("binary", "regression") else int(n_outputs)


def make_tensor_set(X: Any, y: np.ndarray, pre: Any, problem_type: str) -> TensorSet:
    """Split arrays -> :class:`TensorSet` using the preprocessing (tables are normalized once here)."""
    from closedloop.models.trained import raw_array

    if pre.input_kind == "images":
        arr = np.asarray(X)
        if arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()
    else:
        a = raw_array(X)
        if getattr(pre, "native_missing", False):  # tree families: raw values, NaN kept
            return _tensor_set(torch.from_numpy(np.ascontiguousarray(a, np.float32)), y, problem_type)
        fill = np.asarray(pre.impute if pre.impute is not None else [0.0] * a.shape[1], np.float32)
        a = np.where(np.isnan(a), fill[None, :], a)
        a = (a - np.asarray(pre.mean, np.float32)) / np.asarray(pre.std, np.float32)
        x = torch.from_numpy(a.astype(np.float32))
    return _tensor_set(x, y, problem_type)


def _tensor_set(x: torch.Tensor, y: np.ndarray, problem_type: str) -> TensorSet:
    y_np = np.asarray(y)
    if problem_type in ("multiclass", "ordinal"):
        yt = torch.from_numpy(y_np.reshape(-1).astype(np.int64))
    else:
        yt = torch.from_numpy(y_np.reshape(len(y_np), -1).astype(np.float32))
    return TensorSet(x, yt, y_np)


@dataclass
class FitResult:
    history: list[dict[str, float]]
    best_epoch: int
    """1-based epoch with the best validation score (last epoch when there is no validation)."""
    best_score: float | None
    stopped: str
    """completed | early_stopped | time_budget."""
    seconds: float
    val_logits: np.ndarray | None = None
    """Validation logits of the returned (best) weights."""
    step_seconds: float | None = None
    """Mean wall seconds of one training step in this process after the fit's first (which pays
    one-time costs; its own time when it is the only one; None: no step taken); what the final phase
    sizes its fit with (a budget input, never in an artifact)."""
    steps_timed: int = 0
    """Steps ``step_seconds`` averages (0: only the first step, one-time costs included)."""
    step_median: float | None = None
    """Median wall seconds of those steps (under load step times are heavy-tailed: the median is the
    typical step, the mean what a long fit costs; budget inputs only)."""
    epochs_planned: int | None = None
    """The epochs the learning-rate schedule ended planned for (``hp.epochs`` unless ``replan``
    changed it)."""
    replans: list[tuple[float, int]] = field(default_factory=list)
    """(epochs done, epochs planned from then on) for every change ``replan`` made, this attempt's
    and the checkpoint's."""

    @property
    def epochs_done(self) -> float:
        """Epochs trained, a part-epoch cut by the deadline counted by its share."""
        return float(sum(float(r.get("epoch_fraction", 1.0)) for r in self.history))


class Engine:
    """Trains and evaluates one network for one task.

    Args:
        problem_type, n_outputs: from the task.
        mean, std: per-channel normalization (images; tables arrive normalized).
        metric: validation metric for early stopping and selection; ``higher_is_better`` its direction.
        device: "cpu" or "cuda"; on CUDA, bf16 autocast and channels-last are used.
    """

    def __init__(
        self,
        problem_type: str,
        n_outputs: int,
        *,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        metric: str = "loss",
        higher_is_better: bool = False,
        metric_convention: str = "standard",
        device: str = "cpu",
        class_counts: list[int] | None = None,
        eval_batch_size: int = 1024,
        target_mean: float | None = None,
        target_std: float | None = None,
    ) -> None:
        self.problem_type = problem_type
        # regression: the network trains on standardized targets (a price in thousands would need head
        # weights in the thousands, which AdamW's steps of about the learning rate never reach) and its
        # logits leave the engine in the target's units; the final model has the scale folded into its head
        self.target_mean = float(target_mean) if target_mean is not None else 0.0
        self.target_std = float(target_std) if target_std is not None else 1.0
        self.n_outputs = n_outputs
        self.n_logits = n_logits_for(problem_type, n_outputs)
        self.device = torch.device(device)
        self.mean = torch.tensor(mean or [0.0], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.std = torch.tensor(std or [1.0], dtype=torch.float32, device=self.device).view(1, -1, 1, 1)
        self.metric = metric
        self.higher_is_better = higher_is_better
        self.metric_convention = metric_convention
        self.class_counts = class_counts
        self.eval_batch_size = eval_batch_size
        self.cuda = self.device.type == "cuda"
        self.eval_row_seconds: float | None = None
        """Wall seconds per row of the latest validation pass of a fit (None before the first): what
        scoring costs under the load of the moment (a budget input, never in an artifact)."""

    # -- batches --------------------------------------------------------------------------------
    def to_input(
        self, xb: torch.Tensor, aug: AugmentParams | None, g: torch.Generator | None
    ) -> torch.Tensor:
        xb = xb.to(self.device, non_blocking=True)
        if xb.dtype == torch.uint8:
            xb = xb.float().div_(255.0)
            if aug is not None and g is not None:
                xb = augment_images(xb, aug, g)
            xb = (xb - self.mean) / self.std
            if self.cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
        return xb

    def soft_targets(self, yb: torch.Tensor, hp: HParams) -> torch.Tensor:
        """Targets as (N, K) floats (so mixup and label smoothing work the same for every task)."""
        yb = yb.to(self.device)
        if self.problem_type in ("multiclass", "ordinal"):
            k = self.n_logits
            if self.problem_type == "ordinal" and hp.ordinal_loss == "sord":
                ranks = torch.arange(k, device=yb.device, dtype=torch.float32)
                t = torch.softmax(-((ranks[None, :] - yb[:, None].float()) ** 2), dim=1)
            else:
                t = F.one_hot(yb, k).float()
            return _knob_targets(t, hp, k)
        if self.problem_type == "regression":
            return (yb.float() - self.target_mean) / self.target_std
        return _knob_targets(yb.float(), hp, 2)  # each sigmoid output: two classes

    def class_weights(self, hp: HParams, y: TensorSet) -> torch.Tensor | None:
        if hp.class_weight == "none" or self.problem_type == "regression":
            return None
        if self.problem_type in ("binary", "multilabel"):
            ym = y.y.float()
            pos = ym.mean(0).clamp(1e-3, 1 - 1e-3)
            w = torch.stack([0.5 / (1 - pos), 0.5 / pos])  # (2, L): weight of a negative, of a positive
        else:
            counts = torch.bincount(y.y, minlength=self.n_logits).float().clamp(min=1)
            w = counts.sum() / (len(counts) * counts)
        if hp.class_weight == "sqrt":
            w = w.sqrt()
        return w.to(self.device)

    def loss(
        self, logits: torch.Tensor, t: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean loss for soft targets ``t``: BCE (binary, multi-label), CE (multi-class, ordinal), MSE."""
        logits = logits.float()
        if self.problem_type == "regression":
            return F.mse_loss(logits, t)
        if self.problem_type in ("binary", "multilabel"):
            per = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
            if weights is not None:
                per = per * (t * weights[1] + (1 - t) * weights[0])
            return per.mean()
        per = -(t * F.log_softmax(logits, dim=1)).sum(1)
        if weights is not None:
            per = per * (t * weights[None, :]).sum(1)
        return per.mean()

    # -- evaluation -----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_logits(self, net: nn.Module, data: TensorSet) -> np.ndarray:
        net.eval()
        outs = []
        for i in range(0, len(data), self.eval_batch_size):
            xb = self.to_input(data.x[i : i + self.eval_batch_size], None, None)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                outs.append(net(xb).float().cpu())
        if not outs:
            return np.zeros((0, self.n_logits), np.float32)
        return self.to_target_units(torch.cat(outs).numpy())

    def fold_target_units(self, net: nn.Module) -> nn.Module:
        """Fold the regression target's scale into ``net.head`` (in place), so the network itself predicts
        in the target's units, as a saved model must; the engine's own :meth:`predict_logits` is for
        networks it trains, not for a folded one."""
        if self.problem_type == "regression" and (self.target_mean, self.target_std) != (0.0, 1.0):
            with torch.no_grad():
                net.head.weight.mul_(self.target_std)
                net.head.bias.mul_(self.target_std).add_(self.target_mean)
        return net

    def to_target_units(self, out: np.ndarray) -> np.ndarray:
        """A network's raw regression outputs (standardized targets) in the target's units; other tasks'
        logits unchanged."""
        if self.problem_type != "regression" or (self.target_mean, self.target_std) == (0.0, 1.0):
            return out
        return (out * self.target_std + self.target_mean).astype(np.float32)

    def evaluate(self, logits: np.ndarray, data: TensorSet) -> dict[str, float]:
        """Validation loss and metric from logits (no smoothing, no weights)."""
        lt = torch.from_numpy(logits)
        if self.problem_type == "regression":  # the loss on the scale the network trains on
            lt = (lt.float() - self.target_mean) / self.target_std
        t = self.soft_targets(data.y, HParams(label_smoothing=0.0, ordinal_loss="ce")).cpu()
        out = {"loss": float(self.loss(lt, t))}
        if self.metric != "loss":
            out[self.metric] = score(
                self.metric, data.y_np, logits, self.problem_type, self.metric_convention
            )
        return out

    def selection_score(self, ev: dict[str, float]) -> float:
        """Higher is better, whatever the metric."""
        v = ev.get(self.metric, ev["loss"])
        if not np.isfinite(v):
            return -math.inf
        return v if (self.higher_is_better and self.metric != "loss") else -v

    # -- training -------------------------------------------------------------------------------
    def make_optimizer(
        self, net: nn.Module, hp: HParams, total_steps: int, warp: ScheduleWarp | None = None
    ) -> tuple[Any, Any]:
        # each group's options come from the optimizer knobs (knobs.py: the learning rate, the weight
        # decay on the weights alone); the engine names none of them
        groups: dict[K.OptimizerGroup, list[nn.Parameter]] = {
            "weights": [p for p in net.parameters() if p.requires_grad and p.ndim > 1],
            "others": [p for p in net.parameters() if p.requires_grad and p.ndim <= 1],
        }
        opt = torch.optim.AdamW(
            [{"params": params, **K.optimizer_options(hp, group)} for group, params in groups.items()]
        )
        f = _schedule(hp, total_steps)
        lam = f if warp is None else (lambda step: f(warp(step)))  # noqa: E731
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda=lam)
        return opt, sched

    def fit(
        self,
        net: nn.Module,
        train: TensorSet,
        val: TensorSet | None,
        hp: HParams,
        *,
        seed: int,
        checkpoint: Path | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        deadline: float | None = None,
        restore_best: bool = True,
        max_steps: int | None = None,
        label: str | None = None,
        replan: Callable[[float, float], int] | None = None,
    ) -> FitResult:
        """Train ``net`` in place. ``on_epoch(epoch, record)`` may raise to stop (Optuna pruning).

        With ``deadline`` (a ``time.time()`` value), the fit stops within one batch of it, after at
        least one step: a part-epoch is scored and marked ``epoch_fraction`` in the history, and
        ``stopped`` says ``time_budget``.
        With ``checkpoint``, the full state is saved after every epoch and a run finding the file resumes.
        Every random draw depends on ``seed`` (and the checkpoint) alone: the loop's generator, and the
        global RNG that dropout reads, seeded here and restored for the caller afterwards (a fit never
        reads or leaves a state an earlier fit touched). ``label`` names its kill points
        (``<label>/epoch<n>``, :mod:`closedloop.core.killpoints`).
        With ``replan`` (a fit the time budget sizes), ``replan(epochs_done, epoch_seconds)`` is asked
        after every whole epoch that has epochs after it, with this fit's own wall seconds per epoch
        (the mean of its latest epochs in this process), and halfway through the first epoch this
        process trains (at its steps' pace so far), for the epochs to plan from then on (at least one
        more after a whole epoch; at least the current one halfway): the schedule's remaining part is
        spread over them (:class:`ScheduleWarp`), so the schedule still ends at an epoch's end; the
        plan is saved in the checkpoint.
        """
        devices = [self.device.index or 0] if self.cuda else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derive_seed(seed, "global rng"))
            return self._fit(
                net,
                train,
                val,
                hp,
                seed=seed,
                checkpoint=checkpoint,
                on_epoch=on_epoch,
                deadline=deadline,
                restore_best=restore_best,
                max_steps=max_steps,
                label=label,
                replan=replan,
            )

    def _fit(
        self,
        net: nn.Module,
        train: TensorSet,
        val: TensorSet | None,
        hp: HParams,
        *,
        seed: int,
        checkpoint: Path | None,
        on_epoch: Callable[[int, dict[str, float]], None] | None,
        deadline: float | None,
        restore_best: bool,
        max_steps: int | None,
        label: str | None,
        replan: Callable[[float, float], int] | None,
    ) -> FitResult:
        t0 = time.time()
        net.to(self.device)
        if self.cuda:
            net.to(memory_format=torch.channels_last)
        dist = _dist_info()
        n = len(train)
        bs = min(hp.batch_size, n)
        steps_per_epoch = max(1, n // (bs * dist[1]))
        total = steps_per_epoch * hp.epochs if max_steps is None else max_steps
        # the schedule is planned in steps; a re-plan changes how fast its remaining part is walked
        # (not under DDP: the ranks would have to agree on their clocks)
        warp = ScheduleWarp(total) if replan is not None and max_steps is None and dist[1] == 1 else None
        planned = hp.epochs
        opt, sched = self.make_optimizer(net, hp, total, warp)
        g = torch.Generator().manual_seed(int(seed))
        weights = self.class_weights(hp, train)
        model = net
        if dist[1] > 1:
            model = nn.parallel.DistributedDataParallel(net)
        history: list[dict[str, float]] = []
        best = (-math.inf, 0, None)  # score, epoch, state
        # validation logits this process computed: of the best epoch's weights, and of the weights the
        # net has now (None once a step changed them); the same weights give the same logits, so the
        # pass after the loop is not run again
        best_logits: np.ndarray | None = None
        scored_logits: np.ndarray | None = None
        start_epoch, bad = 0, 0
        ck = _load_checkpoint(Path(checkpoint)) if checkpoint is not None else None
        if ck is not None:
            net.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            g.set_state(ck["generator"])
            torch.set_rng_state(ck["torch_rng"])
            history = ck["history"]
            start_epoch, bad = int(ck["epoch"]), int(ck["bad_epochs"])
            best = (float(ck["best_score"]), int(ck["best_epoch"]), ck["best_state"])
            if warp is not None and ck.get("schedule"):
                warp.load(ck["schedule"])
                planned = warp.planned // steps_per_epoch
        sampling = _sampler(hp, train, self.problem_type)
        loss_knobs = K.loss_hooks(hp)  # the tuned knobs that add to the loss, at a non-neutral value
        stopped, step = "completed", start_epoch * steps_per_epoch
        start_step, cut_in_epoch = step, deadline is not None and dist[1] == 1
        # step and validation-pass wall seconds (this process, under the load of the moment): what the
        # next step and the scoring after a cut will cost (budget inputs only). The fit's first step
        # pays one-time costs (allocations, kernel selection): it is timed apart and never predicts
        first_step_s, warm_s, warm_steps, last_step_s, eval_s = None, 0.0, 0, 0.0, None
        step_times: list[float] = []
        epoch_times: list[float] = []  # this fit's whole epochs in this process (what ``replan`` reads)
        n_val = len(val) if val is not None else 0
        if cut_in_epoch and n_val and self.eval_row_seconds is None:
            # no validation pass measured in this process yet: time one on this network now (eval
            # mode, no gradient, no random draw: it changes nothing the fit computes)
            probe_t0 = time.perf_counter()
            self.predict_logits(net, val)  # type: ignore[arg-type]
            self.eval_row_seconds = (time.perf_counter() - probe_t0) / n_val
        epoch, epoch_mark, mid = start_epoch - 1, time.perf_counter(), steps_per_epoch // 2
        while epoch + 1 < planned:
            epoch += 1
            model.train()
            if sampling is None:
                perm = torch.randperm(n, generator=g)
            else:
                perm = torch.multinomial(sampling, n, replacement=True, generator=g)
            perm = perm[dist[0] :: dist[1]]
            tot, cnt, cut = 0.0, 0, False
            for b in range(steps_per_epoch):
                if max_steps is not None and step >= max_steps:
                    break
                # the deadline is read before every batch (a clock read costs ~0.1 us, a batch
                # milliseconds), so a phase ends within one batch of its share of the budget; a fit
                # always takes one step, so it has weights to score. Not under DDP: the ranks must
                # agree where to stop, and one rank's clock read is not another's
                # predictive: the next step and the scoring of the part-epoch (a validation pass,
                # measured, or estimated as one step per batch of validation rows before the first)
                # must end by the deadline, so the fit returns by it instead of one step after
                if cut_in_epoch and step > start_step:
                    tail = eval_s
                    if tail is None:
                        per_row = self.eval_row_seconds
                        tail = per_row * n_val if per_row else last_step_s * math.ceil(n_val / bs)
                    if past_deadline(time.time(), deadline, last_step_s + tail):  # type: ignore[arg-type]
                        cut = True
                        break
                if warp is not None and replan is not None and not epoch_times and warm_steps and b == mid:
                    # halfway through this attempt's first epoch, at its steps' pace (the first step's
                    # one-time costs left out): a first plan of one epoch, or one far too long, is
                    # re-planned before its schedule has ended
                    est = warm_s / warm_steps * steps_per_epoch + (self.eval_row_seconds or 0.0) * n_val
                    new = max(epoch + 1, int(replan(epoch + b / steps_per_epoch, est)))
                    if new != planned:
                        warp.replan(step, new * steps_per_epoch)
                        planned = new
                step_t0 = time.perf_counter()
                idx = perm[b * bs : (b + 1) * bs]
                xb = self.to_input(train.x[idx], hp.augment, g)
                t = self.soft_targets(train.y[idx], hp)
                if xb.dim() == 4:
                    xb, t = mix_batch(xb, t, hp.augment, g, step)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.cuda):
                    logits = model(xb)
                loss = self.loss(logits, t, weights)
                for knob, value in loss_knobs:  # e.g. the l1 knob's penalty (knobs.py)
                    loss = loss + knob.loss_term(value, net, logits)
                if not torch.isfinite(loss):
                    raise NonFiniteLossError(
                        f"non-finite training loss ({float(loss.detach())}) at epoch {epoch + 1}, step {b + 1} "
                        f"(lr {sched.get_last_lr()[0]:.2g}); lower the learning rate or check the inputs"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if hp.grad_clip:
                    nn.utils.clip_grad_norm_(net.parameters(), hp.grad_clip)
                opt.step()
                sched.step()
                step += 1
                tot += float(loss.detach()) * len(idx)
                cnt += len(idx)
                took, scored_logits = time.perf_counter() - step_t0, None
                if first_step_s is None:
                    first_step_s = took
                else:
                    warm_s, warm_steps, last_step_s = warm_s + took, warm_steps + 1, took
                    step_times.append(took)
            if dist[1] > 1:
                _average_buffers(net, dist[1])
            if cut and cnt == 0:  # nothing trained in this epoch: it is not one
                stopped = "time_budget"
                break
            rec: dict[str, float] = {"epoch": epoch + 1, "train_loss": tot / max(cnt, 1)}
            rec["lr"] = float(sched.get_last_lr()[0])
            if cut:  # the part of the epoch done when the time ran out (only ever in a cut fit)
                rec["epoch_fraction"] = round(cnt / max(len(perm), 1), 4)
            epoch_logits = None
            if val is not None and len(val):
                eval_t0 = time.perf_counter()
                epoch_logits = self.predict_logits(net, val)
                eval_s, scored_logits = time.perf_counter() - eval_t0, epoch_logits
                self.eval_row_seconds = eval_s / len(val)
                ev = self.evaluate(epoch_logits, val)
                rec.update({f"val_{k}": v for k, v in ev.items()})
                sc = self.selection_score(ev)
            else:
                sc = -rec["train_loss"] if np.isfinite(rec["train_loss"]) else -math.inf
            history.append(rec)  # no wall times: histories enter artifacts (FitResult.seconds has it)
            if sc > best[0] or best[2] is None:
                best = (sc, epoch + 1, _cpu_state(net) if restore_best else None)
                best_logits = epoch_logits
                bad = 0
            else:
                bad += 1
            if cut:  # a part-epoch is scored (a fit cut in its first epoch has nothing else), never
                # checkpointed or offered to pruning: a resume restarts it from the last whole epoch
                stopped = "time_budget"
                break
            # from the previous epoch's end: its checkpoint and callbacks are part of an epoch's cost
            epoch_times.append(time.perf_counter() - epoch_mark)
            epoch_mark = time.perf_counter()
            if warp is not None and replan is not None and epoch + 1 < planned:
                # before the checkpoint, which keeps the new plan: a resume walks the same schedule
                recent = epoch_times[-REPLAN_EPOCHS:]
                new = max(epoch + 2, int(replan(epoch + 1, sum(recent) / len(recent))))
                if new != planned:
                    warp.replan(step, new * steps_per_epoch)
                    planned = new
            if checkpoint is not None and dist[0] == 0:
                _save_checkpoint(
                    checkpoint,
                    {
                        "model": net.state_dict(),
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "generator": g.get_state(),
                        "torch_rng": torch.get_rng_state(),
                        "history": history,
                        "epoch": epoch + 1,
                        "bad_epochs": bad,
                        "best_score": best[0],
                        "best_epoch": best[1],
                        "best_state": best[2] if best[2] is not None else {},
                        "schedule": warp.state() if warp is not None else None,
                    },
                )
            if label is not None:
                kill_point(f"{label}/epoch{epoch + 1}")
            if on_epoch is not None:
                on_epoch(epoch + 1, rec)
            if hp.patience is not None and val is not None and bad >= hp.patience:
                stopped = "early_stopped"
                break
            if deadline is not None and time.time() > deadline and epoch + 1 < planned:
                stopped = "time_budget"
                break
        if restore_best and val is not None and best[2]:
            net.load_state_dict(best[2])
        val_logits = None
        if val is not None and len(val):
            kept = best_logits if restore_best and best[2] else scored_logits
            val_logits = kept if kept is not None else self.predict_logits(net, val)
        return FitResult(
            history=history,
            best_epoch=best[1] if val is not None else len(history),
            best_score=None if val is None else float(best[0]),
            stopped=stopped,
            seconds=time.time() - t0,
            step_seconds=warm_s / warm_steps if warm_steps else first_step_s,
            steps_timed=warm_steps,
            step_median=float(np.median(step_times)) if step_times else first_step_s,
            epochs_planned=planned,
            replans=warp.replans(steps_per_epoch) if warp is not None else [],
            val_logits=val_logits,
        )

    def overfit_batch(
        self, net: nn.Module, batch: TensorSet, *, steps: int, lr: float, deadline: float, label: str
    ) -> list[float]:
        """The sanity check: full-batch AdamW at ``lr`` on one fixed batch, no regularization, the
        loss before each step, until it reaches 5% of the first (0.02 at least for classification)
        or ``steps``; the steps are the fixed recipes' step loop (:func:`~closedloop.models.loop.train_steps`).
        Tree engines boost instead (:mod:`.tree_engine`)."""
        net.to(self.device).train()
        hp = HParams(label_smoothing=0.0, ordinal_loss="ce")
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
        xb = self.to_input(batch.x, None, None)
        t = self.soft_targets(batch.y, hp)
        losses: list[float] = []
        # the slowest whole step so far: under load step times are heavy-tailed, and the check's
        # only cost is a step less, where one step too many overruns its share
        slowest = [0.0]

        def step_numbers() -> Iterator[int]:
            for step in range(steps):
                kill_point(f"{label}/step{step}")
                step_t0 = time.perf_counter()
                yield step  # resumed after the step (forward, backward, optimizer) is done
                slowest[0] = max(slowest[0], time.perf_counter() - step_t0)

        def batch_loss(_: int) -> torch.Tensor | None:
            loss = self.loss(net(xb), t)
            v = float(loss.detach())
            losses.append(v)
            target = max(0.05 * losses[0], 0.02) if self.problem_type != "regression" else 0.05 * losses[0]
            # predictive: stop when the rest of this step (about a step less the forward pass just
            # done) would end past the deadline, so the loop ends by it rather than one step after
            if not math.isfinite(v) or v <= target or past_deadline(time.time(), deadline, slowest[0]):
                return None
            return loss

        train_steps(step_numbers(), optimizer=opt, batch_loss=batch_loss)
        return losses

    def lr_range_test(
        self,
        net: nn.Module,
        train: TensorSet,
        hp: HParams,
        *,
        seed: int,
        steps: int = 60,
        lr_min: float = 1e-5,
        lr_max: float = 1.0,
    ) -> tuple[list[float], list[float], float]:
        """LR finder (Smith 2015): raise the LR exponentially for ``steps`` batches; suggest the LR
        one decade below the loss minimum (the network is modified; pass a copy). The steps are the
        fixed recipes' step loop (:func:`~closedloop.models.loop.train_steps`)."""
        net = net.to(self.device).train()
        g = torch.Generator().manual_seed(seed)
        # the optimizer knobs' options for the weights (weight decay included) on every parameter; the
        # sweep sets the learning rate before each step
        options = K.optimizer_options(hp, "weights")
        opt = torch.optim.AdamW(net.parameters(), **{**options, "lr": lr_min})
        lrs: list[float] = []
        losses: list[float] = []  # smoothed
        bs = min(hp.batch_size, len(train))

        def batches() -> Iterator[tuple[float, torch.Tensor]]:
            for i in range(steps):
                lr = lr_min * (lr_max / lr_min) ** (i / max(steps - 1, 1))
                for grp in opt.param_groups:
                    grp["lr"] = lr
                yield lr, torch.randint(0, len(train), (bs,), generator=g)
                if losses[-1] > 4 * min(losses):  # read after the step: the loss has diverged
                    return

        def batch_loss(b: tuple[float, torch.Tensor]) -> torch.Tensor | None:
            lr, idx = b
            xb = self.to_input(train.x[idx], None, None)
            loss = self.loss(net(xb), self.soft_targets(train.y[idx], hp))
            if not torch.isfinite(loss):
                return None
            v = float(loss.detach())
            lrs.append(lr)
            losses.append(v if not losses else 0.7 * losses[-1] + 0.3 * v)
            return loss

        train_steps(batches(), optimizer=opt, batch_loss=batch_loss)
        best = lrs[int(np.argmin(losses))] if losses else options["lr"]  # no step: the base rate
        return lrs, losses, float(best / 10)


def past_deadline(now: float, deadline: float, next_cost: float) -> bool:
    """Whether work costing ``next_cost`` seconds, started ``now``, would end after ``deadline``
    (all ``time.time()`` values): the loops ask before each step, so a phase ends by its deadline,
    not one step (under load, seconds) after it."""
    return now + max(0.0, next_cost) > deadline


def make_engine(task: Any, pre: Any, device: str) -> Engine:
    """The :class:`Engine` for ``task`` (a TaskSpec) on ``device``, normalizing images with the
    preprocessing's train statistics (tables arrive normalized). Used by the stage and by ``torchrun``."""
    images = pre.input_kind == "images"
    return Engine(
        task.problem_type,
        task.n_outputs,
        mean=pre.mean if images else None,
        std=pre.std if images else None,
        metric=task.primary_metric,
        higher_is_better=task.higher_is_better,
        metric_convention=task.metric_convention,
        device=device,
        target_mean=pre.target_mean,
        target_std=pre.target_std,
    )


REPLAN_EPOCHS = 3
"""A re-plan reads the mean of the fit's latest this many epochs: the load of the moment, with one
slow epoch damped."""


class ScheduleWarp:
    """Maps a fit's steps onto the steps of the schedule it was first planned with (``total``), so
    the number of epochs can change while it trains and the schedule still runs to its end, without
    a jump: from a re-plan at step ``s`` on, the schedule's remaining part is walked at the speed that
    ends it at the new last step. Unchanged, it maps every step to itself (the same learning rates,
    bit for bit)."""

    def __init__(self, total: int) -> None:
        self.total = int(total)
        self.planned = int(total)
        self.knots: list[tuple[int, float, int]] = []
        """(step, schedule step there, planned steps from there on), one per re-plan."""

    def __call__(self, step: int) -> float:
        for s0, v0, planned in reversed(self.knots):  # the latest re-plan at or before ``step``
            if step >= s0:
                return v0 + (step - s0) * (self.total - v0) / max(1, planned - s0)
        return step

    def replan(self, step: int, planned: int) -> None:
        """From ``step`` on, the schedule ends at ``planned`` steps."""
        self.knots.append((int(step), float(self(step)), int(planned)))
        self.planned = int(planned)

    def replans(self, steps_per_epoch: int) -> list[tuple[float, int]]:
        return [(round(s / steps_per_epoch, 2), p // steps_per_epoch) for s, _, p in self.knots]

    def state(self) -> dict[str, Any]:
        return {"total": self.total, "planned": self.planned, "knots": [list(k) for k in self.knots]}

    def load(self, state: dict[str, Any]) -> None:
        self.total, self.planned = int(state["total"]), int(state["planned"])
        self.knots = [(int(s), float(v), int(p)) for s, v, p in state["knots"]]


def _schedule(hp: HParams, total: int) -> Callable[[int], float]:
    warm = max(1, int(hp.warmup * total)) if hp.schedule != "constant" else 0

    def f(step: int) -> float:
        if hp.schedule == "constant":
            return 1.0
        if step < warm:
            start = 1 / 25 if hp.schedule == "onecycle" else 0.0
            return start + (1 - start) * (step + 1) / warm
        prog = min(1.0, (step - warm) / max(1, total - warm))
        floor = 1e-4 if hp.schedule == "onecycle" else 0.0
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * prog))

    return f


def _knob_targets(t: torch.Tensor, hp: HParams, classes: int) -> torch.Tensor:
    """The training targets after every tuned knob that changes them (e.g. label smoothing)."""
    for knob, value in K.target_hooks(hp):
        t = knob.targets(value, t, classes)
    return t


def _sampler(hp: HParams, train: TensorSet, problem_type: str) -> torch.Tensor | None:
    if hp.sampler != "balanced" or problem_type not in ("binary", "multiclass", "ordinal"):
        return None
    y = train.y.reshape(len(train), -1)[:, 0].long() if problem_type == "binary" else train.y
    counts = torch.bincount(y).float().clamp(min=1)
    return (1.0 / counts)[y].double()


def _cpu_state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}


def _load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The saved state, or None (no file, or a damaged one: deleted, and the fit starts over; it is
    written atomically, so only an outside hand can damage it, and it is never read half)."""
    if not path.is_file():
        return None
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
        missing = {"model", "optimizer", "scheduler", "generator", "torch_rng", "epoch"} - set(ck)
        if missing:
            raise KeyError(f"missing {sorted(missing)}")
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means: start over
        import logging

        logging.getLogger("closedloop").warning(
            "checkpoint %s is damaged (%s): starting the fit over", path, exc
        )
        path.unlink()
        return None
    return ck  # type: ignore[no-any-return]


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    from closedloop.core.io import atomic_path

    with atomic_path(Path(path)) as tmp:
        torch.save(state, tmp)


def _average_buffers(net: nn.Module, world: int) -> None:
    """BatchNorm running statistics drift apart on different shards: average them after each epoch so
    every rank evaluates, checkpoints and keeps identical weights."""
    for buf in net.buffers():
        if buf.is_floating_point():
            torch.distributed.all_reduce(buf, op=torch.distributed.ReduceOp.SUM)
            buf.div_(world)


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def score(
    metric: str, y_true: np.ndarray, logits: np.ndarray, problem_type: str, convention: str = "standard"
) -> float:
    """One metric from logits (probabilities via the package's prediction convention); NaN where the
    metric is undefined on this sample (e.g. AUC with one class present), which must not stop training."""
    from closedloop.models.trained import logits_to_proba
    from closedloop.stats.errors import StatsError
    from closedloop.stats.metrics import compute_metrics

    proba = logits_to_proba(logits, problem_type)
    try:
        return float(compute_metrics([metric], y_true, proba, problem_type, convention=convention)[metric])
    except StatsError:
        return float("nan")
