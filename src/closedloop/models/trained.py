"""The trained model artifact shared by training, export and monitoring.

Every model family is an ``nn.Module`` with ``features(x) -> (N, D)`` (the penultimate layer, used
for embeddings and drift) and ``head: nn.Linear``, with ``forward(x) = head(features(x))``. Families
are built by name from :data:`closedloop.models.registry.MODELS` so weights load with
``torch.load(weights_only=True)`` into a freshly built network (nothing unpickled).

Prediction convention (every stage uses it):

* binary: one logit per sample; ``predict_proba`` returns ``(N, 2)`` = [P(neg), P(pos)]
* multiclass / ordinal: ``(N, K)`` softmax probabilities
* multilabel: ``(N, L)`` independent sigmoid probabilities
* regression: ``(N, 1)`` predicted values

Layout: ``<dir>/model.json`` (spec, preprocessing, calibration), ``<dir>/weights.pt`` (state dict).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from closedloop.artifacts.heldout import HeldOut
from closedloop.core.artifacts import Artifact
from closedloop.core.io import atomic_path, read_json, to_json, write_text_atomic


class ModelSpec(BaseModel):
    """Which family and which hyper-parameters build the network."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    family: str
    """Registry key in MODELS (small_cnn, resnet18, mlp, ...) or an import path."""
    params: dict[str, Any] = Field(default_factory=dict)


class Preprocessing(BaseModel):
    """Raw input -> network input. Images: (N,H,W,C) pixel values -> NCHW, (x/255 - mean)/std.
    Tables: (N,F) float with NaN -> impute -> (x - mean)/std."""

    model_config = ConfigDict(extra="forbid")

    input_kind: Literal["images", "table"]
    input_shape: list[int]
    """(H, W, C) or (F,)."""
    mean: list[float]
    std: list[float]
    impute: list[float] | None = None
    """Per-feature fill value for missing table values (train medians)."""
    feature_names: list[str] = Field(default_factory=list)
    native_missing: bool = False
    """Tables for tree families: values pass through unchanged, NaN included (the trees route missing
    values themselves; no imputation, no scaling: ``mean`` 0 and ``std`` 1)."""
    categories: dict[str, list[str]] = Field(default_factory=dict)
    """Tables: each categorical column's category names in code order (code ``i`` is ``categories[c][i]``),
    so a served request may send the name instead of the code (docs/serving.md)."""
    target_mean: float | None = None
    target_std: float | None = None
    """Regression with a network: the train split's target mean and standard deviation. The network
    trains on standardized targets; the saved model has them folded into its head, so it predicts in the
    target's units (None: not standardized, e.g. tree families)."""

    def input_contract(self) -> dict[str, Any]:
        """The ``input`` section of an exported model's predictor.json (what the ONNX graph accepts)."""
        return {
            "name": "x",
            "kind": self.input_kind,
            "shape": list(self.input_shape),
            "dtype": "float32",
            "accepts": (
                "uint8 or float pixel values 0..255, shape (N, H, W, C), channels last"
                if self.input_kind == "images"
                else "float feature values in the training columns' order, NaN for missing"
            ),
            "feature_names": self.feature_names,
            "categories": self.categories,
            "normalization_in_graph": {"mean": self.mean, "std": self.std, "impute": self.impute},
        }


class RawInputNetwork(nn.Module):
    """Wraps a network with its preprocessing so it takes raw inputs (for ONNX export and serving).

    Input: images ``(N, H, W, C)`` float32 pixel values in [0, 255]; tables ``(N, F)`` float32 with
    NaN for missing. Output: logits (before temperature).
    """

    def __init__(self, network: nn.Module, pre: Preprocessing) -> None:
        super().__init__()
        self.network = network
        self.kind = pre.input_kind
        shape = (1, -1, 1, 1) if pre.input_kind == "images" else (1, -1)
        self.register_buffer("mean", torch.tensor(pre.mean, dtype=torch.float32).reshape(shape))
        self.register_buffer("std", torch.tensor(pre.std, dtype=torch.float32).reshape(shape))
        fill = pre.impute if pre.impute is not None else [0.0] * len(pre.mean)
        self.register_buffer("fill", torch.tensor(fill, dtype=torch.float32).reshape(1, -1))
        self.passthrough = pre.native_missing

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.passthrough:
            return x
        if self.kind == "images":
            x = x.permute(0, 3, 1, 2) / 255.0
        else:
            x = torch.where(torch.isnan(x), self.fill.expand_as(x), x)
        return (x - self.mean) / self.std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.normalize(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(self.normalize(x))


def logits_to_proba(logits: np.ndarray, problem_type: str, temperature: float = 1.0) -> np.ndarray:
    """Apply temperature and the task's link function (see the module docstring's convention)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    if problem_type == "regression":
        return np.asarray(logits, dtype=np.float64).reshape(len(z), -1)
    if problem_type == "binary":
        p = 1.0 / (1.0 + np.exp(-z.reshape(-1)))
        return np.stack([1 - p, p], axis=1)
    if problem_type == "multilabel":
        return 1.0 / (1.0 + np.exp(-z))
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def raw_array(X: Any) -> np.ndarray:
    """Split.X (uint8 images or a DataFrame) -> float32 raw input for :class:`RawInputNetwork`."""
    import pandas as pd

    if isinstance(X, pd.DataFrame):
        from closedloop.data.bundle import Split

        return Split(X=X, y=np.zeros(len(X))).features()
    return np.asarray(X, dtype=np.float32)


class TrainedModel(Artifact):
    """A trained network with everything needed to use it: spec, weights, preprocessing,
    temperature (calibration) and the operating threshold chosen on validation."""

    def __init__(
        self,
        *,
        spec: ModelSpec,
        network: nn.Module,
        preprocessing: Preprocessing,
        problem_type: str,
        n_outputs: int,
        label_names: list[str],
        temperature: float = 1.0,
        threshold: float | None = None,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.network = network.eval()
        self.preprocessing = preprocessing
        self.problem_type = problem_type
        self.n_outputs = n_outputs
        self.label_names = label_names
        self.temperature = float(temperature)
        self.threshold = threshold
        self.info = dict(info or {})

    @property
    def heldout(self) -> HeldOut | None:
        """The validation rows the train stage kept out of this model's final fit, as recorded in
        ``info["heldout"]`` (None for a model trained elsewhere; :mod:`closedloop.models.heldout`)."""
        return HeldOut.of(self.info)

    @property
    def trained_on(self) -> str | None:
        """``train`` or ``train+val`` when the model says which (models without a held-out record)."""
        value = self.info.get("trained_on")
        return None if value is None else str(value)

    # -- inference ------------------------------------------------------------------------------
    def raw_module(self) -> RawInputNetwork:
        """The network with preprocessing inside, taking raw inputs (see :class:`RawInputNetwork`)."""
        return RawInputNetwork(self.network, self.preprocessing).eval()

    @torch.no_grad()
    def _batched(self, X: Any, fn: str, batch_size: int) -> np.ndarray:
        module = self.raw_module()
        arr = raw_array(X)
        outs = []
        for i in range(0, len(arr), batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(arr[i : i + batch_size]))
            outs.append(getattr(module, fn)(xb).float().cpu().numpy())
        if not outs:
            width = self.n_outputs if self.problem_type not in ("binary", "regression") else 1
            return np.zeros((0, width), np.float32)
        return np.concatenate(outs)

    def predict_logits(self, X: Any, batch_size: int = 512) -> np.ndarray:
        """Logits for raw inputs (uint8 images ``(N,H,W,C)`` or a DataFrame)."""
        return self._batched(X, "forward", batch_size)

    def predict_proba(self, X: Any, batch_size: int = 512) -> np.ndarray:
        """Calibrated probabilities in the package's prediction convention."""
        return logits_to_proba(self.predict_logits(X, batch_size), self.problem_type, self.temperature)

    def embed(self, X: Any, batch_size: int = 512) -> np.ndarray:
        """Penultimate-layer features ``(N, D)`` (for drift detection and near-duplicate search)."""
        return self._batched(X, "features", batch_size)

    def n_parameters(self) -> int:
        """Parameters of a network; leaves (+ head) of a tree ensemble."""
        from closedloop.models.registry import n_parameters

        return n_parameters(self.network)

    # -- persistence ----------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "spec": self.spec.model_dump(),
            "preprocessing": self.preprocessing.model_dump(),
            "problem_type": self.problem_type,
            "n_outputs": self.n_outputs,
            "label_names": self.label_names,
            "temperature": self.temperature,
            "threshold": self.threshold,
            "info": self.info,
        }

    def save(self, directory: Path) -> None:
        directory = Path(directory)
        import io

        # through a buffer: torch.save names the zip's root after the file, and the atomic temp name is
        # random, so saving to the temp path directly would make identical weights hash differently
        buf = io.BytesIO()
        torch.save(self.network.state_dict(), buf)
        with atomic_path(directory / "weights.pt") as tmp:
            tmp.write_bytes(buf.getvalue())
        write_text_atomic(directory / "model.json", to_json(self._meta()))

    @classmethod
    def load(cls, directory: Path) -> Self:
        from closedloop.models.registry import build_network

        directory = Path(directory)
        meta = read_json(directory / "model.json")
        spec = ModelSpec.model_validate(meta["spec"])
        pre = Preprocessing.model_validate(meta["preprocessing"])
        network = build_network(
            spec, pre.input_shape, meta["n_outputs"] if meta["problem_type"] != "binary" else 1
        )
        state = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        network.load_state_dict(state)
        return cls(
            spec=spec,
            network=network,
            preprocessing=pre,
            problem_type=meta["problem_type"],
            n_outputs=meta["n_outputs"],
            label_names=meta["label_names"],
            temperature=meta["temperature"],
            threshold=meta["threshold"],
            info=meta.get("info", {}),
        )

    def files(self, directory: Path) -> dict[str, str]:
        return {"weights": "weights.pt", "model_json": "model.json"}
