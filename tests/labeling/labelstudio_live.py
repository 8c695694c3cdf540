"""A real Label Studio server on 127.0.0.1 (SQLite, its own virtual environment) and the round trip
through it, for the live test and ``benchmarks/bench_labelstudio.py``.

Label Studio (about 1 GB with Django and its other dependencies) lives in its own virtual
environment, outside the repository: ``$CLOSEDLOOP_LABEL_STUDIO_VENV``, default
``~/.cache/closedloop/label-studio-venv`` (``.ci/run`` creates it, idempotently). Two users with
legacy API tokens are created with ``label-studio init``; the round trip uses Label Studio's HTTP API
(the same endpoints ``label-studio-sdk`` calls): create a project with the labeling config
``--to-label-studio`` wrote, import its tasks, annotate as two users (one also cancels some tasks),
export as JSON, read back with ``--from-label-studio``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VENV = Path(
    os.environ.get("CLOSEDLOOP_LABEL_STUDIO_VENV", Path.home() / ".cache/closedloop/label-studio-venv")
)
USERS = {"ann@example.org": "tokenAnn0001", "bob@example.org": "tokenBob0001"}
PASSWORD = "closedloop-test-1"


def missing() -> str | None:
    exe = VENV / "bin" / "label-studio"
    if not exe.exists():
        return f"{exe} not found (create it: python3 -m venv {VENV} && {VENV}/bin/pip install label-studio)"
    return None


@dataclass
class Server:
    url: str
    tokens: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def call(self, method: str, path: str, user: str, body: Any = None, timeout: float = 60) -> Any:
        import httpx

        r = httpx.request(
            method,
            self.url + path,
            headers={"Authorization": f"Token {self.tokens[user]}"},
            json=body,
            timeout=timeout,
        )
        if r.status_code >= 400:
            raise RuntimeError(f"Label Studio {method} {path} as {user}: {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def label_studio(work: Path, timeout: float = 300) -> Iterator[Server]:
    """Initialise a fresh Label Studio under ``work`` (SQLite), start it, yield it, stop it."""
    exe = str(VENV / "bin" / "label-studio")
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(work / "data"),
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
        "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(work),
        "DJANGO_DB": "sqlite",
    }
    timings: dict[str, float] = {}
    log = open(work / "label-studio.log", "w")  # noqa: SIM115 - held open for the server's lifetime
    for k, (user, token) in enumerate(USERS.items()):
        t0 = time.perf_counter()
        args = [exe, "init", "--username", user, "--password", PASSWORD, "--user-token", token]
        if k == 0:
            args.append("--enable-legacy-api-token")  # the organisation is created with the first user
        subprocess.run(args, env=env, stdout=log, stderr=subprocess.STDOUT, check=True, timeout=timeout)
        timings[f"init {user}"] = time.perf_counter() - t0
    port = _free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        # --internal-host is the address it binds (--host only names it in URLs): this machine only
        [
            exe,
            "start",
            "--no-browser",
            "--internal-host",
            "127.0.0.1",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopped as a whole at the end
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"label-studio start exited with {proc.returncode}; see {work}/label-studio.log"
                )
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Label Studio did not answer {url}/health within {timeout} s")
            time.sleep(0.5)
        timings["start"] = time.perf_counter() - t0
        yield Server(url=url, tokens=dict(USERS), timings=timings)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


def _choice(label: str, to_name: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": to_name, "type": "choices", "value": {"choices": [label]}}]


@dataclass
class RoundTrip:
    export_file: Path
    posted: dict[tuple[str, str], str]
    """(closedloop id, annotator email) -> class posted to Label Studio."""
    cancelled: list[tuple[str, str]]
    timings: dict[str, float]


def round_trip(
    server: Server, tasks_file: Path, plan: dict[str, dict[str, str | None]], out: Path
) -> RoundTrip:
    """Create a project from ``tasks_file`` (+ its ``.xml`` config), import the tasks, post the
    annotations in ``plan`` (closedloop id -> {user: class, or None to cancel}), export as JSON to ``out``."""
    t: dict[str, float] = {}
    admin = next(iter(server.tokens))
    t0 = time.perf_counter()
    project = server.call(
        "POST",
        "/api/projects",
        admin,
        {"title": "closedloop round trip", "label_config": tasks_file.with_suffix(".xml").read_text()},
    )
    pid = project["id"]
    tasks = json.loads(tasks_file.read_text())
    imported = server.call("POST", f"/api/projects/{pid}/import", admin, tasks)
    if imported.get("task_count") != len(tasks):
        raise RuntimeError(f"imported {imported.get('task_count')} of {len(tasks)} tasks: {imported}")
    t["create project + import"] = time.perf_counter() - t0
    listed = server.call("GET", f"/api/tasks?project={pid}&page_size=1000", admin)
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    by_id = {str(x["data"]["closedloop_id"]): x["id"] for x in listed}
    to_name = "image" if "image" in tasks[0]["data"] else "row"
    posted: dict[tuple[str, str], str] = {}
    cancelled: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    n_posts = 0
    for cid, by_user in plan.items():
        for user, label in by_user.items():
            body = (
                {"result": [], "was_cancelled": True}
                if label is None
                else {"result": _choice(label, to_name), "was_cancelled": False}
            )
            server.call("POST", f"/api/tasks/{by_id[cid]}/annotations/", user, body)
            n_posts += 1
            if label is None:
                cancelled.append((cid, user))
            else:
                posted[(cid, user)] = label
    t[f"annotate ({n_posts} posts, two users)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    export = server.call("GET", f"/api/projects/{pid}/export?exportType=JSON&download_all_tasks=true", admin)
    out.write_text(json.dumps(export))
    t["export"] = time.perf_counter() - t0
    return RoundTrip(export_file=out, posted=posted, cancelled=cancelled, timings=t)
