"""MLflow backend (extra ``closedloop[mlflow]``): one pipeline run = one MLflow run; the exported model
becomes a registered model version. mlflow is imported inside the methods, never at ``import closedloop``.

Works with any MLflow tracking URI: a local SQLite file (``sqlite:///mlflow.db``, no server), a file
store, or a tracking server (``http://host:5000``). A server that does not answer fails after one
request of ``timeout_s`` instead of MLflow's default minutes of retries.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from closedloop.core.errors import ConfigError
from closedloop.tracking.base import Tracker, register_tracker

if TYPE_CHECKING:
    from closedloop.tracking.config import TrackingSpec

_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")  # what MLflow accepts on every OS
_CLIENTS: dict[str, Any] = {}
_BATCH = 100  # MLflow accepts at most 100 params and 1,000 metrics per batch call


def metric_key(key: str) -> str:
    """A key MLflow accepts (letters, digits, ``_-. /``, no empty path parts); others become ``_``."""
    return re.sub(r"/+", "/", _BAD_KEY_CHARS.sub("_", key)).strip("/")[:250] or "_"


def resolve_uri(spec: TrackingSpec) -> str:
    """The tracking URI from the config, else ``MLFLOW_TRACKING_URI``; a clear error when malformed."""
    uri = spec.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError(
            "tracking.uri is not set and MLFLOW_TRACKING_URI is empty; give e.g. uri: sqlite:///mlflow.db"
        )
    scheme = urlparse(uri).scheme
    known = {"sqlite", "file", "http", "https", "databricks", "postgresql", "mysql", "mssql", ""}
    base = scheme.split("+")[0]
    if base not in known and not re.fullmatch(r"[a-zA-Z]", scheme):  # a Windows drive letter is a path
        raise ConfigError(
            f"tracking.uri {uri!r}: unknown scheme {scheme!r}; expected sqlite:///PATH, file:PATH, "
            "http(s)://HOST:PORT or a database URL"
        )
    if base == "sqlite":
        db = uri.split("///", 1)[1] if "///" in uri else ""
        if not db or (db != ":memory:" and not Path(db).expanduser().parent.is_dir()):
            raise ConfigError(
                f"tracking.uri {uri!r}: the folder of the SQLite file does not exist "
                "(expected sqlite:///relative/path.db or sqlite:////absolute/path.db)"
            )
    return uri


@register_tracker("mlflow")
class MlflowTracker(Tracker):
    """Logs to MLflow through ``MlflowClient`` (no global MLflow state is changed)."""

    out_of_process = True  # `import mlflow` is ~2 s of CPU: a pipeline run pays it on another core

    def __init__(self, spec: TrackingSpec) -> None:
        super().__init__(spec)
        self.uri = resolve_uri(spec)
        # Only when the user has not chosen: fail fast on an unreachable server.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(max(1, spec.timeout_s))))
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ConfigError(
                "tracking.backend: mlflow needs the mlflow package: pip install 'closedloop[mlflow]'"
            ) from None
        if (
            self.uri not in _CLIENTS
        ):  # one store connection per process and URI (notebooks run many pipelines)
            _CLIENTS[self.uri] = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self.client = _CLIENTS[self.uri]
        self.run_id: str | None = None
        self.experiment_id: str | None = None

    @classmethod
    def prepare(cls) -> None:
        import mlflow.entities  # noqa: F401  (the import is the slow part of a first tracked run)
        import mlflow.tracking  # noqa: F401

    def _artifact_location(self, experiment: str) -> str | None:
        """SQLite stores keep artifacts next to the database file (MLflow's default is ./mlruns of the cwd)."""
        if not self.uri.startswith("sqlite:///") or self.uri.endswith(":memory:"):
            return None
        db = Path(self.uri.split("///", 1)[1]).expanduser().resolve()
        return (db.parent / "mlartifacts" / re.sub(r"[^A-Za-z0-9_.-]", "_", experiment)).as_uri()

    def start(self, experiment: str, run_name: str, tags: dict[str, str]) -> str | None:
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=self._artifact_location(experiment)
            )
        else:
            self.experiment_id = exp.experiment_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        self.run_id = run.info.run_id
        return self.run_id

    def log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        clean = {metric_key(k): str(v)[:6000] for k, v in params.items()}  # one value per cleaned key
        items = [Param(k, v) for k, v in clean.items()]
        for i in range(0, len(items), _BATCH):
            self.client.log_batch(self._run(), params=items[i : i + _BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = {metric_key(k): float(v) for k, v in metrics.items()}
        items = [Metric(k, v, now, step or 0) for k, v in clean.items()]
        for i in range(0, len(items), 10 * _BATCH):
            self.client.log_batch(self._run(), metrics=items[i : i + 10 * _BATCH])

    def log_curve(self, key: str, points: list[tuple[int, float]]) -> None:
        """One metric with many steps in one call (cheaper than a call per step)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(key), float(v), now, int(s)) for s, v in points]
        for i in range(0, len(items), 10 * _BATCH):
            self.client.log_batch(self._run(), metrics=items[i : i + 10 * _BATCH])

    def log_artifact(self, path: Path, folder: str = "") -> None:
        self.client.log_artifact(self._run(), str(path), folder or None)

    def register_model(self, name: str, folder: str, tags: dict[str, str]) -> str | None:
        from mlflow.exceptions import MlflowException

        run = self.client.get_run(self._run())
        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name)
        source = f"{run.info.artifact_uri.rstrip('/')}/{folder}"
        mv = self.client.create_model_version(name, source, run_id=run.info.run_id, tags=tags)
        return str(mv.version)

    def find_version(self, name: str, run_dir: str) -> str | None:
        found = self.client.search_model_versions(f"name = '{name}'")
        hits = [v for v in found if (v.tags or {}).get("closedloop.run_dir") == run_dir]
        return str(max(int(v.version) for v in hits)) if hits else None

    def get_alias(self, name: str, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        if self.get_alias(name, alias) is not None:
            self.client.delete_registered_model_alias(name, alias)

    def url(self) -> str | None:
        if self.run_id is None:
            return None
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"
        return f"{self.uri} (experiment {self.experiment_id}, run {self.run_id})"

    def finish(self, ok: bool) -> None:
        self.client.set_terminated(self._run(), "FINISHED" if ok else "FAILED")

    def _run(self) -> Any:
        if self.run_id is None:
            raise RuntimeError("MlflowTracker: start() was not called")
        return self.run_id
