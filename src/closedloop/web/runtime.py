"""The onnxruntime-web files a page needs, vendored at build time from the pinned npm package.

A user without npm gets them from the npm registry's tarball URL, downloaded once into a cache
(``$CLOSEDLOOP_CACHE_DIR`` or ``$XDG_CACHE_HOME/closedloop`` or ``~/.cache/closedloop``) and checked
against the registry's published sha512 integrity, pinned here. ``--runtime-tarball`` takes the same
file made elsewhere (``npm pack onnxruntime-web@VERSION``) for a machine that cannot reach the registry.
Nothing is fetched when the page runs: the three files are copied into the folder with their sha256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from closedloop.core.errors import ClosedLoopError
from closedloop.core.io import atomic_path, sha256_file

PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
TARBALL_URL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
# dist.integrity of onnxruntime-web@1.30.0 as published by registry.npmjs.org
INTEGRITY = "sha512-q0y+JrrtukXSzsBWEMccVfqX25LRmosXHF+CaRJmg8pZClzcV7svNc4rKY3jL02Vb7QmRMDs1SigqR4CXAfKYQ=="
# The wasm-only build (no WebGL/WebGPU: their int8 kernels have gaps) and its single WebAssembly binary;
# the "threaded" binary also runs with one thread, which needs no cross-origin isolation.
FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")


class RuntimeFilesError(ClosedLoopError):
    """The runtime files cannot be obtained or do not match the pinned package."""


@dataclass(frozen=True)
class RuntimeFiles:
    """The vendored files of one package version: name -> sha256."""

    version: str
    integrity: str
    source: str
    license: str
    sha256: dict[str, str]


def cache_dir() -> Path:
    if os.environ.get("CLOSEDLOOP_CACHE_DIR"):
        return Path(os.environ["CLOSEDLOOP_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "closedloop"


def cached_tarball() -> Path:
    return cache_dir() / "npm" / f"{PACKAGE}-{VERSION}.tgz"


def integrity_of(path: Path) -> str:
    h = hashlib.sha512()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha512-" + base64.b64encode(h.digest()).decode()


def _check(path: Path, origin: str) -> None:
    got = integrity_of(path)
    if got != INTEGRITY:
        raise RuntimeFilesError(
            f"{path} ({origin}): integrity {got[:30]}... does not match {PACKAGE}@{VERSION}'s published "
            f"{INTEGRITY[:30]}...; expected the npm tarball of exactly that version "
            f"(npm pack {PACKAGE}@{VERSION})"
        )


def tarball(
    explicit: str | os.PathLike[str] | None = None, download: bool = True, timeout: float = 120
) -> Path:
    """The checked npm tarball: ``explicit`` if given, else the cached copy, else downloaded once."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise RuntimeFilesError(
                f"--runtime-tarball {path}: no such file (make it with npm pack {PACKAGE}@{VERSION})"
            )
        _check(path, "given with --runtime-tarball")
        return path
    path = cached_tarball()
    if path.is_file():
        _check(path, "cached")
        return path
    if not download:
        raise RuntimeFilesError(f"{path}: {PACKAGE}@{VERSION} is not cached and downloading is off")
    try:
        with urllib.request.urlopen(TARBALL_URL, timeout=timeout) as resp, atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                while block := resp.read(1 << 20):
                    f.write(block)
            _check(tmp, f"downloaded from {TARBALL_URL}")
    except (urllib.error.URLError, OSError) as exc:
        raise RuntimeFilesError(
            f"cannot download {TARBALL_URL} ({exc}); on a machine with npm run `npm pack {PACKAGE}@{VERSION}` "
            f"and pass the file with --runtime-tarball, or copy it to {path}"
        ) from None
    return path


def vendor(dest: Path, explicit: str | os.PathLike[str] | None = None) -> RuntimeFiles:
    """Copy the runtime files out of the checked tarball into ``dest``; their sha256 are returned."""
    src = tarball(explicit)
    dest.mkdir(parents=True, exist_ok=True)
    sums: dict[str, str] = {}
    with tarfile.open(src, "r:gz") as tar:
        for name in FILES:
            try:
                member = tar.extractfile(f"package/dist/{name}")
            except KeyError:
                member = None
            if member is None:
                raise RuntimeFilesError(f"{src}: package/dist/{name} missing from {PACKAGE}@{VERSION}")
            with atomic_path(dest / name) as tmp:
                tmp.write_bytes(member.read())
            sums[name] = sha256_file(dest / name)
        meta = tar.extractfile("package/package.json")
        license_ = str(json.loads(meta.read()).get("license", "")) if meta is not None else ""
    return RuntimeFiles(
        version=VERSION, integrity=INTEGRITY, source=TARBALL_URL, license=license_, sha256=sums
    )
