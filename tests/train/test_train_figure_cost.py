"""The training stage's figures cost less without changing what they show (issue #25, trees' speed:
the figures were a third of the tree family's selection): the probe figure that times a draw is drawn
once per process, log axes label their ticks without mathtext, and titles sit at a fixed place."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("matplotlib")

from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.mathtext import MathTextParser  # noqa: E402

from closedloop.stages.train import plots  # noqa: E402


def _spy(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[dict[str, Any]]:
    """Record every call of ``owner.name`` (its keyword arguments), still calling it."""
    calls: list[dict[str, Any]] = []
    fn = getattr(owner, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return fn(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_warm_draws_its_probe_once_then_reports_the_latest_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(plots, "_LAST_DRAW", [])  # a process that has drawn nothing yet
    saved = _spy(monkeypatch, Figure, "savefig")
    first = plots.warm()
    assert len(saved) == 1 and first > 0  # the probe: loads the library and times a render
    assert plots.warm() == first and len(saved) == 1  # a later phase (the next family) draws nothing
    plots.curves(str(tmp_path / "c.png"), {"a": [{"epoch": 1, "train_loss": 1.0}]}, "t")
    assert len(saved) == 2 and (tmp_path / "c.png").is_file()
    assert plots.warm() == plots._LAST_DRAW[-1] and len(saved) == 2  # the curves' own draw time


def test_log_axes_label_their_ticks_without_mathtext(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed = _spy(monkeypatch, MathTextParser, "parse")
    plots.sanity(io.BytesIO(), [0.7 / (i + 1) ** 1.5 for i in range(30)])  # two decades: ticks and labels
    plots.lr_finder(io.BytesIO(), [10 ** (-5 + i / 10) for i in range(50)], [1.0] * 50, 1e-3)
    assert parsed == []


def test_titles_sit_at_a_fixed_place(monkeypatch: pytest.MonkeyPatch) -> None:
    titles = _spy(monkeypatch, Axes, "set_title")
    hist = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "val_auc": 0.8} for e in range(1, 5)]
    plots.sanity(io.BytesIO(), [1.0, 0.5, 0.1])
    plots.curves(io.BytesIO(), {"a": hist}, "Capacity ladder", "auc")
    plots.trials(io.BytesIO(), [0.8, None, 0.9], "auc")
    plots.importance(io.BytesIO(), {"learning_rate": 0.7, "epochs": 0.3})
    plots.lr_finder(io.BytesIO(), [1e-4, 1e-3, 1e-2], [1.0, 0.5, 2.0], 1e-3)
    assert len(titles) == 5 and all(t.get("y") == plots.TITLE_Y for t in titles)
