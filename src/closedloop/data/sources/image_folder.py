"""Images in class folders, like torchvision's ``ImageFolder`` (read with PIL, no torchvision).

Two layouts::

    root/<class>/<image>                 seeded stratified splits are made here
    root/{train,val,test}/<class>/<image>  the splits come from the folders

Class indices follow the sorted class folder names. Extensions: png, jpg, jpeg, bmp (any case).

YAML::

    data: {source: image_folder, root: data/xrays, size: 64, grayscale: true}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field

from closedloop.core.errors import DataError
from closedloop.core.registry import register_source
from closedloop.data.bundle import SPLITS, DatasetBundle, DatasetMeta, Split
from closedloop.data.sources.base import DataSource, PathStr, SplitFractionsConfig
from closedloop.data.splits import split_arrays
from closedloop.data.validate import validate_bundle

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


class ImageFolderConfig(SplitFractionsConfig):
    """A folder of class subfolders (or of train/val/test folders of class subfolders)."""

    root: PathStr
    """Folder with one subfolder per class, or with train/, val/ and test/ each holding class subfolders.
    ``~`` is expanded; relative paths are relative to the working directory."""
    grayscale: bool | None = None
    """True: convert to 1 channel; False: to RGB (3 channels); None: 1 channel if every image is
    grayscale, else RGB."""
    size: int | None = Field(None, ge=4, le=1024)
    """Resize every image to size x size (bilinear). Without it all images must share one shape."""


def _image_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in EXTENSIONS
    )


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_gray(files: list[Path], grayscale: bool | None, where: str) -> bool:
    """The channel choice for all splits; auto mode reads only the image headers."""
    if grayscale is not None:
        return grayscale
    from PIL import Image, UnidentifiedImageError

    for f in files:
        try:
            with Image.open(f) as im:
                if im.mode not in _GRAY_MODES:
                    return False
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{where}: cannot read image {f}: {exc}; expected a png/jpg/jpeg/bmp file"
            ) from None
    return True


def _read_images(files: list[Path], *, gray: bool, size: int | None, where: str) -> np.ndarray:
    """Decode ``files`` to one uint8 (N, H, W, C) array."""
    from PIL import Image, UnidentifiedImageError

    arrays = []
    first_shape: tuple[int, ...] | None = None
    first_file: Path | None = None
    for f in files:
        try:
            with Image.open(f) as opened:
                opened.load()
                im = opened.copy()
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(
                f"{where}: cannot read image {f}: {exc}; expected a png/jpg/jpeg/bmp file"
            ) from None
        if im.mode in ("I", "I;16", "I;16B", "I;16L", "F") and gray:
            # 16-bit / float grayscale: PIL would clip to 0..255; scale this image's own min..max instead
            a = np.asarray(im, dtype=np.float64)
            lo, hi = float(a.min()), float(a.max())
            a = np.zeros_like(a) if hi <= lo else (a - lo) * (255.0 / (hi - lo))
            im = Image.fromarray(np.rint(a).astype(np.uint8), mode="L")
        im = im.convert("L" if gray else "RGB")
        if size is not None and im.size != (size, size):
            im = im.resize((size, size), Image.Resampling.BILINEAR)
        arr = np.asarray(im, dtype=np.uint8)
        arr = arr[..., None] if arr.ndim == 2 else arr
        if first_shape is None:
            first_shape, first_file = arr.shape, f
        elif arr.shape != first_shape:
            raise DataError(
                f"{where}: images of different shapes: {first_file} is {first_shape[1]}x{first_shape[0]} but "
                f"{f} is {arr.shape[1]}x{arr.shape[0]} (width x height); expected one shape, or set `size` "
                "to resize every image"
            )
        arrays.append(arr)
    channels = 1 if gray else 3
    if not arrays:
        return np.zeros((0, size or 1, size or 1, channels), np.uint8)
    return np.stack(arrays)


@register_source("image_folder")
class ImageFolderSource(DataSource):
    """Images sorted into class folders; splits from train/val/test folders or made here (seeded)."""

    Config = ImageFolderConfig
    config: ImageFolderConfig

    def load(self, seed: int) -> DatasetBundle:
        cfg = self.config
        root = Path(cfg.root).expanduser().resolve()
        where = f"image folder {root}"
        if not root.is_dir():
            raise DataError(f"{where}: not found; expected a folder with one subfolder per class")
        subdirs = {p.name for p in _class_dirs(root)}
        split_dirs = [s for s in SPLITS if s in subdirs]
        if split_dirs and split_dirs != list(SPLITS):
            missing = [s for s in SPLITS if s not in subdirs]
            raise DataError(
                f"{where}: has {', '.join(d + '/' for d in split_dirs)} but no {', '.join(m + '/' for m in missing)}; "
                "expected either train/, val/ and test/ (each with class subfolders) or only class subfolders"
            )
        provenance: dict[str, Any] = {"root": str(root)}
        if split_dirs:
            per_split = {s: {c.name: _image_files(c) for c in _class_dirs(root / s)} for s in SPLITS}
            classes = sorted(set().union(*(d.keys() for d in per_split.values())))
            if not classes:
                raise DataError(
                    f"{where}: train/, val/ and test/ hold no class subfolders; expected e.g. train/<class>/"
                )
            index = {c: i for i, c in enumerate(classes)}
            split_files = {s: [f for c in sorted(per_split[s]) for f in per_split[s][c]] for s in SPLITS}
            gray = _is_gray([f for fs in split_files.values() for f in fs], cfg.grayscale, where)
            splits: dict[str, Split] = {}
            for s in SPLITS:
                y = np.array(
                    [index[c] for c in sorted(per_split[s]) for _ in per_split[s][c]], dtype=np.int64
                )
                X = _read_images(split_files[s], gray=gray, size=cfg.size, where=f"{where}/{s}")
                splits[s] = Split(X=X, y=y)
                provenance[f"{s}_files"] = len(split_files[s])
            _check_shapes_across(splits, where)
            split_origin = "source"
            warnings: list[str] = []
        else:
            class_dirs = _class_dirs(root)
            if not class_dirs:
                raise DataError(f"{where}: no class subfolders; expected <root>/<class>/<image files>")
            files, labels = [], []
            for i, c in enumerate(class_dirs):
                found = _image_files(c)
                if not found:
                    raise DataError(
                        f"{where}: class folder {c.name!r} holds no images; expected {'/'.join(EXTENSIONS)} files"
                    )
                files += found
                labels += [i] * len(found)
            classes = [c.name for c in class_dirs]
            gray = _is_gray(files, cfg.grayscale, where)
            X = _read_images(files, gray=gray, size=cfg.size, where=where)
            y = np.array(labels, dtype=np.int64)
            splits, plan = split_arrays(
                X,
                y,
                val_fraction=cfg.val_fraction,
                test_fraction=cfg.test_fraction,
                seed=seed,
                label_names=classes,
            )
            provenance["files"] = len(files)
            provenance["splits"] = plan.provenance(seed, cfg.val_fraction, cfg.test_fraction)
            split_origin = "seeded_stratified"
            warnings = [f"{root.name}: {plan.note}"] if plan.small_classes and plan.note else []
        n_channels = int(splits["train"].X.shape[-1])
        meta = DatasetMeta(
            name=root.name,
            source="image_folder",
            kind="images",
            label_names=classes,
            n_channels=n_channels,
            split_origin=split_origin,
            provenance=provenance,
            warnings=warnings,
        )
        return validate_bundle(DatasetBundle(meta=meta, splits=splits), where=where)


def _check_shapes_across(splits: dict[str, Split], where: str) -> None:
    shapes = {s: sp.X.shape[1:] for s, sp in splits.items() if len(sp.X)}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{s}: {shape}" for s, shape in shapes.items())
        raise DataError(
            f"{where}: image shapes differ between splits ({desc}, as H, W, C); expected one shape, "
            "or set `size` to resize every image"
        )
