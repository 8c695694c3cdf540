"""Helpers for the serving tests: a free loopback port and ``closedloop serve`` in a subprocess that
cannot import torch."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"

# Started before closedloop: any `import torch` in the server process fails, so a test passing through
# a server started this way proves the service never imports torch.
BLOCK_TORCH = """
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this serving test process")
        return None
sys.meta_path.insert(0, _NoTorch())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """``closedloop serve`` in a subprocess that cannot import torch, on a free loopback port."""

    def __init__(self, args: list[str], tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        code = BLOCK_TORCH + (
            "from closedloop.serving.cli import main\n"
            f"raise SystemExit(main(['serve', *{args!r}, '--port', '{self.port}']))\n"
        )
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=self.log.open("wb"), stderr=subprocess.STDOUT, env=env
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/v2/health/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready after {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def serve_labeled(
    champion: Path, shadow: Path, log: Path, batches: list[tuple[str, Any, list[str]]], check: Any = None
) -> None:
    """Serve ``champion`` with ``shadow`` beside it, logging to ``log``; post each ``(request id, body,
    labels)`` batch to ``/predict`` (``check(answer)`` on each answer) and every label back as random
    feedback, then stop the server."""
    import httpx

    server = ServerProcess([str(champion), "--shadow", str(shadow), "--log-dir", str(log)], log.parent)
    try:
        server.wait_ready()
        for rid, body, labels in batches:
            r = httpx.post(f"{server.url}/predict", json=body, headers={"X-Request-Id": rid}, timeout=30)
            assert r.status_code == 200, r.text
            if check is not None:
                check(r.json())
            for j, label in enumerate(labels):
                fb = {"request_id": rid, "index": j, "label": label, "random": True}
                assert httpx.post(f"{server.url}/feedback", json=fb, timeout=30).status_code == 200
    finally:
        server.stop()
