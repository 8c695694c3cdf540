"""A tracker that lives in a helper process, so a heavy tracking library loads on another core.

Why: ``import mlflow`` plus opening the store costs about 2-4 s of CPU, which in the run's own process
competes with the stages for the interpreter lock (a background *thread* does not help much). A helper
process started when the run starts imports the library and opens the store while the stages run; at the
end the pipeline makes the same :class:`~closedloop.tracking.base.Tracker` calls as in-process, each
one forwarded over a pipe and answered (return value or error) before the next, so nothing is sent
after the run returns and a failure is reported exactly like an in-process one.

A backend opts in with ``out_of_process = True`` (MLflow does). The helper process ends when its pipe
closes: at :meth:`TrackerProcess.close`, or when the run's process exits.

Example:
    >>> from closedloop.tracking.config import TrackingSpec
    >>> from closedloop.tracking.worker import TrackerProcess
    >>> proc = TrackerProcess(TrackingSpec(backend="none"))
    >>> proc.call("start", "exp", "run", {}) is None
    True
    >>> proc.close()
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from closedloop.tracking.base import TRACKERS, Tracker
from closedloop.tracking.config import TrackingSpec

_CALLS = frozenset(
    {"start", "log_params", "log_metrics", "log_curve", "log_artifact", "register_model", "find_version"}
    | {"get_alias", "set_alias", "delete_alias", "url", "finish", "uri"}
)


class RemoteTrackerError(RuntimeError):
    """An error raised by the tracker in the helper process; ``kind`` is its class name there."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class TrackerProcess:
    """The helper process for one run: started at once, asked one :class:`Tracker` call at a time."""

    def __init__(self, spec: TrackingSpec) -> None:
        cls = TRACKERS.resolve(spec.backend, where="tracking.backend")
        root = str(Path(__file__).resolve().parents[2])  # where `closedloop` itself is importable from
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
        }
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "closedloop.tracking.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )
        self._send((cls.__module__, spec.backend, spec.model_dump(mode="json")))

    def _send(self, message: Any) -> None:
        assert self._proc.stdin is not None
        pickle.dump(message, self._proc.stdin)
        self._proc.stdin.flush()

    def call(self, method: str, *args: Any) -> Any:
        """Run ``tracker.<method>(*args)`` in the helper process and return its result (or raise its error)."""
        if method not in _CALLS:
            raise AttributeError(f"Tracker has no call {method!r}")
        try:
            self._send((method, args))
            assert self._proc.stdout is not None
            kind, value = pickle.load(self._proc.stdout)
        except (BrokenPipeError, EOFError, OSError) as exc:
            code = self._proc.poll()
            raise RemoteTrackerError(
                "TrackerProcessDied", f"the tracking helper process ended (exit code {code}): {exc}"
            ) from None
        if kind == "error":
            raise RemoteTrackerError(*value)
        return value

    def close(self) -> None:
        """End the helper process (it finishes the call in progress first)."""
        if self._proc.stdin is not None:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        try:
            self._proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        if self._proc.stdout is not None:
            self._proc.stdout.close()


class RemoteTracker(Tracker):
    """The :class:`Tracker` interface, every call answered by a :class:`TrackerProcess`."""

    def __init__(self, spec: TrackingSpec, process: TrackerProcess) -> None:
        super().__init__(spec)
        self.process = process

    def start(self, experiment: str, run_name: str, tags: dict[str, str]) -> str | None:
        return self.process.call("start", experiment, run_name, tags)

    def log_params(self, params: dict[str, str]) -> None:
        self.process.call("log_params", params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.process.call("log_metrics", metrics, step)

    def log_curve(self, key: str, points: list[tuple[int, float]]) -> None:
        self.process.call("log_curve", key, points)

    def log_artifact(self, path: Path, folder: str = "") -> None:
        self.process.call("log_artifact", Path(path), folder)

    def register_model(self, name: str, folder: str, tags: dict[str, str]) -> str | None:
        return self.process.call("register_model", name, folder, tags)

    def url(self) -> str | None:
        return self.process.call("url")

    def finish(self, ok: bool) -> None:
        self.process.call("finish", ok)

    @property
    def uri(self) -> str | None:
        return self.process.call("uri")


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """The helper process's loop: build the tracker, then answer calls until the pipe closes."""
    module, backend, spec_data = pickle.load(requests)
    tracker: Tracker | None = None
    failure: tuple[str, str] | None = None
    try:
        __import__(module)  # registers the backend (a plug-in module, or the built-in MLflow one)
        cls = TRACKERS.resolve(backend, where="tracking.backend")
        cls.prepare()
        tracker = cls(TrackingSpec.model_validate(spec_data))  # opens the store while the run goes on
    except Exception as exc:
        failure = (type(exc).__name__, str(exc))
    while True:
        try:
            method, args = pickle.load(requests)
        except EOFError:
            return
        try:
            if tracker is None:
                assert failure is not None
                raise RemoteTrackerError(*failure)
            if method == "uri":
                value = getattr(tracker, "uri", None)
            else:
                value = getattr(tracker, method)(*args)
            reply: tuple[str, Any] = ("ok", value)
        except RemoteTrackerError as exc:
            reply = ("error", (exc.kind, str(exc)))
        except Exception as exc:
            reply = ("error", (type(exc).__name__, str(exc)))
        pickle.dump(reply, replies)
        replies.flush()


NICENESS = 10
"""The helper is background work: at a lower priority it uses cores the stages leave idle and never
slows them down; at the end the run waits on it, so it then has a core to itself."""


def main() -> None:
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: no os.nice (Windows)
        os.nice(NICENESS)
    # Keep the protocol's pipe to ourselves: anything a library prints goes to stderr instead.
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
