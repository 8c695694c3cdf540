"""A tree "epoch" is a fixed amount of boosting (rounds x learning rate), and the training stage's figures
can be drawn by a helper process (issue #25)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lightgbm")

from closedloop.models.families.lgbm import TreeEnsemble, epoch_rounds  # noqa: E402
from closedloop.stages.train import plots  # noqa: E402
from closedloop.stages.train.config import TrainConfig  # noqa: E402
from closedloop.stages.train.engine import HParams, TensorSet  # noqa: E402
from closedloop.stages.train.tree_engine import TreeEngine  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_an_epoch_is_the_same_boosting_at_every_learning_rate() -> None:
    assert epoch_rounds(0.1) == 20  # LightGBM's default rate keeps the old 20-round epoch
    assert epoch_rounds(0.01) == 200 and epoch_rounds(0.3) == 7
    assert TreeEnsemble(3, 1, learning_rate=0.02).rounds_per_epoch == 100
    assert TreeEnsemble(3, 1, learning_rate=0.02, rounds_per_epoch=5).rounds_per_epoch == 5  # explicit wins


def test_logits_after_each_epoch_end_at_the_fitted_model() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=300) > 0).astype(np.int64)
    data = TensorSet(torch.from_numpy(x), torch.from_numpy(y), y)
    eng = TreeEngine("binary", 2, metric="auc", higher_is_better=True, device="cpu")
    net = TreeEnsemble(4, 1, num_leaves=4, learning_rate=0.2)  # 10 rounds per epoch
    eng.fit(net, data, None, HParams(epochs=3, patience=None), seed=0, restore_best=False)
    by_epoch = eng.logits_by_epoch(net, data, 4)  # one epoch more than it trained: the last is kept
    assert by_epoch.shape == (4, 300, 1)
    final = eng.predict_logits(net, data).reshape(300, 1)
    np.testing.assert_allclose(by_epoch[2], final, atol=1e-5)
    np.testing.assert_array_equal(by_epoch[3], by_epoch[2])
    assert not np.allclose(by_epoch[0], by_epoch[2])  # the first epoch is 10 rounds, not 30


def test_figures_drawn_by_the_helper_are_on_disk_when_the_block_ends(tmp_path: Path) -> None:
    runs = {"a": [{"epoch": 1, "train_loss": 1.0, "val_loss": 1.1}, {"epoch": 2, "train_loss": 0.5}]}
    with plots.in_background():
        assert plots.warm() == 0.0  # the stage's clock keeps nothing for a figure it does not draw
        plots.sanity(str(tmp_path / "s.png"), [1.0, 0.5, 0.1])
        plots.curves(str(tmp_path / "c.png"), runs, "title")
    for name in ("s.png", "c.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.slow  # a helper interpreter and matplotlib in this one
def test_a_figure_the_helper_cannot_draw_fails_as_it_would_inline(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError), plots.in_background():
        plots.sanity(str(tmp_path / "no_such_folder" / "s.png"), [1.0, 0.5])


def test_figures_setting() -> None:
    assert TrainConfig(figures="inline").figures_in_background() is False
    assert TrainConfig(figures="background").figures_in_background() is True
    auto = TrainConfig()  # inline: the helper's start cost more than the figures (session 11)
    for kinds in (["network"], ["trees", "network"], ["trees"]):
        assert auto.figures_in_background(kinds) is False
    with pytest.raises(ValueError, match="figures"):
        TrainConfig(figures="later")


def test_the_figure_helper_imports_the_drawing_module_without_torch() -> None:
    """The helper runs figure_worker.py as a script and imports plots without the training package's
    ``__init__`` (which imports torch): its start is matplotlib's, not the stage's imports."""
    import subprocess
    import sys

    from closedloop.stages.train import figure_worker

    path = str(Path(figure_worker.__file__).resolve())
    code = (
        f"import runpy, sys; ns = runpy.run_path({path!r}); ns['bare_package']({figure_worker.LIGHT_PACKAGE!r}); "
        "import closedloop.stages.train.plots as p; print(callable(p.sanity), 'torch' in sys.modules, "
        "'closedloop.stages.train.stage' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False", "False"]
    assert "runpy.run_path" in figure_worker.HELPER  # the helper starts the same way
