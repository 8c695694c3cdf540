"""Where the page's runtime comes from: the pinned onnxruntime-web npm tarball, checked, cached, or refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.web import runtime

ROOT = Path(__file__).resolve().parents[2]


def test_a_tarball_that_is_not_the_pinned_package_is_refused(tmp_path: Path) -> None:
    fake = tmp_path / "onnxruntime-web-1.30.0.tgz"
    fake.write_bytes(b"not the npm package")
    with pytest.raises(
        runtime.RuntimeFilesError, match=r"does not match onnxruntime-web@1\.30\.0's published"
    ):
        runtime.tarball(fake)
    with pytest.raises(runtime.RuntimeFilesError, match="no such file"):
        runtime.tarball(tmp_path / "missing.tgz")


def test_no_network_says_how_to_get_the_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOSEDLOOP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(runtime, "TARBALL_URL", "http://127.0.0.1:9/onnxruntime-web-1.30.0.tgz")
    with pytest.raises(runtime.RuntimeFilesError, match="npm pack onnxruntime-web@1.30.0.*--runtime-tarball"):
        runtime.tarball(timeout=5)
    assert not any((tmp_path / "cache").rglob("*.tgz"))  # nothing half-written is left to be trusted
    # a corrupted cache is refused, not used
    bad = runtime.cached_tarball()
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"truncated")
    with pytest.raises(runtime.RuntimeFilesError, match="cached"):
        runtime.tarball()


def test_ci_fetches_the_pinned_version() -> None:
    text = (ROOT / ".ci" / "run").read_text()
    assert f"onnxruntime-web-{runtime.VERSION}.tgz" in text
    assert runtime.TARBALL_URL.endswith(f"onnxruntime-web-{runtime.VERSION}.tgz")
