"""MedMNIST v2 (2D datasets) read straight from the official ``.npz`` release files.

Files are named as MedMNIST names them: ``<root>/<flag>.npz`` for 28x28 and
``<root>/<flag>_<size>.npz`` for 64, 128 and 224. A missing file is downloaded (when ``download`` is
true) from the URL in ``medmnist.INFO``, checked against the MD5 there, and only then moved into
place. A local file whose MD5 differs from the release is still used, with a warning the audit
reports. Only ``medmnist``'s metadata is used: no torch, no torchvision, no dataset classes.

YAML::

    data: {source: medmnist, flag: pneumoniamnist, size: 28, root: ~/.medmnist}
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from closedloop.core.errors import ConfigError, DataError
from closedloop.core.registry import register_source
from closedloop.data.bundle import SPLITS, DatasetBundle, DatasetMeta, Split
from closedloop.data.sources.base import DataSource, PathStr, SourceConfig
from closedloop.data.splits import stratified_subsample
from closedloop.data.validate import check_image_values, validate_bundle

DOWNLOAD_TIMEOUT_S = 60


@functools.cache
def medmnist_info() -> dict[str, dict[str, Any]]:
    """``medmnist.INFO``, read without importing torch.

    ``import medmnist`` (and so ``medmnist.info``) runs the package's ``__init__``, which imports its
    torch dataset classes (~4 s). The metadata lives in ``medmnist/info.py``, which needs only the
    standard library, so it is loaded on its own unless medmnist is already imported.
    """
    loaded = sys.modules.get("medmnist.info")
    if loaded is not None:
        return loaded.INFO
    spec = importlib.util.find_spec("medmnist")  # finds the package without running its __init__
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data source 'medmnist' needs the medmnist package: pip install medmnist")
    path = Path(next(iter(spec.submodule_search_locations))) / "info.py"
    info_spec = importlib.util.spec_from_file_location("_closedloop_medmnist_info", path)
    if info_spec is None or info_spec.loader is None:
        raise ConfigError(f"cannot read MedMNIST metadata from {path}")
    module = importlib.util.module_from_spec(info_spec)
    info_spec.loader.exec_module(module)
    return module.INFO


def flags_2d() -> list[str]:
    """MedMNIST flags of 2D datasets (3D ones end in '3d' and are not supported)."""
    return [f for f in medmnist_info() if not f.endswith("3d")]


def file_name(flag: str, size: int) -> str:
    """MedMNIST's file naming: ``<flag>.npz`` at 28x28, ``<flag>_<size>.npz`` otherwise."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def release_info(flag: str, size: int) -> tuple[str, str]:
    """(download URL, MD5) of the official release file for ``flag`` at ``size``."""
    info = medmnist_info()[flag]
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = info.get(f"url{suffix}"), info.get(f"MD5{suffix}")
    if not url or not md5:
        raise ConfigError(
            f"data.size: MedMNIST {flag!r} has no {size}x{size} release in the installed medmnist "
            f"package (no 'url{suffix}'/'MD5{suffix}' in medmnist.INFO); use size 28 or upgrade medmnist"
        )
    return str(url), str(md5)


def md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class MedMNISTConfig(SourceConfig):
    """One 2D MedMNIST dataset at one image size."""

    flag: str
    """Dataset flag from ``medmnist.INFO``: pneumoniamnist, breastmnist, chestmnist, retinamnist, ..."""
    size: Literal[28, 64, 128, 224] = 28
    """Image side in pixels; 28 reads ``<flag>.npz``, others ``<flag>_<size>.npz``."""
    root: PathStr = "~/.medmnist"
    """Folder holding the ``.npz`` files; ``~`` is expanded, relative paths are relative to the
    working directory."""
    download: bool = True
    """Download a missing file from the official URL (MD5-checked). False: a missing file is an error."""
    max_per_split: int | None = Field(None, ge=1)
    """Keep at most this many examples per split (seeded, class-stratified subsample) for quick runs."""

    @field_validator("flag")
    @classmethod
    def _known_flag(cls, value: str) -> str:
        flag = value.strip().lower()
        known = flags_2d()
        if flag in known:
            return flag
        if flag in medmnist_info():
            raise PydanticCustomError(
                "medmnist_3d", "a 2D MedMNIST flag; {flag} is a 3D dataset, not supported", {"flag": flag}
            )
        close = difflib.get_close_matches(flag, known, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise PydanticCustomError(
            "medmnist_flag",
            "a 2D MedMNIST flag ({hint}known: {known})",
            {"hint": hint, "known": ", ".join(known)},
        )


def resolve_root(root: str) -> Path:
    """``~`` expanded; relative paths taken from the working directory."""
    return Path(os.path.expanduser(root)).resolve()


def download_file(url: str, md5: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` through a temp file in the same folder; verify the MD5 before the
    atomic rename, so ``dest`` only ever holds a complete, verified file."""
    by_hand = (
        f"Download it by hand from {url} (MD5 {md5}) and save it as {dest}, "
        f"or set `root` to a folder that already holds {dest.name}."
    )
    tmp: str | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            while block := resp.read(1 << 20):
                out.write(block)
                h.update(block)
        actual = h.hexdigest()
        if actual != md5:
            raise DataError(
                f"downloaded {url}: MD5 {actual} differs from the release's {md5}; the file was discarded "
                f"(a truncated or altered download). {by_hand}"
            )
        os.replace(tmp, dest)
        tmp = None
    except (OSError, urllib.error.URLError, ValueError) as exc:
        raise DataError(f"could not download {url} to {dest}: {exc}. {by_hand}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _images(raw: np.ndarray, *, where: str, key: str, size: int, channels: int) -> np.ndarray:
    if raw.ndim == 3:
        raw = raw[..., None]
    if raw.ndim != 4 or raw.shape[1:3] != (size, size) or raw.shape[3] != channels:
        raise DataError(
            f"{where}: {key!r} has shape {raw.shape}; expected (N, {size}, {size})"
            + (f" or (N, {size}, {size}, 1)" if channels == 1 else f" (N, {size}, {size}, {channels})")
            + f" for {size}x{size} images with {channels} channel(s)"
        )
    if raw.dtype == np.uint8:
        return raw
    check_image_values(raw, where=where, split=key.split("_")[0])
    lo, hi = (float(raw.min()), float(raw.max())) if raw.size else (0.0, 0.0)
    if lo < 0 or hi > 255:
        raise DataError(f"{where}: {key!r} has pixel values in {lo:g}..{hi:g}; expected 0..255 (or 0..1)")
    scale = 255.0 if raw.dtype.kind == "f" and hi <= 1.0 else 1.0
    return np.rint(raw.astype(np.float64) * scale).astype(np.uint8)


def _labels(raw: np.ndarray, *, where: str, key: str, n: int, multilabel: bool, n_labels: int) -> np.ndarray:
    if len(raw) != n:
        raise DataError(
            f"{where}: {key!r} has {len(raw)} labels but the images key has {n} images; expected one label per image"
        )
    flat = raw.reshape(len(raw), -1)
    if raw.dtype.kind not in "biuf" or not np.isfinite(flat.astype(np.float64)).all():
        raise DataError(f"{where}: {key!r} holds non-numeric or missing labels; expected integer labels")
    if multilabel:
        if flat.shape[1] != n_labels:
            raise DataError(
                f"{where}: {key!r} has shape {raw.shape}; expected (N, {n_labels}) (one column per label)"
            )
        bad = ~np.isin(flat, (0, 1)).all(axis=1)
        if bad.any():
            raise DataError(f"{where}: {key!r} has values outside {{0, 1}}; expected 0/1 per label")
        return flat.astype(np.int64)
    if flat.shape[1] != 1:
        raise DataError(f"{where}: {key!r} has shape {raw.shape}; expected (N, 1) class indices")
    y = flat[:, 0]
    bad = (y != np.round(y)) | (y < 0) | (y >= n_labels)
    if bad.any():
        found = sorted({int(v) if v == int(v) else float(v) for v in y[bad][:10]})
        raise DataError(
            f"{where}: {key!r} has labels out of range {found}; expected integer classes 0..{n_labels - 1} "
            f"({n_labels} classes for this flag)"
        )
    return y.astype(np.int64)


@register_source("medmnist")
class MedMNISTSource(DataSource):
    """A 2D MedMNIST dataset with its official train/val/test splits."""

    Config = MedMNISTConfig
    config: MedMNISTConfig

    def path(self) -> Path:
        """Where the ``.npz`` file is (or will be downloaded to)."""
        return resolve_root(self.config.root) / file_name(self.config.flag, self.config.size)

    def load(self, seed: int) -> DatasetBundle:
        cfg = self.config
        info = medmnist_info()[cfg.flag]
        url, expected_md5 = release_info(cfg.flag, cfg.size)
        path = self.path()
        where = f"MedMNIST file {path}"
        downloaded = False
        if not path.is_file():
            if not cfg.download:
                raise DataError(
                    f"{where} not found and download is off (download: false). Download it from {url} "
                    f"(MD5 {expected_md5}) and save it there, set `root` to the folder holding "
                    f"{path.name}, or set download: true"
                )
            download_file(url, expected_md5, path)
            downloaded = True
        actual_md5 = md5_file(path)
        matches = actual_md5 == expected_md5
        warnings = []
        if not matches:
            warnings.append(
                f"{path.name}: MD5 {actual_md5} differs from the official MedMNIST release ({expected_md5}); "
                "the file was loaded, but results may not be comparable with published MedMNIST figures"
            )

        label_map: dict[str, str] = info["label"]
        label_names = [label_map[k] for k in sorted(label_map, key=int)]
        task = str(info["task"])
        multilabel = task.startswith("multi-label")
        channels = int(info["n_channels"])
        splits: dict[str, Split] = {}
        try:
            npz = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same clear message
            raise DataError(
                f"{where}: cannot be read as a .npz archive ({exc}); expected MedMNIST's npz"
            ) from None
        with npz:
            for name in SPLITS:
                ikey, lkey = f"{name}_images", f"{name}_labels"
                missing = [k for k in (ikey, lkey) if k not in npz.files]
                if missing:
                    raise DataError(
                        f"{where}: missing key(s) {missing}; found {sorted(npz.files)}; expected "
                        + ", ".join(f"{s}_images, {s}_labels" for s in SPLITS)
                    )
                try:
                    raw_x, raw_y = npz[ikey], npz[lkey]
                except Exception as exc:  # noqa: BLE001
                    raise DataError(f"{where}: cannot read {ikey!r}/{lkey!r}: {exc}") from None
                if len(raw_x) == 0 or len(raw_y) == 0:
                    raise DataError(
                        f"{where}: the {name} split is empty ({ikey!r} has {len(raw_x)} images, {lkey!r} "
                        f"{len(raw_y)} labels); expected at least one labelled image in each of {', '.join(SPLITS)}"
                    )
                X = _images(raw_x, where=where, key=ikey, size=cfg.size, channels=channels)
                y = _labels(
                    raw_y, where=where, key=lkey, n=len(X), multilabel=multilabel, n_labels=len(label_names)
                )
                if cfg.max_per_split is not None and len(y) > cfg.max_per_split:
                    keep = stratified_subsample(y, cfg.max_per_split, seed)
                    X, y = X[keep], y[keep]
                splits[name] = Split(X=np.ascontiguousarray(X), y=y)

        provenance: dict[str, Any] = {
            "file": str(path),
            "url": url,
            "expected_md5": expected_md5,
            "actual_md5": actual_md5,
            "matches": matches,
            "downloaded": downloaded,
            "release_sizes": dict(info.get("n_samples", {})),
            "license": info.get("license"),
        }
        if cfg.max_per_split is not None:
            provenance["max_per_split"] = cfg.max_per_split
            provenance["subsample_seed"] = seed
        meta = DatasetMeta(
            name=cfg.flag,
            source="medmnist",
            kind="images",
            task_hint=task,
            label_names=label_names,
            n_channels=channels,
            split_origin="source",
            provenance=provenance,
            warnings=warnings,
        )
        return validate_bundle(
            DatasetBundle(meta=meta, splits=splits), where=f"dataset {cfg.flag!r} ({path})"
        )
