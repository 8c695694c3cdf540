"""Model families: the features/head convention, shapes, ensembles, the pretrained code path."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from closedloop.core.errors import ConfigError
from closedloop.models.registry import MODELS, build_network
from closedloop.models.trained import ModelSpec, Preprocessing, TrainedModel


@pytest.mark.parametrize(
    ("family", "params", "shape"),
    [
        ("small_cnn", {"width": 4, "depth": 2}, [28, 28, 1]),
        ("small_cnn", {"width": 4, "depth": 4, "blocks": 1}, [8, 8, 3]),
        ("resnet18", {}, [16, 16, 1]),
        ("mlp", {"width": 16, "depth": 2}, [10]),
    ],
)
def test_train_family_convention(family: str, params: dict, shape: list[int]) -> None:
    net = build_network(ModelSpec(family=family, params=params), shape, 3).eval()
    x = torch.randn(2, shape[-1], *shape[:2]) if len(shape) == 3 else torch.randn(2, *shape)
    feats = net.features(x)
    assert feats.ndim == 2 and feats.shape[0] == 2
    assert isinstance(net.head, torch.nn.Linear) and net.head.in_features == feats.shape[1]
    assert net(x).shape == (2, 3)


def test_train_registry_lists_families() -> None:
    assert {"small_cnn", "resnet18", "resnet50", "mlp", "ensemble"} <= set(MODELS.items())


def test_train_resnet_cifar_stem_for_small_images() -> None:
    small = build_network(ModelSpec(family="resnet18"), [28, 28, 1], 1)
    big = build_network(ModelSpec(family="resnet18"), [128, 128, 3], 1)
    assert small.trunk.conv1.kernel_size == (3, 3) and isinstance(small.trunk.maxpool, torch.nn.Identity)
    assert big.trunk.conv1.kernel_size == (7, 7) and small.trunk.conv1.in_channels == 1


def test_train_resnet_pretrained_without_weights_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty cache; no network here
    import torchvision

    def no_download(*a, **k):
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights.DEFAULT, "get_state_dict", no_download)
    with pytest.raises(ConfigError, match="pretrained"):
        build_network(ModelSpec(family="resnet18", params={"pretrained": True}), [28, 28, 1], 1)


def test_train_ensemble_head_averages_member_logits() -> None:
    from closedloop.models.families.ensemble import EnsembleNet

    torch.manual_seed(0)
    members = [build_network(ModelSpec(family="mlp", params={"width": 8}), [5], 3).eval() for _ in range(3)]
    ens = EnsembleNet(members, 3).eval()
    x = torch.randn(4, 5)
    expected = torch.stack([m(x) for m in members]).mean(0)
    torch.testing.assert_close(ens(x), expected)


def test_train_trained_model_roundtrip_with_ensemble(tmp_path) -> None:
    from closedloop.models.families.ensemble import EnsembleNet

    members = [
        build_network(ModelSpec(family="small_cnn", params={"width": 2, "depth": 1}), [8, 8, 1], 1)
        for _ in range(2)
    ]
    spec = ModelSpec(
        family="ensemble",
        params={"member": {"family": "small_cnn", "params": {"width": 2, "depth": 1}}, "n": 2},
    )
    pre = Preprocessing(input_kind="images", input_shape=[8, 8, 1], mean=[0.3], std=[0.2])
    m = TrainedModel(
        spec=spec,
        network=EnsembleNet(members, 1),
        preprocessing=pre,
        problem_type="binary",
        n_outputs=2,
        label_names=["a", "b"],
        temperature=1.5,
        threshold=0.4,
    )
    m.save(tmp_path)
    back = TrainedModel.load(tmp_path)
    X = np.random.default_rng(0).integers(0, 255, (5, 8, 8, 1)).astype(np.uint8)
    np.testing.assert_allclose(back.predict_proba(X), m.predict_proba(X), rtol=1e-5)
    assert back.predict_proba(X).shape == (5, 2) and back.threshold == 0.4
