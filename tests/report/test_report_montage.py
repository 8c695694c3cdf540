"""The image grid the audit and the export draw: every tile lands in the picture with its pixels, and the
export's float images are spread over the grey range instead of clipped to black."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.image import imread

from closedloop.report.montage import montage
from closedloop.stages.export.model_card import worst_errors_montage


def _grey_levels(path: Path) -> np.ndarray:
    rgb = imread(path)[..., :3]
    return np.round(rgb.mean(-1) * 255).astype(int)


def test_tiles_keep_their_pixels_and_blank_cells_stay_white(tmp_path: Path) -> None:
    black = np.zeros((8, 8, 1), np.uint8)
    grey = np.full((8, 8, 1), 128, np.uint8)
    png = montage([black, grey, black], ["a", "b", "c"], ["row 1", "row 2"], 2, tmp_path / "m.png", "t")
    levels = _grey_levels(png)
    share = {v: float((np.abs(levels - v) <= 2).mean()) for v in (0, 128, 255)}
    assert share[0] > 1.5 * share[128] > 0  # two black tiles, one grey one; the fourth cell is blank
    assert share[255] > 0.5  # background, the blank cell, the title bands


def test_float_images_are_spread_over_the_grey_range(tmp_path: Path) -> None:
    X = np.full((6, 8, 8, 1), 0.5, np.float32)
    X[:, :, 4:] = 1.0  # floats in [0.5, 1]: drawn as the same picture as black and white uint8 halves
    y = np.array([0, 1, 0, 1, 0, 1])
    proba = np.array([[0.1, 0.9], [0.9, 0.1]] * 3)  # every prediction wrong
    floats = worst_errors_montage(X, y, proba, "binary", ["no", "yes"], tmp_path / "f.png")
    as_uint8 = np.where(X == 1.0, 255, 0).astype(np.uint8)
    pixels = worst_errors_montage(as_uint8, y, proba, "binary", ["no", "yes"], tmp_path / "u.png")
    np.testing.assert_array_equal(_grey_levels(floats), _grey_levels(pixels))
