"""Gradient-boosted trees (LightGBM) in the network shape every stage reads (issue #25).

A tree ensemble is not trained by gradient descent, yet training, calibration, export and the monitor
all read a model as ``features(x)`` (the embedding) and ``head: nn.Linear`` (logits =
``head(features(x))``). :class:`TreeEnsemble` keeps that contract: ``features`` is the booster's raw
score (one column per logit) and ``head`` starts as the identity, so temperature/bias calibration and
seed ensembles (:mod:`.ensemble`) fold into it as for any network. The booster itself lives in the
``booster`` buffer as the bytes of LightGBM's text format, so ``weights.pt`` holds it and it loads with
``torch.load(weights_only=True)`` (nothing unpickled). Training is the tree engine's
(:mod:`closedloop.stages.train.tree_engine`); the family's kind, ``"trees"``, tells the train stage to
use it. Needs the optional extra ``closedloop[trees]`` (imported lazily).

Missing values stay NaN (LightGBM routes them natively) and categorical columns arrive as the data
layer's fixed category codes; a code the model never saw (or a negative one) goes where LightGBM
sends an unseen category: to the side of the split that does not list it.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
from torch import nn

from closedloop.models.registry import register_model

LGBM_PARAMS = (
    "num_leaves",
    "max_depth",
    "learning_rate",
    "min_child_samples",
    "reg_lambda",
    "reg_alpha",
    "feature_fraction",
    "bagging_fraction",
)


EPOCH_SHRINKAGE = 2.0
"""The boosting one "epoch" of a tree fit stands for: rounds x learning rate. A round at learning rate
0.01 moves the model a tenth as far as one at 0.1, so an epoch of a fixed round count would compare
slow and fast learners at unequal progress: the tuned ``epochs`` range (the preset's ``max_epochs``)
capped a 0.01 learner at a fifth of the boosting it needs, and the pruner, which compares trials at
the same epoch, cut the slow learners before they converged (MedExp: 8 of 10 trials pruned, every
learning rate below 0.03 among them). Counting epochs in boosting makes ``epochs``, ``patience`` and
the pruner's rungs mean the same progress at every learning rate."""


def epoch_rounds(learning_rate: float) -> int:
    """Boosting rounds per epoch at ``learning_rate``: :data:`EPOCH_SHRINKAGE` / learning rate, rounded
    (20 at 0.1, 200 at 0.01, 7 at 0.3)."""
    return max(1, round(EPOCH_SHRINKAGE / float(learning_rate)))


class TreeEnsemble(nn.Module):
    """A LightGBM booster as a module: ``features(x)`` = raw scores ``(N, n_logits)``, ``head`` identity.

    Args:
        n_in: number of table columns.
        n_logits: 1 (binary, regression) or K (multi-class).
        rounds_per_epoch: boosting rounds that make one "epoch" of the stage's loop (its curves, early
            stopping, pruning and the tuned ``epochs`` count in these units); default
            :func:`epoch_rounds` of the learning rate (20 at LightGBM's default 0.1).
        the rest: LightGBM's parameters of the same name. The defaults are the *unregularized* ones
            (the capacity ladder's setting); the tuner sets the regularizing ones.
    """

    def __init__(
        self,
        n_in: int,
        n_logits: int,
        *,
        num_leaves: int = 31,
        max_depth: int = -1,
        learning_rate: float = 0.1,
        min_child_samples: int = 1,
        reg_lambda: float = 0.0,
        reg_alpha: float = 0.0,
        feature_fraction: float = 1.0,
        bagging_fraction: float = 1.0,
        rounds_per_epoch: int | None = None,
    ) -> None:
        super().__init__()
        if rounds_per_epoch is None:
            rounds_per_epoch = epoch_rounds(learning_rate)
        if num_leaves < 2 or rounds_per_epoch < 1 or min_child_samples < 1:
            raise ValueError(
                f"lgbm: num_leaves >= 2, rounds_per_epoch >= 1 and min_child_samples >= 1 needed (got "
                f"{num_leaves}, {rounds_per_epoch}, {min_child_samples})"
            )
        self.n_in, self.n_logits = int(n_in), int(n_logits)
        self.rounds_per_epoch = int(rounds_per_epoch)
        self.params: dict[str, Any] = {
            "num_leaves": int(num_leaves),
            "max_depth": int(max_depth),
            "learning_rate": float(learning_rate),
            "min_child_samples": int(min_child_samples),
            "reg_lambda": float(reg_lambda),
            "reg_alpha": float(reg_alpha),
            "feature_fraction": float(feature_fraction),
            "bagging_fraction": float(bagging_fraction),
        }
        self.register_buffer("booster", torch.zeros(0, dtype=torch.uint8))
        self.head = nn.Linear(self.n_logits, self.n_logits)
        with torch.no_grad():
            self.head.weight.copy_(torch.eye(self.n_logits))
            self.head.bias.zero_()
        self._cache: tuple[torch.Tensor, int, Any] | None = None
        """The buffer, its version and the ``lightgbm.Booster`` read from it: parsed again only when the
        buffer is replaced or written in place (a load), not hashed on every prediction."""

    # -- the booster --------------------------------------------------------------------------
    def set_booster(self, booster: Any, text: str | None = None) -> None:
        """Store a trained ``lightgbm.Booster`` in the ``booster`` buffer as its text format (``text``,
        when the caller has it already: ``booster`` must then be ``lightgbm.Booster(model_str=text)``).
        ``booster`` serves this module's predictions until the buffer changes."""
        if text is None:
            text = booster.model_to_string()
        self.booster = torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).clone()
        self._cache = (self.booster, self.booster._version, booster)

    def lgb_booster(self) -> Any:
        """The ``lightgbm.Booster`` held in the buffer (None before training)."""
        if self.booster.numel() == 0:
            return None
        c = self._cache
        if c is None or c[0] is not self.booster or c[1] != self.booster._version:
            import lightgbm as lgb

            text = bytes(self.booster.numpy()).decode("utf-8")
            self._cache = (self.booster, self.booster._version, lgb.Booster(model_str=text))
        return self._cache[2]

    def n_leaves(self) -> int:
        """Leaves over all trees, counted in the model text (each tree's ``num_leaves=`` line)."""
        if self.booster.numel() == 0:
            return 0
        text = bytes(self.booster.numpy()).decode("utf-8")
        return sum(int(n) for n in re.findall(r"(?m)^num_leaves=(\d+)$", text))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kw: Any) -> None:
        # the buffer's length is the model text's: take the saved one's size before the copy
        key = prefix + "booster"
        if key in state_dict:
            self.booster = torch.zeros_like(state_dict[key])
            self._cache = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)

    # -- the network contract -----------------------------------------------------------------
    def raw_scores(self, x: np.ndarray) -> np.ndarray:
        """Raw boosting scores ``(N, n_logits)`` (zeros before training)."""
        b = self.lgb_booster()
        if b is None or len(x) == 0:
            return np.zeros((len(x), self.n_logits), np.float32)
        raw = b.predict(np.asarray(x, np.float32), raw_score=True, num_threads=1)
        return np.asarray(raw, np.float32).reshape(len(x), self.n_logits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().reshape(len(x), -1).float().cpu().numpy()
        return torch.from_numpy(self.raw_scores(flat)).to(self.head.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def average_boosters(texts: list[str]) -> str:
    """One LightGBM model text whose raw score is the mean of the members' raw scores: every member's
    trees, renumbered, with leaf values divided by the member count. A sum of trees is the booster's
    raw score, so the mean of N boosters is one booster of all their trees at 1/N; the init score that
    LightGBM folds into each member's first tree is averaged the same way. The members must share the
    objective and columns (one training set, different seeds): the first one's header is kept, without
    ``tree_sizes`` (LightGBM then reads the trees one by one)."""
    if not texts:
        raise ValueError("average_boosters: no member")
    n = len(texts)
    heads = [t[: t.index("\nTree=0\n") + 1] for t in texts]
    same = {re.sub(r"(?m)^tree_sizes=.*\n", "", h) for h in heads}
    if len(same) != 1:
        raise ValueError("average_boosters: the members differ in objective, classes or columns")
    blocks: list[str] = []
    for t in texts:
        body = t[t.index("\nTree=0\n") + 1 : t.index("end of trees")]
        blocks += [b for b in re.split(r"(?m)^(?=Tree=\d+\n)", body) if b.strip()]

    def scale(m: re.Match[str]) -> str:
        return m[1] + "=" + " ".join(repr(float(v) / n) for v in m[2].split())

    trees = [
        re.sub(
            r"(?m)^(leaf_value|internal_value)=(.*)$", scale, re.sub(r"^Tree=\d+", f"Tree={i}", b, count=1)
        )
        for i, b in enumerate(blocks)
    ]
    return same.pop() + "".join(trees) + texts[0][texts[0].index("end of trees") :]


def average_members(members: list[TreeEnsemble]) -> TreeEnsemble:
    """A seed ensemble of trained tree members as one :class:`TreeEnsemble` (:func:`average_boosters`):
    its logits are the mean of the members' logits, as :class:`~.ensemble.EnsembleNet` would give, but
    it is one booster, so export, ONNX parity, serving and the monitor treat it as any tree model.
    The members' heads must still be the identity (before calibration)."""
    import lightgbm as lgb

    eye = torch.eye(members[0].n_logits)
    for m in members:
        if not (torch.equal(m.head.weight.detach().cpu(), eye) and not m.head.bias.detach().any()):
            raise ValueError("average_members: a member's head is not the identity (calibrated already?)")
        if m.lgb_booster() is None:
            raise ValueError("average_members: a member has no trained booster")
    texts = [bytes(m.booster.numpy()).decode("utf-8") for m in members]
    first = members[0]
    out = TreeEnsemble(first.n_in, first.n_logits, rounds_per_epoch=first.rounds_per_epoch, **first.params)
    out.set_booster(lgb.Booster(model_str=average_boosters(texts)))
    return out


@register_model(
    "lgbm",
    # leaves per tree, unregularized (min_child_samples 1); an epoch is 20 boosting rounds
    ladder=[{"num_leaves": 4}, {"num_leaves": 16}, {"num_leaves": 64}, {"num_leaves": 256}],
)
def build_lgbm(
    input_shape: list[int],
    n_logits: int,
    *,
    num_leaves: int = 31,
    max_depth: int = -1,
    learning_rate: float = 0.1,
    min_child_samples: int = 1,
    reg_lambda: float = 0.0,
    reg_alpha: float = 0.0,
    feature_fraction: float = 1.0,
    bagging_fraction: float = 1.0,
    rounds_per_epoch: int | None = None,
) -> TreeEnsemble:
    """Tables only (``input_shape`` (F,)). Params: LightGBM's num_leaves, max_depth, learning_rate,
    min_child_samples, reg_lambda, reg_alpha, feature_fraction, bagging_fraction; rounds_per_epoch."""
    if len(input_shape) != 1:
        raise ValueError(f"lgbm: gradient-boosted trees take tables (F,), not inputs of shape {input_shape}")
    return TreeEnsemble(
        int(input_shape[0]),
        n_logits,
        num_leaves=num_leaves,
        max_depth=max_depth,
        learning_rate=learning_rate,
        min_child_samples=min_child_samples,
        reg_lambda=reg_lambda,
        reg_alpha=reg_alpha,
        feature_fraction=feature_fraction,
        bagging_fraction=bagging_fraction,
        rounds_per_epoch=rounds_per_epoch,
    )


build_lgbm.family_kind = "trees"  # type: ignore[attr-defined]
