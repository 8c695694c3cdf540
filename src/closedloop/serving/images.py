"""Uploaded image files to the model's raw input, converted like the ``image_folder`` data source did
for training: grayscale (``L``) or RGB by the model's channel count, bilinear resize to the model's
height and width, uint8 pixels, channels last."""

from __future__ import annotations

import io

import numpy as np

from closedloop.serving.protocol import ProtocolError

_WIDE_GRAY = ("I", "I;16", "I;16B", "I;16L", "F")


def decode_image(data: bytes, filename: str, input_shape: tuple[int, ...]) -> np.ndarray:
    """One PNG/JPEG/BMP file as a ``(H, W, C)`` uint8 array for a model taking ``input_shape``."""
    from PIL import Image, UnidentifiedImageError

    if len(input_shape) != 3 or input_shape[-1] not in (1, 3):
        raise ProtocolError(
            f"file {filename!r}: this model takes inputs of shape {list(input_shape)}, not images "
            "(H, W, 1 or 3); send a JSON array instead"
        )
    h, w, c = input_shape
    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            im = opened.copy()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ProtocolError(
            f"file {filename!r} ({len(data)} bytes) is not a readable image ({type(exc).__name__}: {exc}); "
            "expected a PNG or JPEG file"
        ) from None
    if im.mode in _WIDE_GRAY and c == 1:
        # 16-bit / float grayscale: scale this image's own range to 0..255 as the training loader does
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
        im = Image.fromarray(np.rint(a).astype(np.uint8), mode="L")
    im = im.convert("L" if c == 1 else "RGB")
    if im.size != (w, h):
        im = im.resize((w, h), Image.Resampling.BILINEAR)
    arr = np.asarray(im, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr
