"""Where the time of one ``/v2/models/{name}/infer`` request goes, part by part, in process.

    python benchmarks/profile_serve_path.py --run-dir RUN_DIR [--n 2000] [--out docs/results/serve_path.txt]

Each part of the request path is timed on its own with the same one-image OIP JSON body a load client
sends (the first image of the run's validation split): protocol parsing, the input check, the model
call, the log record (build + JSON + write), the metrics, response encoding, and the whole request
through the ASGI app (routing, body reading, thread hop, response) driven in process without sockets.
Median microseconds over ``--n`` calls, after a warm-up. CPU time of this one process, so other load on
the machine moves these numbers less than it moves throughput (it still moves them: the machine is shared).

``--compare-src OLD_CHECKOUT/src --rounds R`` measures only the figure of merit, the CPU per request of
the whole process with many clients at once (unbatched c=8, batched c=32), for the old source and this
one in alternating subprocesses, R rounds, and prints the ratio new / old per round: a before/after in
one run, on a machine others load too. (No sockets: uvicorn's own HTTP work, the same for both, is not
in these figures; ``bench_serve.py --compare-src`` measures the servers under ``hey``.)
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def median_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def post_scope(path: str, body: bytes) -> dict[str, object]:
    """The ASGI scope of one JSON POST to ``path`` from a local client."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8080),
    }


async def post_once(app: object, scope: dict[str, object], body: bytes) -> int:
    """Send one request through the ASGI ``app``; its status. As uvicorn does, the receive channel
    gives the body, then says "disconnect" only after the response has been sent."""
    sent = False
    done = asyncio.Event()
    status = 0

    async def receive() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(msg: dict) -> None:
        nonlocal status
        if msg["type"] == "http.response.start":
            status = msg["status"]
        elif not msg.get("more_body"):
            done.set()

    await app(dict(scope), receive, send)  # type: ignore[operator]
    return status


def asgi_call(app: object, path: str, body: bytes) -> Callable[[], object]:
    """One POST through the ASGI app on a private event loop (no sockets, no HTTP parsing)."""
    loop = asyncio.new_event_loop()
    scope = post_scope(path, body)

    def call() -> object:
        status = loop.run_until_complete(post_once(app, scope, body))
        assert status == 200, status
        return status

    return call


def concurrent_cpu_us(app: object, path: str, body: bytes, clients: int, n: int) -> tuple[float, float]:
    """``clients`` closed-loop clients send ``n`` requests in all through the ASGI app (no sockets):
    CPU microseconds per request of the whole process (every thread: the batch threads too) and of the
    event-loop thread alone, the part the single loop has to do for each request."""
    loop = asyncio.new_event_loop()
    scope = post_scope(path, body)

    async def request() -> None:
        status = await post_once(app, scope, body)
        assert status == 200, status

    async def client(count: int) -> None:
        for _ in range(count):
            await request()

    async def run(count: int) -> None:
        await asyncio.gather(*(client(count) for _ in range(clients)))

    loop.run_until_complete(run(4))  # warm-up: the batcher's task starts on this loop
    p0, t0 = time.process_time(), time.thread_time()
    loop.run_until_complete(run(n // clients))
    for task in asyncio.all_tasks(loop):  # the batcher's task: stop it before the loop goes
        task.cancel()
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()
    p1, t1 = time.process_time(), time.thread_time()
    total = n // clients * clients
    return (p1 - p0) / total * 1e6, (t1 - t0) / total * 1e6


def model_batch_us(model: object, x1: np.ndarray, batch: int = 32, n: int = 50) -> float:
    """CPU microseconds per image of the model call alone at ``batch`` images per call."""
    xb = np.repeat(x1, batch, axis=0)
    for _ in range(5):
        model.predict(xb)  # type: ignore[attr-defined]
    t0 = time.thread_time()
    for _ in range(n):
        model.predict(xb)  # type: ignore[attr-defined]
    return (time.thread_time() - t0) / (n * batch) * 1e6


def full_collection_ms(repeat: int = 5) -> float:
    """Median milliseconds of one full pass of the cyclic garbage collector over this process's heap."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        gc.collect()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


CONCURRENT = {"unbatched c=8": (None, 8), "batched c=32": (32, 32)}
"""The figure of merit's two settings: --max-batch-size (None: off) and concurrent clients."""


def one_image_body(model: object, x1: np.ndarray) -> bytes:
    """The OIP JSON body a load client sends: one image as a flat UINT8 list."""
    tensor = {
        "name": model.input_name,
        "shape": list(x1.shape),
        "datatype": "UINT8",
        "data": x1.ravel().tolist(),
    }  # type: ignore[attr-defined]
    return json.dumps({"inputs": [tensor]}).encode()


def concurrent_figures(run_dir: Path, x1: np.ndarray, n: int, tmp: str) -> dict[str, tuple[float, float]]:
    """CPU microseconds per request (whole process, event-loop thread) in each ``CONCURRENT`` setting."""
    from closedloop.serving.app import build_app
    from closedloop.serving.service import ServeOptions, Service

    out = {}
    for name, (batch, clients) in CONCURRENT.items():
        extra = {} if batch is None else {"max_batch_size": batch, "max_queue_delay_ms": 2.0}
        service = Service(ServeOptions(run_dir=str(run_dir), log_dir=f"{tmp}/{name}", **extra))
        app = build_app(service)
        service.warm_up()
        model = service.router.current.champion
        out[name] = concurrent_cpu_us(
            app, f"/v2/models/{model.name}/infer", one_image_body(model, x1), clients, n
        )
        service.close()
    return out


def printer() -> tuple[list[str], Callable[[str], None]]:
    """A ``say`` that prints a line and keeps it (for ``--out``), after the command line and the time."""
    lines: list[str] = []

    def say(s: str = "") -> None:
        print(s, flush=True)
        lines.append(s)

    say(
        f"$ python benchmarks/profile_serve_path.py {' '.join(sys.argv[1:])}   # {_dt.datetime.now(_dt.UTC):%Y-%m-%d %H:%M} UTC"
    )
    return lines, say


def compare_sources(args: argparse.Namespace) -> int:
    """Old and new source in alternating subprocesses: CPU per request and the ratio new / old."""
    lines, say = printer()
    say(f"old: {args.compare_src}; new: {args.src}; load average at start: {_load()}")
    say("CPU microseconds per request in process (no sockets), whole process / event-loop thread")
    sources = {"old": args.compare_src, "new": args.src}
    ratios: dict[str, list[tuple[float, float]]] = {name: [] for name in CONCURRENT}
    header = f"{'round':<8}{'source':<8}" + "".join(
        f"{name + ' (process / loop)':>36}" for name in CONCURRENT
    )
    say(header)
    for rnd in range(args.rounds):
        got = {}
        for label in ("old", "new") if rnd % 2 == 0 else ("new", "old"):
            cmd = [
                sys.executable,
                __file__,
                "--run-dir",
                args.run_dir,
                "--src",
                sources[label],
                "--n",
                str(args.n),
                "--concurrent-json",
            ]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise SystemExit(f"{label} source failed:\n{res.stderr[-3000:]}")
            got[label] = json.loads(res.stdout.strip().splitlines()[-1])
            say(
                f"{rnd + 1:<8}{label:<8}"
                + "".join(
                    f"{got[label][name][0]:>26.1f} / {got[label][name][1]:>7.1f}" for name in CONCURRENT
                )
            )
        for name in CONCURRENT:
            old, new = got["old"][name], got["new"][name]
            ratios[name].append((new[0] / old[0], new[1] / old[1]))
    for name in CONCURRENT:
        whole = [r[0] for r in ratios[name]]
        loop = [r[1] for r in ratios[name]]
        say(
            f"{name}: CPU per request new / old: whole process median {statistics.median(whole):.3f} "
            f"(min {min(whole):.3f}, max {max(whole):.3f}), event-loop thread median {statistics.median(loop):.3f} "
            f"(min {min(loop):.3f}, max {max(loop):.3f}); {args.rounds} rounds"
        )
    say(f"load average at end: {_load()}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


def _load() -> str:
    import os

    return " ".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", required=True, help="run with an exported model")
    ap.add_argument("--n", type=int, default=2000, help="calls per part (requests per setting: twice this)")
    ap.add_argument("--out", help="also write the printed report here")
    ap.add_argument(
        "--src",
        default=str(ROOT / "src"),
        help="closedloop source tree to time (e.g. an older checkout's src, for a before/after comparison)",
    )
    ap.add_argument(
        "--compare-src", help="an older source tree: print CPU per request old vs --src, interleaved"
    )
    ap.add_argument("--rounds", type=int, default=3, help="with --compare-src: alternating rounds")
    ap.add_argument("--concurrent-json", action="store_true", help=argparse.SUPPRESS)  # a comparison's child
    args = ap.parse_args()
    if args.compare_src:
        return compare_sources(args)
    sys.path.insert(0, args.src)
    if args.concurrent_json:
        run_dir = Path(args.run_dir).resolve()
        with np.load(next(run_dir.glob("stages/*/artifacts/data/val.npz")), allow_pickle=False) as z:
            x1 = z["X"][:1]
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(concurrent_figures(run_dir, x1, args.n * 2, tmp)))
        return 0

    from closedloop.monitoring.requestlog import RequestLogWriter
    from closedloop.serving.app import build_app
    from closedloop.serving.protocol import (
        OutputTensor,
        encode_response,
        parse_infer_request,
        requested_outputs,
    )
    from closedloop.serving.service import ServeOptions, Service

    run_dir = Path(args.run_dir).resolve()
    data = next(run_dir.glob("stages/*/artifacts/data/val.npz"))
    with np.load(data, allow_pickle=False) as z:
        x1 = z["X"][:1]
    lines, say = printer()
    with tempfile.TemporaryDirectory() as tmp:
        service = Service(ServeOptions(run_dir=str(run_dir), log_dir=tmp))
        app = build_app(service)
        service.warm_up()  # what the app's lifespan does before the server reports ready
        # what one full pass of the garbage collector costs now: a pause every request in flight waits out
        gc_ms = full_collection_ms()
        model = service.router.current.champion
        body = json.dumps(
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
        ).encode()
        say(f"closedloop source: {Path(sys.modules['closedloop'].__file__).parent}")
        say(
            f"model: {model.name} {model.variant} input {list(model.input_shape)}; body {len(body)} bytes (one image, OIP JSON)"
        )
        req = parse_infer_request(body, None)
        x = service.check_oip_inputs(req, model)
        proba, labels, ms = model.predict(x)
        writer: RequestLogWriter = service.writer  # type: ignore[assignment]
        routing = service.router.current
        names, binary = requested_outputs(req, ["proba", "label"])

        if hasattr(service, "_line"):  # the record as its JSON line (serving/log_lines.py)

            def record() -> object:
                return service._line(
                    model, "champion", "rid", x, proba, labels, ms, "2026-01-01T00:00:00.000000Z"
                )

            def record_json() -> object:
                return None  # the line above is already JSON
        else:  # an older source: a pydantic record, then its JSON

            def record() -> object:
                return service._record(model, "champion", "rid", x, proba, labels, ms)

            rec = record()

            def record_json() -> object:
                return rec.model_dump_json()

        def encode() -> object:
            tensors = [
                OutputTensor("proba", "FP64", proba),
                OutputTensor("label", "BYTES", np.array([str(v) for v in labels], dtype=object)),
            ]
            return encode_response(
                {"model_name": model.name, "model_version": model.version, "id": "rid"}, tensors, binary
            )

        parts: list[tuple[str, Callable[[], object]]] = [
            ("protocol: parse JSON + validate + decode tensor", lambda: parse_infer_request(body, None)),
            ("input check (shape, finite, range)", lambda: service.check_oip_inputs(req, model)),
            ("model: onnxruntime + calibration + decision", lambda: model.predict(x)),
            ("log: build the record", record),
            ("log: record to JSON (new: included above)", record_json),
            ("log: write (one os.write, O_APPEND)", lambda: writer._requests.write(b"x" * 1200 + b"\n")),
            ("routing: read the current state", lambda: routing.answers_with_canary("rid")),
            ("response: encode", encode),
            ("service.score (model + record + write)", lambda: service.score(routing, x, "rid")),
        ]
        say(f"\n{'part':<52}{'median us':>11}")
        for name, fn in parts:
            say(f"{name:<52}{median_us(fn, args.n):>11.1f}")
        say(f"{'GC: one full collection after warm-up (ms)':<52}{gc_ms:>11.2f}")
        infer_path = f"/v2/models/{model.name}/infer"
        say(
            f"{'whole request through the ASGI app (no sockets)':<52}{median_us(asgi_call(app, infer_path, body), args.n):>11.1f}"
        )
        whole, on_loop = concurrent_cpu_us(app, infer_path, body, 8, args.n * 2)
        say(f"\nunbatched (the default), 8 concurrent clients, {args.n * 2} requests:")
        say(f"{'  CPU per request, whole process (us)':<52}{whole:>11.1f}")
        say(f"{'  CPU per request, event-loop thread (us)':<52}{on_loop:>11.1f}")
        service.close()

        batched = Service(
            ServeOptions(
                run_dir=str(run_dir), log_dir=tmp + "/batched", max_batch_size=32, max_queue_delay_ms=2.0
            )
        )
        batched_app = build_app(batched)
        batched.warm_up()
        whole, on_loop = concurrent_cpu_us(batched_app, infer_path, body, 32, args.n * 2)
        batched.close()
        say(
            f"\nbatched (--max-batch-size 32 --max-queue-delay-ms 2), 32 concurrent clients, {args.n * 2} requests:"
        )
        say(f"{'  CPU per request, whole process (us)':<52}{whole:>11.1f}")
        say(f"{'  CPU per request, event-loop thread (us)':<52}{on_loop:>11.1f}")
        say(
            f"{'  of which the model (onnxruntime, per image at batch 32)':<52}{model_batch_us(model, x1):>11.1f}"
        )
        ns: dict[str, object] = {}
        sys.argv = ["bare", str(model.export_dir), "0"]
        sys.path.insert(0, str(ROOT / "benchmarks"))
        from bench_serve import MINIMAL_SERVER

        exec(
            compile(MINIMAL_SERVER, "bare_app", "exec"), ns
        )  # the benchmark's bare FastAPI + onnxruntime app
        bare = median_us(asgi_call(ns["app"], f"/v2/models/{model.name}/infer", body), args.n)
        say(f"{'the bare FastAPI + onnxruntime app, whole request':<52}{bare:>11.1f}")
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
