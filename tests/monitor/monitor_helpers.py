"""Small models and datasets for the monitor tests (digits images, a synthetic table)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.registry import register_model
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel


class TinyCNN(nn.Module):
    def __init__(self, shape: list[int], n: int) -> None:
        super().__init__()
        h, w, c = shape
        self.body = nn.Sequential(
            nn.Conv2d(c, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, 16), nn.ReLU()
        )
        self.head = nn.Linear(16, n)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyMLP(nn.Module):
    def __init__(self, shape: list[int], n: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(shape[0], 16), nn.ReLU())
        self.head = nn.Linear(16, n)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("monitor_test_cnn")
def _cnn(shape: list[int], n: int) -> nn.Module:
    return TinyCNN(shape, n)


@register_model("monitor_test_mlp")
def _mlp(shape: list[int], n: int) -> nn.Module:
    return TinyMLP(shape, n)


def _fit(model: TrainedModel, X: np.ndarray, y: np.ndarray, steps: int, binary: bool) -> None:
    torch.manual_seed(0)
    mod = model.raw_module().train()
    opt = torch.optim.Adam(model.network.parameters(), 1e-2)
    xt = torch.tensor(X, dtype=torch.float32)
    yt = torch.tensor(y)
    for _ in range(steps):
        opt.zero_grad()
        out = mod(xt)
        loss = (
            nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), yt.float())
            if binary
            else nn.functional.cross_entropy(out, yt.long())
        )
        loss.backward()
        opt.step()
    model.network.eval()


def digits_setup(
    n_train: int = 1000, n_test: int | None = None, steps: int = 60
) -> tuple[DatasetBundle, TrainedModel]:
    """Digits split train / 400 val / test (the rest, or ``n_test``) and a small CNN fitted on train."""
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images / 16 * 255).astype(np.uint8)[..., None]
    y = d.target
    p = np.random.default_rng(0).permutation(len(y))
    end = None if n_test is None else n_train + 400 + n_test
    tr, va, te = p[:n_train], p[n_train : n_train + 400], p[n_train + 400 : end]
    bundle = DatasetBundle(
        DatasetMeta(name="digits", source="sklearn", kind="images", label_names=[str(i) for i in range(10)]),
        {"train": Split(X[tr], y[tr]), "val": Split(X[va], y[va]), "test": Split(X[te], y[te])},
    )
    torch.manual_seed(0)
    model = TrainedModel(
        spec=ModelSpec(family="monitor_test_cnn"),
        network=TinyCNN([8, 8, 1], 10),
        preprocessing=Preprocessing(input_kind="images", input_shape=[8, 8, 1], mean=[0.3], std=[0.4]),
        problem_type="multiclass",
        n_outputs=10,
        label_names=[str(i) for i in range(10)],
    )
    _fit(model, X[tr], y[tr], steps, binary=False)
    return bundle, model


def digits_task_setup() -> tuple[DatasetBundle, TrainedModel, object]:
    """``digits_setup()`` with the task the pipeline would define for it."""
    from closedloop.stages.task import DefineTaskConfig, build_task_spec

    bundle, model = digits_setup()
    return bundle, model, build_task_spec(DefineTaskConfig(), bundle)


def stage_profile(digits: tuple, tmp, fast: dict, **kw) -> tuple[object, object]:
    """Run the monitor stage (``fast`` settings plus ``kw``) on ``digits_task_setup()``'s output in ``tmp``;
    returns the stage and its reference profile."""
    from closedloop.core.stage import RunContext
    from closedloop.stages.monitor import BuildMonitorProfile

    bundle, model, task = digits
    stage = BuildMonitorProfile(**fast, **kw)
    out = stage.execute({"data": bundle, "task": task, "model": model}, RunContext("monitor", tmp, seed=0))
    return stage, out.reference


def table_setup() -> tuple[DatasetBundle, TrainedModel]:
    rng = np.random.default_rng(0)
    n = 900
    a = rng.normal(size=n)
    b = rng.normal(size=n)
    color = rng.choice(["red", "green", "blue"], size=n)
    y = ((a + 0.5 * b + (color == "red") + rng.normal(0, 0.5, n)) > 0.5).astype(int)
    df = pd.DataFrame({"a": a, "b": b, "color": pd.Categorical(color, categories=["blue", "green", "red"])})
    df.loc[rng.choice(n, 30, replace=False), "b"] = np.nan
    idx = {"train": np.arange(0, 500), "val": np.arange(500, 750), "test": np.arange(750, n)}
    bundle = DatasetBundle(
        DatasetMeta(
            name="synth",
            source="tabular",
            kind="table",
            label_names=["no", "yes"],
            categorical_features=["color"],
        ),
        {k: Split(df.iloc[v].reset_index(drop=True), y[v]) for k, v in idx.items()},
    )
    feats = Split(df, y).features()
    med = np.nanmedian(feats, axis=0)
    model = TrainedModel(
        spec=ModelSpec(family="monitor_test_mlp"),
        network=TinyMLP([3], 1),
        preprocessing=Preprocessing(
            input_kind="table",
            input_shape=[3],
            mean=[0.0, 0.0, 1.0],
            std=[1.0, 1.0, 1.0],
            impute=med.tolist(),
            feature_names=["a", "b", "color"],
        ),
        problem_type="binary",
        n_outputs=2,
        label_names=["no", "yes"],
    )
    _fit(model, Split(bundle.train.X, y).features(), bundle.train.y, 80, binary=True)
    return bundle, model


def fixed_domain_check(
    p: float,
    auc: float = 0.6,
    p_classifier: float = 0.5,
    ess: float = 200.0,
    n_reference: int = 400,
    n_window: int = 100,
):
    """A domain check result with p-value ``p`` (for tests that set the evidence a flag or a look sees)."""
    from closedloop.monitoring.domain import DomainCheck

    return DomainCheck(
        auc=auc,
        p_value=p,
        p_classifier=p_classifier,
        test="mean_shift",
        ess=ess,
        ess_fraction=0.9,
        max_weight_share=0.01,
        inputs=["proba"],
        n_reference=n_reference,
        n_window=n_window,
    )


def fix_window_domain(mon, monkeypatch, p: float, auc: float = 0.6) -> None:
    """Make the monitor's per-window domain check return p-value ``p`` (the stream and drift tests still run),
    so a test can set the domain evidence a window's estimate flag sees."""
    check = fixed_domain_check(p, auc)
    monkeypatch.setattr(mon, "_domain", lambda win, rng: (check, {}))
