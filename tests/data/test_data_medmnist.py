"""The MedMNIST source, on small npz files made here (no network)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from closedloop.core.errors import ConfigError, DataError
from closedloop.data.bundle import DatasetBundle
from closedloop.data.sources import medmnist_npz
from closedloop.data.sources.medmnist_npz import MedMNISTSource, file_name, medmnist_info

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "medmnist"


def make_npz(path: Path, *, n=(40, 10, 12), size=28, channels=1, n_classes=2, multilabel=0, **override):
    """A small MedMNIST-shaped file; ``override`` replaces or (value None) removes keys."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, k in zip(("train", "val", "test"), n, strict=True):
        shape = (k, size, size) if channels == 1 else (k, size, size, channels)
        arrays[f"{split}_images"] = rng.integers(0, 256, size=shape, dtype=np.uint8)
        if multilabel:
            arrays[f"{split}_labels"] = (rng.random((k, multilabel)) < 0.3).astype(np.uint8)
        else:
            arrays[f"{split}_labels"] = (np.arange(k) % n_classes).astype(np.uint8).reshape(k, 1)
    for key, value in override.items():
        if value is None:
            arrays.pop(key)
        else:
            arrays[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_local_file_loads_with_checksum_warning(tmp_path):
    make_npz(tmp_path / "breastmnist.npz")
    b = MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)
    assert b.sizes() == {"train": 40, "val": 10, "test": 12}
    assert b.train.X.shape == (40, 28, 28, 1) and b.train.X.dtype == np.uint8
    assert b.train.y.shape == (40,) and b.train.y.dtype == np.int64
    m = b.meta
    assert m.name == "breastmnist" and m.source == "medmnist" and m.split_origin == "source"
    assert m.task_hint == "binary-class" and m.n_channels == 1
    assert m.label_names == [medmnist_info()["breastmnist"]["label"][k] for k in ("0", "1")]
    p = m.provenance
    assert p["matches"] is False and p["actual_md5"] == md5(tmp_path / "breastmnist.npz")
    assert p["expected_md5"] == medmnist_info()["breastmnist"]["MD5"]
    assert len(m.warnings) == 1 and "differs from the official MedMNIST release" in m.warnings[0]


def test_size_naming_and_rgb(tmp_path):
    assert file_name("dermamnist", 28) == "dermamnist.npz"
    assert file_name("dermamnist", 64) == "dermamnist_64.npz"
    make_npz(tmp_path / "dermamnist_64.npz", size=64, channels=3, n_classes=7)
    b = MedMNISTSource(flag="dermamnist", size=64, root=str(tmp_path), download=False).load(seed=0)
    assert b.image_shape == (64, 64, 3) and len(b.meta.label_names) == 7
    assert b.meta.provenance["expected_md5"] == medmnist_info()["dermamnist"]["MD5_64"]


def test_multilabel_keeps_label_matrix(tmp_path):
    make_npz(tmp_path / "chestmnist.npz", multilabel=14)
    b = MedMNISTSource(flag="chestmnist", root=str(tmp_path), download=False).load(seed=0)
    assert b.train.y.shape == (40, 14) and b.train.y.dtype == np.int64
    assert b.meta.task_hint.startswith("multi-label") and len(b.meta.label_names) == 14


def test_ordinal_flag(tmp_path):
    make_npz(tmp_path / "retinamnist.npz", channels=3, n_classes=5)
    b = MedMNISTSource(flag="retinamnist", root=str(tmp_path), download=False).load(seed=0)
    assert b.meta.task_hint == "ordinal-regression" and set(b.train.y.tolist()) == set(range(5))


def test_round_trip(tmp_path):
    make_npz(tmp_path / "data" / "breastmnist.npz")
    b = MedMNISTSource(flag="breastmnist", root=str(tmp_path / "data"), download=False).load(seed=0)
    b.save(tmp_path / "bundle")
    back = DatasetBundle.load(tmp_path / "bundle")
    assert back.meta == b.meta
    np.testing.assert_array_equal(back.train.X, b.train.X)
    np.testing.assert_array_equal(back.val.y, b.val.y)


def test_max_per_split_is_seeded_and_stratified(tmp_path):
    make_npz(tmp_path / "breastmnist.npz", n=(100, 20, 20))
    src = MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False, max_per_split=10)
    a, b = src.load(seed=1), src.load(seed=1)
    assert a.sizes() == {"train": 10, "val": 10, "test": 10}
    assert a.train.y.sum() == 5  # half of each class, as in the file
    np.testing.assert_array_equal(a.train.X, b.train.X)
    assert a.meta.provenance["max_per_split"] == 10


def test_root_tilde_and_relative(tmp_path, monkeypatch):
    make_npz(tmp_path / "home" / "mm" / "breastmnist.npz")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    b = MedMNISTSource(flag="breastmnist", root="~/mm", download=False).load(seed=0)
    assert b.meta.provenance["file"] == str(tmp_path / "home" / "mm" / "breastmnist.npz")
    monkeypatch.chdir(tmp_path / "home")
    b = MedMNISTSource(flag="breastmnist", root="mm", download=False).load(seed=0)
    assert b.meta.provenance["file"] == str((tmp_path / "home" / "mm" / "breastmnist.npz").resolve())


# -- config errors ---------------------------------------------------------------------------------


def test_unknown_flag_lists_close_matches():
    with pytest.raises(ConfigError, match=r"data.flag: got 'pneumonia'.*did you mean pneumoniamnist"):
        MedMNISTSource(flag="pneumonia")


def test_3d_flag_rejected():
    with pytest.raises(ConfigError, match="3D"):
        MedMNISTSource(flag="organmnist3d")


def test_bad_size_and_unknown_key():
    with pytest.raises(ConfigError, match="data.size"):
        MedMNISTSource(flag="breastmnist", size=32)
    with pytest.raises(ConfigError, match=r"unknown key 'rooot' \(did you mean 'root'\?\)"):
        MedMNISTSource(flag="breastmnist", rooot="x")


# -- download --------------------------------------------------------------------------------------


def _serve(monkeypatch, tmp_path, md5_value=None):
    served = make_npz(tmp_path / "served" / "upstream.npz")
    url = served.as_uri()
    monkeypatch.setattr(medmnist_npz, "release_info", lambda flag, size: (url, md5_value or md5(served)))
    return url


def test_download_verifies_and_places_file(tmp_path, monkeypatch):
    _serve(monkeypatch, tmp_path)
    root = tmp_path / "cache" / "nested"
    b = MedMNISTSource(flag="breastmnist", root=str(root)).load(seed=0)
    assert (root / "breastmnist.npz").is_file()
    assert b.meta.provenance["downloaded"] is True and b.meta.provenance["matches"] is True
    assert b.meta.warnings == []
    assert sorted(p.name for p in root.iterdir()) == ["breastmnist.npz"]
    # second load reads the local copy
    assert (
        MedMNISTSource(flag="breastmnist", root=str(root)).load(seed=0).meta.provenance["downloaded"] is False
    )


def test_download_with_wrong_md5_leaves_nothing(tmp_path, monkeypatch):
    url = _serve(monkeypatch, tmp_path, md5_value="0" * 32)
    root = tmp_path / "cache"
    with pytest.raises(DataError, match=r"MD5 .* differs .*discarded.*by hand") as err:
        MedMNISTSource(flag="breastmnist", root=str(root)).load(seed=0)
    assert url in str(err.value)
    assert not root.exists() or list(root.iterdir()) == []


def test_download_failure_names_url_and_destination(tmp_path, monkeypatch):
    url = (tmp_path / "nowhere.npz").as_uri()
    monkeypatch.setattr(medmnist_npz, "release_info", lambda flag, size: (url, "0" * 32))
    root = tmp_path / "cache"
    with pytest.raises(DataError, match="could not download") as err:
        MedMNISTSource(flag="breastmnist", root=str(root)).load(seed=0)
    assert url in str(err.value) and str(root / "breastmnist.npz") in str(err.value)
    assert list(root.iterdir()) == []


def test_missing_file_without_download(tmp_path):
    with pytest.raises(DataError, match=r"not found and download is off.*zenodo") as err:
        MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)
    assert str(tmp_path / "breastmnist.npz") in str(err.value)


# -- broken files ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"val_labels": None}, r"missing key\(s\) \['val_labels'\]"),
        ({"train_images": np.zeros((40, 28, 27), np.uint8)}, r"'train_images' has shape \(40, 28, 27, 1\)"),
        ({"test_images": np.zeros((12, 28, 28, 3), np.uint8)}, r"'test_images' has shape"),
        ({"val_labels": np.full((10, 1), 2, np.uint8)}, r"'val_labels' has labels out of range \[2\]"),
        ({"train_labels": np.zeros((39, 1), np.uint8)}, r"'train_labels' has 39 labels but .* 40 images"),
        ({"train_labels": np.zeros((40, 2), np.uint8)}, r"'train_labels' has shape \(40, 2\)"),
    ],
)
def test_broken_file(tmp_path, override, match):
    path = make_npz(tmp_path / "breastmnist.npz", **override)
    with pytest.raises(DataError, match=match) as err:
        MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)
    assert str(path) in str(err.value)


def test_nan_in_float_images(tmp_path):
    imgs = np.zeros((10, 28, 28), np.float32)
    imgs[3, 1, 1] = np.nan
    make_npz(tmp_path / "breastmnist.npz", val_images=imgs)
    with pytest.raises(DataError, match="NaN or infinite"):
        MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)


def test_float_images_in_unit_range_are_scaled(tmp_path):
    make_npz(tmp_path / "breastmnist.npz", val_images=np.ones((10, 28, 28), np.float32))
    b = MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)
    assert b.val.X.dtype == np.uint8 and int(b.val.X.max()) == 255


def test_not_an_npz(tmp_path):
    (tmp_path / "breastmnist.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot be read as a .npz"):
        MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)


def test_single_class_train_split(tmp_path):
    make_npz(tmp_path / "breastmnist.npz", train_labels=np.zeros((40, 1), np.uint8))
    with pytest.raises(DataError, match=r"breastmnist.*split 'train'.*same class"):
        MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)


# -- real release file (read-only, shared) ---------------------------------------------------------


@pytest.mark.skipif(not (REAL / "pneumoniamnist.npz").is_file(), reason="shared MedMNIST file not present")
def test_real_pneumoniamnist_matches_release():
    b = MedMNISTSource(flag="pneumoniamnist", root=str(REAL), download=False).load(seed=0)
    assert b.sizes() == {"train": 4708, "val": 524, "test": 624}
    assert b.meta.provenance["matches"] is True and b.meta.warnings == []
    assert b.meta.label_names == ["normal", "pneumonia"]
    assert np.bincount(b.train.y).tolist() == [1214, 3494]


def test_metadata_does_not_import_torch():
    code = (
        "import sys; from closedloop.data.sources.medmnist_npz import MedMNISTSource, medmnist_info; "
        "MedMNISTSource(flag='breastmnist'); assert 'breastmnist' in medmnist_info(); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_empty_split_names_the_file_and_split(tmp_path):
    empty = np.zeros((0, 28, 28), dtype=np.uint8)
    make_npz(tmp_path / "breastmnist.npz", val_images=empty, val_labels=np.zeros((0, 1), dtype=np.uint8))
    with pytest.raises(DataError, match=r"breastmnist\.npz: the val split is empty"):
        MedMNISTSource(flag="breastmnist", root=str(tmp_path), download=False).load(seed=0)
