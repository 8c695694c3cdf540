"""Matplotlib (Agg) helpers for audit figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def new_figure(w: float, h: float) -> tuple[Any, Any]:
    return plt.subplots(figsize=(w, h))


def save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
