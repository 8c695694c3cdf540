"""closedloop serve under load, measured with a load client no one here wrote (Debian's ``hey``).

    python benchmarks/bench_serve.py --run-dir RUN_DIR [--out docs/results/serve.txt] [--csv-dir DIR]

RUN_DIR is a run with an exported model (default: the quickstart pipeline is run into a temporary
folder first, which takes minutes). ``hey`` (``apt-get install hey``) drives both servers with the same
one-image OIP JSON body; without it the benchmark says so and falls back to its own httpx client. Each
hey run keeps its CSV (one row per request) in ``--csv-dir``. Prints:

1. concurrency 8, unbatched, request log + metrics on: closedloop vs a bare FastAPI + onnxruntime app
   (one session, one thread) in interleaved rounds: req/s, p50/p90/p99, errors, server CPU per request,
   and the ratios per round (median, min, max);
2. concurrency 32 with ``--max-batch-size``/``--max-queue-delay-ms`` vs the bare app (unbatched), the
   batched p99 against the task's ``max_latency_ms``, and the batch sizes from ``/metrics``
   (``--also-batch 16/2 32/0.5``: 2b, the same against other batching settings, in the same run);
3. batched vs unbatched outputs on 256 inputs (max |delta|), and the model itself at batch sizes 1..256;
4. kill -9 under load with batching on: every acknowledged request in the log;
5. with ``--compare-src OLD_CHECKOUT/src``: the same run served by this source and by the older one,
   unbatched c=8 and batched c=32, in interleaved rounds (req/s, p99, server CPU per request, ratios
   new / old): a before/after of a change under the same client in one run.

``--httpx-sections`` then runs the earlier sections (own httpx client: grid, log/metrics/shadow ratios,
SIGTERM mid-load, canary share, shadow byte-identity). Servers are subprocesses (one uvicorn worker
each) on free 127.0.0.1 ports; every load is bounded in requests and time. Inputs are images of the
run's validation split (latency, parity and logging only: no performance figure is computed from them).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"

MINIMAL_SERVER = '''
"""A minimal hand-written FastAPI + onnxruntime server (the comparison point): parse, run, answer."""
import json, sys
import numpy as np, onnxruntime as ort
from fastapi import FastAPI

meta = json.load(open(sys.argv[1] + "/predictor.json"))
entry = meta["models"][meta["shipped"]]
opts = ort.SessionOptions(); opts.intra_op_num_threads = 1; opts.inter_op_num_threads = 1
sess = ort.InferenceSession(sys.argv[1] + "/" + entry["file"], opts, providers=["CPUExecutionProvider"])
name, T = sess.get_inputs()[0].name, float(entry["temperature"])
app = FastAPI()

@app.post("/v2/models/{model}/infer")
def infer(model: str, req: dict) -> dict:
    t = req["inputs"][0]
    x = np.asarray(t["data"], dtype=np.float32).reshape(t["shape"])
    z = sess.run(None, {name: x})[0].astype(np.float64) / T
    e = np.exp(z - z.max(1, keepdims=True)); p = e / e.sum(1, keepdims=True)
    return {"model_name": model, "id": req.get("id"), "outputs": [
        {"name": "proba", "datatype": "FP64", "shape": list(p.shape), "data": p.ravel().tolist()}]}

if __name__ == "__main__":
    import uvicorn
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server subprocess on a free loopback port."""

    def __init__(self, argv: list[str], label: str, src: Path = SRC) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.label = label
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.proc = subprocess.Popen(
            [sys.executable, *[a.replace("{port}", str(self.port)) for a in argv]],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait(self, path: str, timeout: float = 120.0) -> Server:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.label} exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + path, timeout=1).status_code in (200, 405):
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"{self.label} not ready after {timeout} s")

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used (all its threads), from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def loop_cpu_seconds(self) -> float:
        """CPU time of the server's main thread alone: uvicorn's event loop (the rest is the model and
        batch threads); a one-worker server's main thread is the process's first task."""
        stat = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


def closedloop_server(run_dir: Path, *args: str, label: str = "closedloop", src: Path = SRC) -> Server:
    argv = ["-m", "closedloop.serving", "serve", str(run_dir), "--port", "{port}", *args]
    return Server(argv, label, src).wait("/v2/health/ready")


@dataclass
class Load:
    """One bounded load run: what was sent, acknowledged and how long each took."""

    n: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    errors: int = 0
    bodies: dict[str, bytes] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    cpu_ms: float = float("nan")
    """Server CPU time per acknowledged request (robust to other load on the machine)."""

    def rate(self) -> float:
        return len(self.acked) / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")


async def _load(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    prefix: str,
    keep: bool,
    on_ack=None,  # noqa: ANN001
) -> Load:
    import httpx

    out = Load()
    counter = iter(range(max_requests))
    deadline = time.monotonic() + max_seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def worker(client: httpx.AsyncClient) -> None:
        for i in counter:
            if time.monotonic() > deadline:
                return
            rid = f"{prefix}-{i}"
            body = bodies[i % len(bodies)].replace(b"__ID__", rid.encode())
            t0 = time.perf_counter()
            try:
                res = await client.post(
                    url, content=body, headers={"Content-Type": "application/json", "X-Request-Id": rid}
                )
            except httpx.HTTPError:
                out.errors += 1
                return
            dt = time.perf_counter() - t0
            out.n += 1
            if res.status_code == 200:
                out.latencies.append(dt)
                out.acked.append(rid)
                if keep:
                    out.bodies[rid] = res.content
                    out.versions[rid] = res.json().get("model_version", "")
                if on_ack is not None:
                    on_ack(len(out.acked))
            else:
                out.errors += 1

    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        out.seconds = time.perf_counter() - t0
    return out


def load(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    *,
    max_requests: int,
    max_seconds: float,
    prefix: str,
    keep: bool = False,
    on_ack=None,  # noqa: ANN001
    server: Server | None = None,
) -> Load:
    """A bounded load run; with ``server``, also its CPU time per acknowledged request."""
    cpu0 = server.cpu_seconds() if server else 0.0
    out = asyncio.run(_load(url, bodies, concurrency, max_requests, max_seconds, prefix, keep, on_ack))
    if server is not None and out.acked:
        out.cpu_ms = (server.cpu_seconds() - cpu0) * 1000 / len(out.acked)
    return out


def oip_bodies(X: np.ndarray, batch: int, name: str) -> list[bytes]:
    """OIP JSON request bodies (id placeholder __ID__) cycling through ``X`` in batches."""
    out = []
    for i in range(0, len(X) - batch + 1, batch):
        x = X[i : i + batch]
        body = {
            "id": "__ID__",
            "inputs": [
                {"name": name, "shape": list(x.shape), "datatype": "UINT8", "data": x.ravel().tolist()}
            ],
        }
        out.append(json.dumps(body).encode())
    return out


def log_ids(log_dir: Path, route: str = "champion") -> list[str]:
    ids = []
    for f in sorted(log_dir.glob("requests-*.jsonl")):
        for line in f.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue
            if r["route"] == route:
                ids.append(r["request_id"])
    return ids


def ensure_run_dir(arg: str | None, tmp: Path) -> Path:
    if arg:
        return Path(arg).resolve()
    out = tmp / "quickstart"
    print(f"# no --run-dir: running configs/quickstart.yaml into {out} (minutes)", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "closedloop",
            "run",
            str(ROOT / "configs" / "quickstart.yaml"),
            "--out",
            str(out),
            "--only",
            "export",
        ],
        check=True,
        env={**os.environ, "PYTHONPATH": str(SRC)},
        cwd=ROOT,
    )
    return out


def httpx_sections(args: argparse.Namespace) -> int:
    """The earlier sections (our own httpx client): grid, shadow/log/metrics ratios, SIGTERM, canary."""
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    say(
        f"$ python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}   # {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    servers: list[Server] = []
    try:
        run_dir = ensure_run_dir(args.run_dir, tmp)
        # the challenger: the same exported model under another version name (its cost is the champion's)
        challenger = tmp / f"{run_dir.name}-challenger"
        shutil.copytree(run_dir, challenger, ignore=shutil.ignore_patterns("checkpoints", "*.pt"))

        sys.path.insert(0, str(SRC))
        from closedloop.serving.model import ServedModel

        model = ServedModel.load(run_dir)
        data = next(run_dir.glob("stages/*/artifacts/data/val.npz"), None)
        if data is None:
            raise SystemExit(f"{run_dir}: no data artifact with val.npz")
        with np.load(data, allow_pickle=False) as z:
            X = z["X"]
        X = np.concatenate([X] * (1 + 256 // len(X)))[:256]
        say(
            f"model: {model.name} version {model.version} variant {model.variant} input {list(model.input_shape)} "
            f"(ONNX {model.predictor.directory.name}/{model.predictor.meta['models'][model.variant]['file']})"
        )
        say(
            f"inputs: 256 images of the run's validation split ({data}); cpu cores: {os.cpu_count()}, "
            f"load average at start: {os.getloadavg()[0]:.1f}"
        )
        infer_path = f"/v2/models/{model.name}/infer"

        # -- 1. parity ---------------------------------------------------------------------------
        logged = closedloop_server(run_dir, "--log-dir", str(tmp / "log-main"), label="closedloop (log on)")
        servers.append(logged)
        import httpx

        want = model.predictor.predict_proba(X)
        got_v2, got_pred = [], []
        with httpx.Client(timeout=30) as c:
            for i in range(0, 256, 16):
                x = X[i : i + 16]
                r = c.post(
                    logged.url + infer_path,
                    json={
                        "inputs": [
                            {
                                "name": model.input_name,
                                "shape": list(x.shape),
                                "datatype": "UINT8",
                                "data": x.ravel().tolist(),
                            }
                        ]
                    },
                )
                got_v2.append(np.array(r.json()["outputs"][0]["data"]).reshape(len(x), -1))
                p = c.post(logged.url + "/predict", json=x.tolist()).json()["predictions"]
                got_pred.append(np.array([[row["probabilities"][k] for k in model.label_names] for row in p]))
        d_v2 = float(np.abs(np.concatenate(got_v2) - want).max())
        d_pred = float(np.abs(np.concatenate(got_pred) - want).max())
        say("\n## 1. parity with the in-process Predictor (256 inputs)")
        say(
            f"/v2 infer  max |p_server - p_predictor| = {d_v2:.2e}  {'OK' if d_v2 <= 1e-6 else 'FAIL'} (<= 1e-6)"
        )
        say(
            f"/predict   max |p_server - p_predictor| = {d_pred:.2e}  {'OK' if d_pred <= 1e-6 else 'FAIL'} (<= 1e-6)"
        )

        # -- 2. grid ---------------------------------------------------------------------------------
        minimal_py = tmp / "minimal_server.py"
        minimal_py.write_text(MINIMAL_SERVER)
        minimal = Server([str(minimal_py), str(model.export_dir), "{port}"], "minimal").wait("/docs")
        servers.append(minimal)
        bodies = {b: oip_bodies(X, b, model.input_name) for b in (1, 16)}
        say("\n## 2. throughput and latency (same httpx client; closedloop with request log + metrics on)")
        say(
            "cpu ms/req = the server process's CPU time per request (its own work, whatever else loads the machine)"
        )
        say(
            f"{'server':<22}{'batch':>6}{'conc':>6}{'requests':>10}{'req/s':>9}{'inputs/s':>10}{'p50 ms':>9}"
            f"{'p95 ms':>9}{'p99 ms':>9}{'cpu ms/req':>12}"
        )
        acked_total: list[str] = []
        acked_log_only: list[str] = []
        for batch in (1, 16):
            for conc in (1, 8, 32):
                for srv in (logged, minimal):
                    res = load(
                        srv.url + infer_path,
                        bodies[batch],
                        conc,
                        max_requests=args.requests,
                        max_seconds=args.seconds,
                        prefix=f"g-{srv.label[:3]}-{batch}-{conc}",
                        server=srv,
                    )
                    if srv is logged:
                        acked_total += res.acked
                    say(
                        f"{srv.label:<22}{batch:>6}{conc:>6}{len(res.acked):>10}{res.rate():>9.0f}{res.rate() * batch:>10.0f}"
                        f"{res.pct(50):>9.2f}{res.pct(95):>9.2f}{res.pct(99):>9.2f}{res.cpu_ms:>12.2f}"
                        + (f"  ({res.errors} errors)" if res.errors else "")
                    )

        # -- 3. ratio at concurrency 8 -------------------------------------------------------------------
        off = closedloop_server(run_dir, "--no-metrics", label="closedloop (all off)")
        on = closedloop_server(
            run_dir,
            "--log-dir",
            str(tmp / "log-on"),
            "--shadow",
            str(challenger),
            label="closedloop (all on)",
        )
        servers += [off, on]
        log_only = closedloop_server(run_dir, "--log-dir", str(tmp / "log-only"), label="closedloop (log)")
        servers.append(log_only)
        say(f"\n## 3. closedloop / minimal at concurrency 8 ({args.rounds} interleaved rounds)")
        say(
            "off = no request log, no metrics, no shadow; log = request log + metrics; on = log + metrics + shadow model"
        )
        say(
            "throughput ratio = median over rounds of (closedloop req/s / minimal req/s in the adjacent run);"
        )
        say(
            "capacity ratio = minimal's server CPU per request / closedloop's (what a machine of its own would"
        )
        say("show at saturation; the shared machine's other load moves throughput, not this)")
        for batch in (1, 16):
            rates: dict[str, list[float]] = {"minimal": [], "off": [], "log": [], "on": []}
            cpu: dict[str, list[float]] = {"minimal": [], "off": [], "log": [], "on": []}
            for rnd in range(args.rounds):
                for key, srv in (("minimal", minimal), ("off", off), ("log", log_only), ("on", on)):
                    res = load(
                        srv.url + infer_path,
                        bodies[batch],
                        8,
                        max_requests=args.requests,
                        max_seconds=args.seconds / 2,
                        prefix=f"r-{key}-{batch}-{rnd}",
                        server=srv,
                    )
                    rates[key].append(res.rate())
                    cpu[key].append(res.cpu_ms)
                    if key == "on":
                        acked_total += res.acked
                    if key == "log":
                        acked_log_only += res.acked
            for key in ("off", "log", "on"):
                ratio = statistics.median(a / b for a, b in zip(rates[key], rates["minimal"], strict=True))
                cap = statistics.median(cpu["minimal"]) / statistics.median(cpu[key])
                say(
                    f"batch {batch:>2}, closedloop {key:<3}: throughput ratio {ratio:.2f} "
                    f"{'OK' if ratio >= 0.8 else 'BELOW TARGET'} (>= 0.8; medians {statistics.median(rates[key]):.0f} vs "
                    f"{statistics.median(rates['minimal']):.0f} req/s); capacity ratio {cap:.2f} "
                    f"{'OK' if cap >= 0.8 else 'BELOW TARGET'} (cpu {statistics.median(cpu[key]):.2f} vs "
                    f"{statistics.median(cpu['minimal']):.2f} ms/req)"
                )

        # -- 6. shadow never changes a response -------------------------------------------------------
        say("\n## 6. shadow never changes a response")
        same = 0
        n_cmp = 0
        with httpx.Client(timeout=30) as c:
            for i in range(100):
                x = X[i : i + 2]
                body = {
                    "id": f"cmp-{i}",
                    "inputs": [
                        {
                            "name": model.input_name,
                            "shape": list(x.shape),
                            "datatype": "UINT8",
                            "data": x.ravel().tolist(),
                        }
                    ],
                }
                a = c.post(off.url + infer_path, json=body).content
                b = c.post(on.url + infer_path, json=body).content
                pa = c.post(
                    off.url + "/predict", json=x.tolist(), headers={"X-Request-Id": f"cmp-{i}"}
                ).content
                pb = c.post(
                    on.url + "/predict", json=x.tolist(), headers={"X-Request-Id": f"cmp-{i}"}
                ).content
                same += (a == b) + (pa == pb)
                n_cmp += 2
        time.sleep(1.0)  # let the last shadow tasks finish before counting them
        n_shadow = len(log_ids(tmp / "log-on", "shadow"))
        say(
            f"byte-identical responses with and without --shadow: {same}/{n_cmp}  {'OK' if same == n_cmp else 'FAIL'} "
            f"(the shadow server logged {n_shadow} shadow records)"
        )

        # -- 4. no acknowledged request lost --------------------------------------------------------------
        say("\n## 4. requests acknowledged vs records in the request log")
        for srv in (logged, on, log_only):
            assert srv.stop() in (0, -signal.SIGTERM)
        acked_total += acked_log_only
        logged_ids = (
            set(log_ids(tmp / "log-main")) | set(log_ids(tmp / "log-on")) | set(log_ids(tmp / "log-only"))
        )
        lost = [r for r in acked_total if r not in logged_ids]
        say(
            f"under load (sections 2-3): {len(acked_total)} acknowledged, {len(lost)} missing from the log  {'OK' if not lost else 'FAIL'}"
        )
        victim = closedloop_server(run_dir, "--log-dir", str(tmp / "log-term"), label="closedloop (SIGTERM)")
        servers.append(victim)
        sent_at: list[float] = []

        def on_ack(n: int) -> None:
            if n == 300 and not sent_at:
                sent_at.append(time.monotonic())
                victim.proc.send_signal(signal.SIGTERM)

        res = load(
            victim.url + infer_path,
            bodies[1],
            16,
            max_requests=5000,
            max_seconds=30,
            prefix="term",
            on_ack=on_ack,
        )
        rc = victim.proc.wait(timeout=60)
        in_log = set(log_ids(tmp / "log-term"))
        lost = [r for r in res.acked if r not in in_log]
        say(
            f"SIGTERM after 300 acknowledged (concurrency 16): {len(res.acked)} acknowledged, {len(in_log)} records, "
            f"{len(lost)} acknowledged but missing  {'OK' if not lost else 'FAIL'}; refused after the signal: {res.errors}; exit {rc}"
        )

        # -- 5. canary share ------------------------------------------------------------------------------------
        share = 0.1
        canary = closedloop_server(
            run_dir,
            "--canary",
            str(challenger),
            "--canary-share",
            str(share),
            "--log-dir",
            str(tmp / "log-canary"),
            label="canary",
        )
        servers.append(canary)
        res = load(
            canary.url + infer_path,
            bodies[1],
            16,
            max_requests=2000,
            max_seconds=120,
            prefix="canary",
            keep=True,
        )
        n = len(res.acked)
        k = sum(v == challenger.name for v in res.versions.values())
        sd = (n * share * (1 - share)) ** 0.5
        z = (k - n * share) / sd
        say("\n## 5. canary share")
        say(
            f"{k} of {n} requests answered by the canary (target {share:.0%} = {n * share:.0f}, sd {sd:.1f}): "
            f"{z:+.2f} sd  {'OK' if abs(z) <= 3 else 'FAIL'} (within 3 sd)"
        )
        canary_log = set(log_ids(tmp / "log-canary", "canary"))
        say(
            f"canary records in the log: {len(canary_log)} (= {k} answered)  {'OK' if len(canary_log) == k else 'FAIL'}"
        )
    finally:
        for s in servers:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


# == the load client no one here wrote: Debian's hey ====================================================
@dataclass
class HeyRun:
    """One ``hey`` run: its CSV (one row per completed request) summarized."""

    label: str
    n_sent: int
    ok: int
    errors: int
    seconds: float
    latencies_ms: np.ndarray
    csv: Path
    cpu_ms: float = float("nan")
    """Server CPU time per answered request (its own work, whatever else loads the machine)."""

    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if len(self.latencies_ms) else float("nan")

    def row(self) -> str:
        return (
            f"{self.label:<34}{self.ok:>7}{self.errors:>7}{self.rate():>9.0f}{self.pct(50):>9.2f}{self.pct(90):>9.2f}"
            f"{self.pct(99):>9.2f}{self.cpu_ms:>12.3f}"
        )


HEADER = f"{'server':<34}{'ok':>7}{'errors':>7}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'cpu ms/req':>12}"


def run_hey(url: str, body: Path, n: int, conc: int, csv: Path, label: str) -> HeyRun:
    """``hey -n N -c C -m POST -T application/json -D BODY -o csv URL``; the CSV is kept in ``csv``."""
    n = max(conc, n // conc * conc)  # hey sends n // c requests from each of its c workers
    out = subprocess.run(
        [
            "hey",
            "-n",
            str(n),
            "-c",
            str(conc),
            "-t",
            "20",
            "-m",
            "POST",
            "-T",
            "application/json",
            "-D",
            str(body),
            "-o",
            "csv",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    csv.write_text(out)
    rows = [r.split(",") for r in out.splitlines()[1:] if r.strip()]
    # columns: response-time,DNS+dialup,DNS,Request-write,Response-delay,Response-read,status-code,offset
    resp = np.array([float(r[0]) for r in rows])
    status = np.array([int(r[6]) for r in rows])
    offset = np.array([float(r[7]) for r in rows])
    ok = status == 200
    seconds = float((offset + resp).max() - offset.min()) if len(rows) else 0.0
    return HeyRun(label, n, int(ok.sum()), n - int(ok.sum()), seconds, resp[ok] * 1000, csv)


def run_load(url: str, body: Path, n: int, conc: int, csv: Path, label: str, use_hey: bool) -> HeyRun:
    """hey when installed, else the same bounded load from httpx (with the same CSV and figures)."""
    if use_hey:
        return run_hey(url, body, n, conc, csv, label)
    res = load(url, [body.read_bytes()], conc, max_requests=n, max_seconds=120, prefix=label[:8])
    lat = np.array(res.latencies) * 1000
    csv.write_text("response-time\n" + "".join(f"{v / 1000:.6f}\n" for v in lat))
    return HeyRun(label, n, len(res.acked), n - len(res.acked), res.seconds, lat, csv)


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):.2f} (min {min(values):.2f}, max {max(values):.2f}; {len(values)} rounds)"


def cpu_split(split: list[tuple[float, float]]) -> str:
    """Where closedloop's CPU per request went: the event loop (HTTP, parsing, queueing, the response)
    and the other threads (the model call, the log record)."""
    loop_ms = statistics.median(v[0] for v in split)
    rest_ms = statistics.median(v[1] for v in split)
    return (
        f"closedloop cpu ms/req by thread: event loop {loop_ms:.3f}, model + log threads {rest_ms:.3f} "
        f"(medians over {len(split)} rounds)"
    )


def metric_value(url: str, name: str) -> float:
    import httpx

    for line in httpx.get(url + "/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", help="run with an exported model (default: run the quickstart first)")
    ap.add_argument("--requests", type=int, default=3000, help="requests per hey run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds per comparison")
    ap.add_argument(
        "--max-batch-size",
        type=int,
        default=32,
        help="32 = the concurrency of section 2, so one batch can hold every waiting request (16 measured 1.55x)",
    )
    ap.add_argument("--max-queue-delay-ms", type=float, default=2.0)
    ap.add_argument(
        "--csv-dir", help="keep hey's CSVs (one row per request) here (default: a temporary folder)"
    )
    ap.add_argument("--out", help="also write the printed report here")
    ap.add_argument(
        "--httpx-sections", action="store_true", help="then run the earlier httpx-client sections"
    )
    ap.add_argument(
        "--also-batch",
        nargs="*",
        default=[],
        metavar="SIZE[/DELAY_MS]",
        help="section 2b: repeat section 2 with these batching settings (e.g. 16/2 32/0.5), same bare app",
    )
    ap.add_argument(
        "--compare-src",
        help="an older closedloop source tree (e.g. a checkout's src): section 5 serves the same run with it "
        "and compares it with this source under the same client (req/s, p99, cpu per request)",
    )
    args = ap.parse_args()

    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    say(
        f"$ python benchmarks/bench_serve.py {' '.join(sys.argv[1:])}   # {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    csv_dir = Path(args.csv_dir) if args.csv_dir else tmp / "csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    servers: list[Server] = []
    use_hey = shutil.which("hey") is not None
    try:
        run_dir = ensure_run_dir(args.run_dir, tmp)
        sys.path.insert(0, str(SRC))
        from closedloop.serving.model import ServedModel
        from closedloop.serving.service import task_max_latency_ms

        model = ServedModel.load(run_dir)
        data = next(run_dir.glob("stages/*/artifacts/data/val.npz"), None)
        if data is None:
            raise SystemExit(f"{run_dir}: no data artifact with val.npz")
        with np.load(data, allow_pickle=False) as z:
            X = z["X"]
        X = np.concatenate([X] * (1 + 256 // len(X)))[:256]
        max_ms, task_file = task_max_latency_ms(run_dir)
        say(
            f"model: {model.name} version {model.version} variant {model.variant} input {list(model.input_shape)} "
            f"(ONNX {model.predictor.directory.name}/{model.predictor.meta['models'][model.variant]['file']})"
        )
        say(f"task max_latency_ms: {max_ms} ({task_file})")
        say(
            f"inputs: images of the run's validation split ({data}); cpu cores: {os.cpu_count()} SHARED with other "
            f"engineers' work (load average at start: {os.getloadavg()[0]:.1f}): absolute figures are noisy, ratios "
            "come from adjacent, interleaved runs"
        )
        import uvicorn

        http_impl = "httptools" if importlib.util.find_spec("httptools") else "h11"
        loop_impl = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        say(
            f"both servers: uvicorn {uvicorn.__version__}, one process, HTTP parser {http_impl}, event loop {loop_impl}"
        )
        say(
            "client: "
            + (
                "hey (" + shutil.which("hey") + "), one CSV row per request in " + str(csv_dir)
                if use_hey
                else "NOTICE: hey is not installed (apt-get install hey); falling back to the httpx client"
            )
        )
        infer_path = f"/v2/models/{model.name}/infer"
        body = tmp / "body.json"
        x1 = X[:1]
        body.write_text(
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": model.input_name,
                            "shape": list(x1.shape),
                            "datatype": "UINT8",
                            "data": x1.ravel().tolist(),
                        }
                    ]
                }
            )
        )

        minimal_py = tmp / "minimal_server.py"
        minimal_py.write_text(MINIMAL_SERVER)
        bare = Server([str(minimal_py), str(model.export_dir), "{port}"], "bare FastAPI+onnxruntime").wait(
            "/docs"
        )
        plain = closedloop_server(
            run_dir, "--log-dir", str(tmp / "log-plain"), label="closedloop serve --log-dir"
        )
        batch_args = [
            "--max-batch-size",
            str(args.max_batch_size),
            "--max-queue-delay-ms",
            str(args.max_queue_delay_ms),
        ]
        batched = closedloop_server(
            run_dir, "--log-dir", str(tmp / "log-batched"), *batch_args, label="closedloop batched"
        )
        servers += [bare, plain, batched]

        cpus: list[float] = []  # capacity ratios of the last comparison: bare's CPU per request / ours
        split: list[tuple[float, float]] = []  # ours: (event-loop thread, other threads) CPU ms per request

        def compare(
            title: str, a: Server, b: Server, conc_a: int, conc_b: int
        ) -> tuple[list[float], list[float], list[HeyRun]]:
            say(f"\n{title}")
            say(HEADER)
            rates, p99s, runs_a = [], [], []
            cpus.clear()
            split.clear()
            for rnd in range(args.rounds):
                order = [(b, conc_b), (a, conc_a)] if rnd % 2 == 0 else [(a, conc_a), (b, conc_b)]
                got = {}
                for srv, conc in order:
                    tag = f"{srv.label.replace(' ', '_').replace('/', '_')}-c{conc}-r{rnd}"
                    cpu0, loop0 = srv.cpu_seconds(), srv.loop_cpu_seconds()
                    got[srv.label] = r = run_load(
                        srv.url + infer_path,
                        body,
                        args.requests,
                        conc,
                        csv_dir / f"{tag}.csv",
                        f"{srv.label} c={conc} round {rnd + 1}",
                        use_hey,
                    )
                    r.cpu_ms = (srv.cpu_seconds() - cpu0) * 1000 / max(r.ok, 1)
                    if srv is a:
                        on_loop = (srv.loop_cpu_seconds() - loop0) * 1000 / max(r.ok, 1)
                        split.append((on_loop, r.cpu_ms - on_loop))
                    say(r.row())
                ra, rb = got[a.label], got[b.label]
                cpus.append(rb.cpu_ms / ra.cpu_ms)
                rates.append(ra.rate() / rb.rate())
                p99s.append(ra.pct(99) / rb.pct(99))
                runs_a.append(ra)
            return rates, p99s, runs_a

        # -- 1. concurrency 8, one image per request, logging on, no batching ------------------------------
        rates, p99s, _ = compare(
            "## 1. concurrency 8, one image per request: closedloop (request log + metrics on, unbatched) vs bare",
            plain,
            bare,
            8,
            8,
        )
        say(
            f"throughput ratio closedloop / bare: {spread(rates)}  {'OK' if statistics.median(rates) >= 1.0 else 'BELOW TARGET'} (>= 1.0)"
        )
        say(f"capacity ratio (bare cpu/req / closedloop cpu/req): {spread(cpus)}")
        say(cpu_split(split))
        say(
            f"p99 ratio closedloop / bare:        {spread(p99s)}  {'OK' if statistics.median(p99s) <= 1.2 else 'ABOVE TARGET'} (<= 1.2)"
        )

        # -- 2. concurrency 32 with dynamic batching vs the bare app (unbatched) ---------------------------
        def judge_batched(server: Any, title: str) -> tuple[float, float]:
            """Section 2's comparison of one batched server with the bare app, judged against the
            targets (p99: the worst round); returns its model calls and inputs from /metrics."""
            rates, _, runs = compare(title, server, bare, 32, 32)
            p99 = [r.pct(99) for r in runs]
            say(f"capacity ratio (bare cpu/req / batched closedloop cpu/req): {spread(cpus)}")
            say(cpu_split(split))
            say(
                f"throughput ratio batched closedloop / bare: {spread(rates)}  {'OK' if statistics.median(rates) >= 2.0 else 'BELOW TARGET'} (>= 2.0)"
            )
            if max_ms is not None:
                say(
                    f"batched p99 ms: {spread(p99)} vs the task's max_latency_ms {max_ms:g}  {'OK' if max(p99) <= max_ms else 'ABOVE'}"
                )
            return (
                metric_value(server.url, "closedloop_batch_size_count"),
                metric_value(server.url, "closedloop_batch_size_sum"),
            )

        n_calls, n_inputs = judge_batched(
            batched,
            f"## 2. concurrency 32: closedloop with {' '.join(batch_args)} (log on) vs bare (unbatched)",
        )
        say(
            f"/metrics: {n_calls:.0f} model calls for {n_inputs:.0f} inputs, mean batch {n_inputs / max(n_calls, 1):.1f}"
        )

        # -- 2b. (--also-batch) the same comparison with other batching settings, same bare app -------------
        for setting in args.also_batch:
            size, _, delay = setting.partition("/")
            other_args = [
                "--max-batch-size",
                size,
                "--max-queue-delay-ms",
                delay or str(args.max_queue_delay_ms),
            ]
            other = closedloop_server(
                run_dir,
                "--log-dir",
                str(tmp / f"log-{size}-{delay}"),
                *other_args,
                label=f"batched {setting}",
            )
            servers.append(other)
            n_calls, n_inputs = judge_batched(
                other,
                f"## 2b. concurrency 32: closedloop with {' '.join(other_args)} (log on) vs bare (unbatched)",
            )
            say(f"/metrics: mean batch {n_inputs / max(n_calls, 1):.1f} ({n_calls:.0f} model calls)")
            other.stop()

        # -- 3. batched outputs vs unbatched, 256 inputs ---------------------------------------------------
        say(
            "\n## 3. batched vs unbatched outputs (256 images sent concurrently, 32 at a time, one per request)"
        )
        bodies_1 = oip_bodies(X, 1, model.input_name)

        def probas(srv: Server, prefix: str) -> np.ndarray:
            res = load(
                srv.url + infer_path,
                bodies_1,
                32,
                max_requests=256,
                max_seconds=120,
                prefix=prefix,
                keep=True,
            )
            assert len(res.acked) == 256, (len(res.acked), res.errors)
            rows = {}
            for rid, content in res.bodies.items():
                out = json.loads(content)["outputs"][0]
                rows[int(rid.rsplit("-", 1)[1])] = out["data"]
            return np.array([rows[i] for i in range(256)])

        calls0 = metric_value(batched.url, "closedloop_batch_size_count")
        inputs0 = metric_value(batched.url, "closedloop_batch_size_sum")
        p_batched, p_plain = probas(batched, "same-b"), probas(plain, "same-p")
        calls = metric_value(batched.url, "closedloop_batch_size_count") - calls0
        inputs = metric_value(batched.url, "closedloop_batch_size_sum") - inputs0
        want = model.predictor.predict_proba(X)
        d = float(np.abs(p_batched - p_plain).max())
        say(
            f"the batched server answered them in {calls:.0f} model calls (mean batch {inputs / max(calls, 1):.1f})"
        )
        say(
            f"max |p_batched - p_unbatched| = {d:.3g}  {'OK (identical)' if d == 0 else 'NOT IDENTICAL'}; "
            f"rows differing: {int((np.abs(p_batched - p_plain).max(1) > 0).sum())} of 256"
        )
        say(
            f"max |p_unbatched - Predictor(256 at once)| = {float(np.abs(p_plain - want).max()):.3g}; "
            f"max |p_batched - Predictor(256 at once)| = {float(np.abs(p_batched - want).max()):.3g}"
        )
        # onnxruntime's kernels may depend on the batch size: check the model itself, one by one vs 32 at once
        singles = np.concatenate([model.predict(X[i : i + 1])[0] for i in range(256)])
        for size in (2, 8, 32, 256):
            grouped = np.concatenate([model.predict(X[i : i + size])[0] for i in range(0, 256, size)])
            say(
                f"in process: max |p(batches of {size}) - p(one at a time)| = {float(np.abs(grouped - singles).max()):.3g}"
            )
        dec_b = p_batched[:, 1] >= float(model.predictor.threshold or 0.5)
        dec_p = p_plain[:, 1] >= float(model.predictor.threshold or 0.5)
        say(f"decisions that differ batched vs unbatched: {int((dec_b != dec_p).sum())} of 256")

        # -- 4. kill -9 under load with batching -----------------------------------------------------------
        say("\n## 4. kill -9 under load, batching on: every acknowledged request in the log")
        victim = closedloop_server(
            run_dir, "--log-dir", str(tmp / "log-kill"), *batch_args, label="closedloop (kill -9)"
        )
        servers.append(victim)
        killed: list[float] = []

        def on_ack(n: int) -> None:
            if n == 500 and not killed:
                killed.append(time.monotonic())
                victim.proc.send_signal(signal.SIGKILL)

        res = load(
            victim.url + infer_path,
            bodies_1,
            32,
            max_requests=20000,
            max_seconds=60,
            prefix="kill",
            on_ack=on_ack,
        )
        rc = victim.proc.wait(timeout=60)
        in_log = set(log_ids(tmp / "log-kill"))
        lost = [r for r in res.acked if r not in in_log]
        say(
            f"SIGKILL after 500 acknowledged (concurrency 32): {len(res.acked)} acknowledged, {len(in_log)} records, "
            f"{len(lost)} acknowledged but missing  {'OK' if not lost else 'FAIL'}; failed after the kill: {res.errors}; exit {rc}"
        )
        # -- 5. (--compare-src) this source against an older one, same run, same client ---------------------
        if args.compare_src:
            old_src = Path(args.compare_src).resolve()
            say(f"\n## 5. this source ({SRC}) vs an older one ({old_src}), under hey, interleaved")
            old_plain = closedloop_server(
                run_dir, "--log-dir", str(tmp / "log-old-plain"), label="old serve --log-dir", src=old_src
            )
            old_batched = closedloop_server(
                run_dir,
                "--log-dir",
                str(tmp / "log-old-batched"),
                *batch_args,
                label="old batched",
                src=old_src,
            )
            servers += [old_plain, old_batched]
            for title, new_srv, old_srv, conc in (
                ("unbatched, concurrency 8", plain, old_plain, 8),
                (f"batched ({' '.join(batch_args)}), concurrency 32", batched, old_batched, 32),
            ):
                rates, p99s, _ = compare(f"### {title}: new vs old", new_srv, old_srv, conc, conc)
                say(f"throughput ratio new / old: {spread(rates)}")
                say(f"cpu per request ratio new / old: {spread([1 / c for c in cpus])}")
                say(f"p99 ratio new / old: {spread(p99s)}")

        # the machine is shared: the load at the end says whether it changed while the rounds ran
        say(f"\nload average at end: {os.getloadavg()[0]:.1f}")
    finally:
        for srv in servers:
            srv.stop()
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text("\n".join(lines) + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
    if args.httpx_sections:
        return httpx_sections(
            argparse.Namespace(run_dir=args.run_dir, seconds=4.0, requests=1500, rounds=6, out=None)
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
