"""Small trained models for the export tests (digits images, a synthetic table), built without the train stage."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from closedloop.data.bundle import DatasetBundle, DatasetMeta, Split
from closedloop.models.registry import MODELS, register_model
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel
from closedloop.stages.task import DefineTaskConfig, build_task_spec


class TinyCNN(nn.Module):
    def __init__(self, in_ch: int, n_logits: int, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * width, n_logits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class TinyMLP(nn.Module):
    def __init__(self, n_in: int, n_logits: int, hidden: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_logits)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


if "test_export_cnn" not in MODELS._items:

    @register_model("test_export_cnn")
    def _cnn(input_shape: list[int], n_logits: int, width: int = 8) -> nn.Module:
        return TinyCNN(input_shape[-1], n_logits, width)

    @register_model("test_export_mlp")
    def _mlp(input_shape: list[int], n_logits: int, hidden: int = 32) -> nn.Module:
        return TinyMLP(input_shape[0], n_logits, hidden)


def _train(net: nn.Module, raw: nn.Module, X: np.ndarray, y: np.ndarray, binary: bool, steps: int) -> None:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    Xt = torch.from_numpy(X)
    yt = torch.from_numpy(y)
    g = torch.Generator().manual_seed(0)
    raw.train()
    for _ in range(steps):
        idx = torch.randint(0, len(Xt), (64,), generator=g)
        out = raw(Xt[idx])
        if binary:
            loss = nn.functional.binary_cross_entropy_with_logits(out.reshape(-1), yt[idx].float())
        else:
            loss = nn.functional.cross_entropy(out, yt[idx].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
    raw.eval()


def digits_bundle(binary: bool = False) -> DatasetBundle:
    from sklearn.datasets import load_digits

    d = load_digits()
    X = (d.images * (255.0 / 16.0)).round().astype(np.uint8)[..., None]
    y = d.target.astype(np.int64)
    if binary:
        y = (y >= 5).astype(np.int64)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    tr, va, te = order[:1100], order[1100:1450], order[1450:]
    names = ["low", "high"] if binary else [str(i) for i in range(10)]
    meta = DatasetMeta(name="digits", source="sklearn", kind="images", label_names=names, n_channels=1)
    return DatasetBundle(
        meta=meta,
        splits={"train": Split(X[tr], y[tr]), "val": Split(X[va], y[va]), "test": Split(X[te], y[te])},
    )


def digits_model(bundle: DatasetBundle, steps: int = 80, width: int = 8) -> TrainedModel:
    binary = len(bundle.meta.label_names) == 2
    n_logits = 1 if binary else 10
    spec = ModelSpec(family="test_export_cnn", params={"width": width})
    net = MODELS.resolve("test_export_cnn")([8, 8, 1], n_logits, width=width)
    pixels = bundle.train.X.astype(np.float32) / 255.0
    pre = Preprocessing(
        input_kind="images", input_shape=[8, 8, 1], mean=[float(pixels.mean())], std=[float(pixels.std())]
    )
    model = TrainedModel(
        spec=spec,
        network=net,
        preprocessing=pre,
        problem_type="binary" if binary else "multiclass",
        n_outputs=2 if binary else 10,
        label_names=bundle.meta.label_names,
        temperature=1.2,
        threshold=0.45 if binary else None,
    )
    _train(net, model.raw_module(), bundle.train.X.astype(np.float32), bundle.train.y, binary, steps)
    net.eval()
    return model


def table_bundle() -> DatasetBundle:
    rng = np.random.default_rng(0)
    n, f = 900, 6
    X = rng.normal(size=(n, f)).astype(np.float32)
    y = ((X[:, 0] + 0.7 * X[:, 1] - 0.5 * X[:, 2] + 0.3 * rng.normal(size=n)) > 0).astype(np.int64)
    X[rng.random((n, f)) < 0.05] = np.nan
    cols = [f"f{i}" for i in range(f)]
    df = pd.DataFrame(X * 10 + 3, columns=cols)
    parts = {"train": slice(0, 600), "val": slice(600, 780), "test": slice(780, n)}
    splits = {k: Split(df.iloc[s].reset_index(drop=True), y[s]) for k, s in parts.items()}
    meta = DatasetMeta(
        name="synthetic", source="tabular", kind="table", label_names=["no", "yes"], feature_names=cols
    )
    return DatasetBundle(meta=meta, splits=splits)


def table_model(bundle: DatasetBundle, steps: int = 200) -> TrainedModel:
    F = bundle.train.features()
    med = np.nanmedian(F, axis=0)
    filled = np.where(np.isnan(F), med, F)
    pre = Preprocessing(
        input_kind="table",
        input_shape=[F.shape[1]],
        mean=filled.mean(0).tolist(),
        std=(filled.std(0) + 1e-6).tolist(),
        impute=med.tolist(),
        feature_names=list(bundle.train.X.columns),
    )
    net = MODELS.resolve("test_export_mlp")([F.shape[1]], 1)
    model = TrainedModel(
        spec=ModelSpec(family="test_export_mlp", params={}),
        network=net,
        preprocessing=pre,
        problem_type="binary",
        n_outputs=2,
        label_names=["no", "yes"],
        threshold=0.5,
    )
    _train(net, model.raw_module(), F, bundle.train.y, True, steps)
    return model


def task_for(bundle: DatasetBundle, **kw: Any):
    return build_task_spec(DefineTaskConfig(**kw), bundle)
