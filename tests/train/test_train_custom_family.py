"""A model family without a dropout parameter is tuned on the knobs it has (it used to crash)."""

from __future__ import annotations

import torch
from torch import nn

from closedloop.models.registry import accepts_param, register_model
from closedloop.stages.train import TrainModel

from .conftest import TINY, make_ctx


class _NoDropoutNet(nn.Module):
    def __init__(self, n_in: int, width: int, n_logits: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(n_in, width), nn.ReLU())
        self.head = nn.Linear(width, n_logits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("test_no_dropout")
def build_no_dropout(input_shape: list[int], n_logits: int, width: int = 8, depth: int = 1) -> nn.Module:
    n_in = 1
    for s in input_shape:
        n_in *= int(s)
    return _NoDropoutNet(n_in, width, n_logits)


def test_accepts_param_reads_the_builder_signature() -> None:
    assert not accepts_param("test_no_dropout", "dropout")
    assert accepts_param("test_no_dropout", "width")
    assert accepts_param("small_cnn", "dropout")  # forwards **params to a network that has dropout
    assert not accepts_param("ensemble", "dropout")
    assert accepts_param("not_a_registered_family", "dropout")  # built by a stage's own hook


def test_family_without_dropout_is_tuned_without_it(binary_digits, binary_task, tmp_path) -> None:
    stage = TrainModel(**{**TINY, "family": "test_no_dropout"})
    out = stage.execute({"data": binary_digits, "task": binary_task}, make_ctx(tmp_path))
    tune = out.evaluation.phases["tune"]
    assert "dropout" not in tune["space"] and "weight_decay" in tune["space"]
    assert all("dropout" not in t["params"] for t in tune["trials"])
    assert out.model.spec.family == "test_no_dropout" and "dropout" not in out.model.spec.params
