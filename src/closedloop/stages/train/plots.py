"""Figures of the training stage (matplotlib, Agg backend, PNG).

The margins around the axes are fixed in inches (:func:`_save`), not found by ``tight_layout``: that
draws every figure twice (once to measure its text) and was half of each figure's cost, and the stage
draws a figure in each of its phases (issue #25: on a 4,000-row table the figures were a third of the
tree family's selection time). The margins fit this module's labels: tick labels of up to about seven
characters on the y axis, one line of axis label, a title.

Three more savings that leave every model and every plotted value as they were (session 15): titles sit at
the axes' top (``set_title(y=1.0)``; matplotlib otherwise measures every tick label to move a title above
top-side decorations, which these figures do not have); log axes label their ticks in plain text, not
matplotlib's mathtext (parsing a new tick label such as 10^-2 costs more than drawing the figure); and
:func:`warm` renders its probe figure only once per process (it used to draw one in every sanity phase,
that is once per family of a family run, only to time it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from closedloop.stages.train.figure_worker import FigureWorker

F = TypeVar("F", bound=Callable[..., None])
_WORKER: list[FigureWorker] = []
"""The helper process drawing this stage's figures (:mod:`.figure_worker`), while one is open."""
_LAST_DRAW: list[float] = []
"""Wall seconds of the latest figure drawn in this process (:func:`warm` returns it instead of drawing)."""
TITLE_Y = 1.0
"""Where titles sit (axes fraction): a fixed place, so matplotlib does not lay out the ticks to find one."""


@contextmanager
def in_background(enabled: bool = True) -> Iterator[None]:
    """Figures drawn inside this block go to a helper process (:mod:`.figure_worker`); the block
    ends when every one of them is on disk. ``enabled`` False, or a helper that cannot start: inline."""
    worker = None
    if enabled and not _WORKER:
        from closedloop.stages.train.figure_worker import FigureWorker

        try:
            worker = FigureWorker()
        except OSError:
            worker = None
    if worker is None:
        yield
        return
    _WORKER.append(worker)
    try:
        yield
    except BaseException:
        _WORKER.remove(worker)
        worker.kill()
        raise
    _WORKER.remove(worker)
    for _, name, args, kwargs in worker.finish():  # what the helper did not draw: drawn here
        globals()[name](*args, **kwargs)


def _drawn(fn: F) -> F:
    """A drawing function that goes to the helper process when one is open and its path is a file."""

    @functools.wraps(fn)
    def draw(path: Any, *args: Any, **kwargs: Any) -> None:
        if (
            _WORKER
            and isinstance(path, str)
            and _WORKER[-1].submit((fn.__module__, fn.__name__, (path, *args), kwargs))
        ):
            return
        t0 = time.perf_counter()
        fn(path, *args, **kwargs)
        _LAST_DRAW[:] = [time.perf_counter() - t0]

    return draw  # type: ignore[return-value]


MARGINS_IN = {"left": 0.85, "right": 0.15, "bottom": 0.5, "top": 0.32}
"""Margins around the axes in inches (a y label plus tick labels on the left, an x label plus tick labels
at the bottom, a title at the top)."""
GAP_IN = 0.85
"""Horizontal gap between two panels, in inches (the second panel's y tick labels and label)."""


def _save(fig: Any, path: Any, plt: Any, left_in: float | None = None, **savefig: Any) -> None:
    """Place the axes with the fixed margins, write the PNG (90 dpi) and close the figure."""
    w, h = fig.get_size_inches()
    left = MARGINS_IN["left"] if left_in is None else left_in
    n_cols = max(1, len(fig.axes))
    panel = (w - left - MARGINS_IN["right"] - GAP_IN * (n_cols - 1)) / n_cols
    fig.subplots_adjust(
        left=left / w,
        right=1 - MARGINS_IN["right"] / w,
        bottom=MARGINS_IN["bottom"] / h,
        top=1 - MARGINS_IN["top"] / h,
        wspace=GAP_IN / panel if n_cols > 1 else None,
    )
    fig.savefig(path, dpi=90, **savefig)
    plt.close(fig)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def warm() -> float:
    """What drawing a figure costs on this machine now, in wall seconds (a phase keeps it from its fit's
    deadline): the latest figure this process drew, or, before the first, the render into memory of a
    figure like the sanity check's (a log-scale line, its labels and title, at its size and resolution),
    which also loads the plotting library. 0 while a helper process draws the figures: they cost this
    process nothing."""
    import io

    if _WORKER:
        return 0.0
    if not _LAST_DRAW:
        _plt()
        sanity(io.BytesIO(), [1.0 / (i + 1) for i in range(20)])
    return _LAST_DRAW[-1]


def _plain_log_labels(axis: Any) -> None:
    """Label a log axis's ticks as plain numbers (0.01, 0.2), not through matplotlib's mathtext."""
    from matplotlib.ticker import LogFormatter

    axis.set_major_formatter(LogFormatter(10))
    axis.set_minor_formatter(LogFormatter(10, labelOnlyBase=False))


@_drawn
def curves(path: str, runs: dict[str, list[dict[str, float]]], title: str, metric: str | None = None) -> None:
    """Train/val loss per epoch for each run (and the validation metric on a second panel)."""
    plt = _plt()
    has_metric = metric is not None and any(f"val_{metric}" in r for h in runs.values() for r in h)
    fig, axes = plt.subplots(
        1, 2 if has_metric else 1, figsize=(10 if has_metric else 5.5, 3.6), squeeze=False
    )
    ax = axes[0][0]
    for i, (name, hist) in enumerate(runs.items()):
        color = f"C{i % 10}"
        ep = [r["epoch"] for r in hist]
        ax.plot(ep, [r["train_loss"] for r in hist], "--", color=color, label=f"{name} train")
        if any("val_loss" in r for r in hist):
            ax.plot(ep, [r.get("val_loss") for r in hist], "-", color=color, label=f"{name} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(title, y=TITLE_Y)
    ax.legend(fontsize=7)
    if has_metric:
        ax2 = axes[0][1]
        for i, (name, hist) in enumerate(runs.items()):
            ax2.plot(
                [r["epoch"] for r in hist],
                [r.get(f"val_{metric}") for r in hist],
                color=f"C{i % 10}",
                label=name,
            )
        ax2.set_xlabel("epoch")
        ax2.set_ylabel(f"validation {metric}")
        ax2.legend(fontsize=7)
    _save(fig, path, plt)


@_drawn
def sanity(path: Any, losses: list[float]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.semilogy(range(1, len(losses) + 1), [max(v, 1e-6) for v in losses])
    _plain_log_labels(ax.yaxis)
    ax.set_xlabel("step (same batch)")
    ax.set_ylabel("training loss")
    ax.set_title("Sanity: overfitting one batch", y=TITLE_Y)
    _save(fig, path, plt, format="png")


@_drawn
def lr_finder(path: str, lrs: list[float], losses: list[float], chosen: float) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.semilogx(lrs, losses)
    _plain_log_labels(ax.xaxis)
    ax.axvline(chosen, color="C3", ls="--", label=f"suggested {chosen:.2g}")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed loss")
    ax.legend()
    ax.set_title("LR range test", y=TITLE_Y)
    _save(fig, path, plt)


@_drawn
def trials(path: str, values: list[float | None], metric: str) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    xs = [i for i, v in enumerate(values) if v is not None]
    ys = [v for v in values if v is not None]
    ax.plot(xs, ys, "o", label="trial")
    best, run = [], None
    for v in ys:
        run = v if run is None or v > run else run
        best.append(run)
    ax.plot(xs, best, "-", color="C3", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric} (selection score)")
    ax.set_title("Tuning trials", y=TITLE_Y)
    ax.legend(fontsize=7)
    _save(fig, path, plt)


@_drawn
def importance(path: str, imp: dict[str, float]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 0.4 * max(len(imp), 2) + 1))
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    ax.set_xlabel("importance (fANOVA share of variance)")
    ax.set_title("What each knob mattered", y=TITLE_Y)
    _save(fig, path, plt, left_in=0.3 + 0.08 * max((len(n) for n in names), default=4))  # the knob names


@_drawn
def confusion(path: str, counts: list[list[int]], labels: list[str], title: str) -> None:
    """Rows the true class, columns the predicted one; each cell's colour is its share of the row (the
    recall of the diagonal), its text the count, so a rare class's errors show as clearly as a common one's."""
    import numpy as np

    plt = _plt()
    c = np.asarray(counts, dtype=float)
    k = len(c)
    share = c / np.maximum(c.sum(axis=1, keepdims=True), 1)
    side = min(1.2 + 0.5 * k, 7.0)
    fig, ax = plt.subplots(figsize=(side + 1.2, side))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    short = [str(n)[:12] for n in labels]
    ax.set_xticks(range(k), short, rotation=45 if max(map(len, short)) > 3 else 0, ha="right", fontsize=7)
    ax.set_yticks(range(k), short, fontsize=7)
    if k <= 15:
        for i in range(k):
            for j in range(k):
                ax.text(
                    j,
                    i,
                    f"{int(c[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if share[i, j] > 0.6 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, y=TITLE_Y, fontsize=8)
    _save(fig, path, plt, left_in=0.4 + 0.07 * max(map(len, short)), bbox_inches="tight")
