"""The image_folder source, on small image files made here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from closedloop.core.errors import ConfigError, DataError
from closedloop.data.bundle import DatasetBundle
from closedloop.data.sources.image_folder import ImageFolderSource


def write_images(folder: Path, n: int, *, size=(10, 8), mode="L", ext="png", value=0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(value)
    for i in range(n):
        shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
        arr = rng.integers(0, 256, size=shape, dtype=np.uint8)
        Image.fromarray(arr, mode=mode).save(folder / f"img{i:03d}.{ext}")


def flat_dataset(root: Path, **kw) -> Path:
    write_images(root / "cat", 12, value=1, **kw)
    write_images(root / "dog", 8, value=2, **kw)
    return root


def test_flat_layout_makes_seeded_stratified_splits(tmp_path):
    root = flat_dataset(tmp_path / "pets")
    (root / "cat" / "notes.txt").write_text("ignored")
    b = ImageFolderSource(root=str(root), val_fraction=0.25, test_fraction=0.25).load(seed=0)
    assert b.meta.name == "pets" and b.meta.label_names == ["cat", "dog"]
    assert b.meta.split_origin == "seeded_stratified" and b.meta.n_channels == 1
    assert b.train.X.shape[1:] == (8, 10, 1) and b.train.X.dtype == np.uint8
    assert b.sizes() == {"train": 10, "val": 5, "test": 5}
    assert set(b.val.y.tolist()) == {0, 1}
    again = ImageFolderSource(root=str(root), val_fraction=0.25, test_fraction=0.25).load(seed=0)
    np.testing.assert_array_equal(again.train.X, b.train.X)
    np.testing.assert_array_equal(again.val.y, b.val.y)


def test_rgb_auto_and_forced_grayscale(tmp_path):
    root = flat_dataset(tmp_path / "rgb", mode="RGB", ext="jpg")
    assert ImageFolderSource(root=str(root)).load(seed=0).image_shape == (8, 10, 3)
    assert ImageFolderSource(root=str(root), grayscale=True).load(seed=0).image_shape == (8, 10, 1)


def test_mixed_extensions_and_forced_rgb(tmp_path):
    root = tmp_path / "mix"
    write_images(root / "a", 5, ext="bmp")
    write_images(root / "b", 5, ext="JPEG")
    b = ImageFolderSource(root=str(root), grayscale=False).load(seed=0)
    assert b.image_shape == (8, 10, 3) and sum(b.sizes().values()) == 10


def test_mixed_shapes_name_two_files(tmp_path):
    root = flat_dataset(tmp_path / "pets")
    write_images(tmp_path / "odd", 1, size=(12, 12))
    (tmp_path / "odd" / "img000.png").rename(root / "dog" / "zzz.png")
    with pytest.raises(
        DataError, match=r"different shapes: .*cat.*img000.png is 10x8 but .*zzz.png is 12x12.*`size`"
    ):
        ImageFolderSource(root=str(root)).load(seed=0)
    b = ImageFolderSource(root=str(root), size=16).load(seed=0)
    assert b.image_shape == (16, 16, 1)


def test_split_folders_give_source_splits(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 6), ("val", 3), ("test", 2)):
        write_images(root / split / "neg", n)
        write_images(root / split / "pos", n, value=5)
    b = ImageFolderSource(root=str(root)).load(seed=0)
    assert b.meta.split_origin == "source"
    assert b.sizes() == {"train": 12, "val": 6, "test": 4}
    assert b.meta.label_names == ["neg", "pos"]
    assert b.val.y.tolist() == [0, 0, 0, 1, 1, 1]


def test_partial_split_folders(tmp_path):
    root = tmp_path / "ds"
    write_images(root / "train" / "a", 3)
    write_images(root / "test" / "a", 3)
    with pytest.raises(DataError, match=r"has train/, test/ but no val/"):
        ImageFolderSource(root=str(root)).load(seed=0)


def test_empty_class_folder(tmp_path):
    root = flat_dataset(tmp_path / "pets")
    (root / "fish").mkdir()
    with pytest.raises(DataError, match=r"class folder 'fish' holds no images"):
        ImageFolderSource(root=str(root)).load(seed=0)


def test_unreadable_image(tmp_path):
    root = flat_dataset(tmp_path / "pets")
    (root / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"cannot read image .*broken.png"):
        ImageFolderSource(root=str(root)).load(seed=0)


def test_missing_root_and_no_classes(tmp_path):
    with pytest.raises(DataError, match="not found"):
        ImageFolderSource(root=str(tmp_path / "absent")).load(seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class subfolders"):
        ImageFolderSource(root=str(tmp_path / "empty")).load(seed=0)


def test_single_class(tmp_path):
    write_images(tmp_path / "one" / "only", 10)
    with pytest.raises(DataError, match=r"split 'train'.*same class \('only'\)"):
        ImageFolderSource(root=str(tmp_path / "one")).load(seed=0)


def test_split_layout_single_class_in_train(tmp_path):
    root = tmp_path / "ds"
    write_images(root / "train" / "a", 4)
    for split in ("val", "test"):
        write_images(root / split / "a", 2)
        write_images(root / split / "b", 2)
    with pytest.raises(DataError, match=r"split 'train'.*same class \('a'\)"):
        ImageFolderSource(root=str(root)).load(seed=0)


def test_round_trip(tmp_path):
    b = ImageFolderSource(root=str(flat_dataset(tmp_path / "pets"))).load(seed=0)
    b.save(tmp_path / "bundle")
    back = DatasetBundle.load(tmp_path / "bundle")
    assert back.meta == b.meta
    np.testing.assert_array_equal(back.train.X, b.train.X)


def test_config_errors():
    with pytest.raises(ConfigError, match=r"unknown key 'gray'"):
        ImageFolderSource(root="x", gray=True)
    with pytest.raises(ConfigError, match="data.root: required"):
        ImageFolderSource()


def test_16bit_grayscale_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "ct"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            arr = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 60 + i).astype(np.uint16)
            Image.fromarray(arr).save(root / cls / f"{i}.png")
    b = ImageFolderSource(root=str(root)).load(seed=0)
    assert b.image_shape == (8, 8, 1)
    X = np.concatenate([b.train.X, b.val.X])
    assert X.max() == 255 and X.min() == 0 and len(np.unique(X)) > 32
