"""``create_app(run_dir, ...)``: the FastAPI application (routes only: parse, check, call, log, answer).

Endpoints: the Open Inference Protocol V2 (``/v2/...``), ``/predict`` and ``/feedback`` for people,
``/monitor`` and ``/metrics`` for operators, ``/admin/promote`` and ``/admin/rollback`` (localhost only).
Every error is JSON ``{"error": "..."}`` naming the problem. See docs/serving.md.

Over 400 lines but one idea: the HTTP surface. Every route is thin; the logic lives in service.py,
protocol.py, routing.py and requestlog.py.
"""

# No "from __future__ import annotations": FastAPI reads the route signatures, whose types are imported
# inside build_app (the web stack is imported only when an app is built).

import contextlib
import json
import os
import time
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from pydantic_core import to_json

from closedloop.serving.batching import Batcher
from closedloop.serving.infer_route import InferRoute
from closedloop.serving.model import ServedModel
from closedloop.serving.protocol import ProtocolError
from closedloop.serving.routing import Routing
from closedloop.serving.service import ServeOptions, Service, new_request_id

OPTIONS_ENV = "CLOSEDLOOP_SERVE_OPTIONS"
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", "testclient"}
MONITOR_TTL_S = 10.0


def create_app(run_dir: str | os.PathLike[str], **options: Any) -> Any:
    """Build the ASGI app serving ``run_dir``'s exported model (keyword options: :class:`ServeOptions`).

    Loads every model now, so a bad run directory raises :class:`~closedloop.serving.model.ServeError`
    here rather than at the first request. Ready (``/v2/health/ready``) after one warm-up inference.
    """
    return build_app(Service(ServeOptions(run_dir=str(run_dir), **options)))


def app_from_env() -> Any:
    """uvicorn worker factory: options come as JSON in ``CLOSEDLOOP_SERVE_OPTIONS`` (set by ``serve``)."""
    return build_app(Service(ServeOptions.model_validate_json(os.environ[OPTIONS_ENV])))


def _error(status: int, message: str) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status)


async def read_body(request: Any, limit: int) -> bytes:
    """The whole body, or 413 as soon as it passes ``limit`` bytes (declared or actually sent)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ProtocolError(f"request body of {declared} bytes is over the limit of {limit} bytes", 413)
    if request.headers.get("content-encoding", "identity") != "identity":
        raise ProtocolError(
            f"Content-Encoding {request.headers['content-encoding']!r} is not supported; send the body uncompressed"
        )
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ProtocolError(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(service: Service) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException

    import closedloop

    opts = service.options

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        await run_in_threadpool(service.warm_up)
        yield
        service.close()  # after uvicorn drained the requests in flight

    app = FastAPI(
        title=f"closedloop: {service.name}",
        version=closedloop.__version__,
        description="Open Inference Protocol V2, /predict, /feedback, /monitor, /metrics",
        lifespan=lifespan,
    )
    app.state.service = service
    if opts.app_dir:  # the export-web page at /app/ (closedloop.serving.page_mount)
        from closedloop.serving.page_mount import mount_page

        mount_page(app, opts.app_dir, opts.run_dir)

    @app.exception_handler(ProtocolError)
    async def _protocol_error(request: Request, exc: ProtocolError) -> Any:
        if service.metrics:
            # the route's name, not the path: a client's made-up model names must not become label values
            endpoint = getattr(request.scope.get("route"), "name", "other")
            service.metrics.count(endpoint, "-", str(exc.status))
        return _error(exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Any:
        msg = exc.detail if exc.status_code != 404 else f"no endpoint {request.method} {request.url.path}"
        if exc.status_code == 405:
            msg = f"method {request.method} not allowed on {request.url.path}"
        return _error(exc.status_code, str(msg))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> Any:
        errs = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3])
        return _error(400, f"invalid request: {errs}")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception) -> Any:
        # e.g. a failing model or a full disk under the request log: the client still gets JSON
        return _error(500, f"internal error while answering {request.url.path}: {type(exc).__name__}: {exc}")

    def model_or_404(name: str, version: str | None = None) -> ServedModel:
        champion = service.router.current.champion
        if name != service.name:
            raise ProtocolError(f"unknown model {name!r}; this server serves {service.name!r}", 404)
        if version is not None and version != champion.version:
            raise ProtocolError(
                f"unknown version {version!r} of model {name!r}; this server serves version {champion.version!r}",
                404,
            )
        return champion

    # -- health and metadata (OIP) --------------------------------------------------------------------
    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> Any:
        return JSONResponse({"ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "closedloop", "version": closedloop.__version__, "extensions": ["binary_tensor_data"]}

    def metadata(model: ServedModel) -> dict[str, Any]:
        outputs = [{"name": "proba", "datatype": "FP64", "shape": [-1, _n_proba(model)]}]
        if model.problem_type != "regression":
            outputs.append({"name": "label", "datatype": "BYTES", "shape": [-1]})
        return {
            "name": service.name,
            "versions": [model.version],
            "platform": "onnx_onnxv1",
            "inputs": [{"name": model.input_name, "datatype": "FP32", "shape": [-1, *model.input_shape]}],
            "outputs": outputs,
        }

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        return metadata(model_or_404(name))

    @app.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        return metadata(model_or_404(name, version))

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Any:
        model_or_404(name)
        return JSONResponse({"name": name, "ready": service.ready}, status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> Any:
        return await model_ready(model_or_404(name, version).name)

    # -- inference (OIP): served by InferRoute in front of this app (see build_app's end) ------------
    # -- convenience endpoints -------------------------------------------------------------------------
    @app.post("/predict")
    async def predict(request: Request) -> Any:
        """A JSON array of inputs, or image files as multipart/form-data: one prediction per input."""
        body = await read_body(request, opts.max_body_bytes)
        routing = service.router.current
        model = routing.champion
        x = None
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            x = await _images_from_form(request, body, model)
        rid = new_request_id(request.headers.get("x-request-id"))
        scored, content = await run_in_threadpool(predict_work, body, x, rid, routing)
        if service.metrics:
            service.metrics.count(request.scope["route"].name, scored.route, "200")
        return Response(content, media_type="application/json", headers={"x-request-id": rid})

    def predict_work(body: bytes, x: np.ndarray | None, rid: str, routing: Routing) -> Any:
        unseen: list[dict[str, Any]] = []  # category names the model never saw: answered as missing
        if x is None:
            try:
                data = json.loads(body)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise ProtocolError(f"malformed JSON body: {exc}; expected a JSON array of inputs") from None
            x = service.check_json_inputs(data, routing.champion, unseen)
        scored = service.score(routing, x, rid)
        service.shadow(routing, x, rid)
        out = _predictions(service.name, scored)
        if unseen:
            out["unseen_categories"] = unseen
        return scored, to_json(out)

    async def _images_from_form(request: Request, body: bytes, model: ServedModel) -> np.ndarray:
        from starlette.datastructures import UploadFile

        from closedloop.serving.images import decode_image

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form()
        except Exception as exc:  # python-multipart's parse errors
            raise ProtocolError(f"malformed multipart/form-data body: {exc}") from None
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ProtocolError(
                "multipart body without files; upload images as form fields (e.g. files=@x.png)"
            )
        arrays = [decode_image(await f.read(), f.filename or "upload", model.input_shape) for f in files]
        return service.check_array(np.stack(arrays), model, "uploaded images")

    @app.post("/feedback")
    async def feedback(request: Request) -> Any:
        """The true label of input ``index`` of request ``request_id``; appended to the feedback log."""
        from pydantic import ValidationError

        from closedloop.monitoring.requestlog import FeedbackRecord

        body = await read_body(request, opts.max_body_bytes)
        try:
            raw = json.loads(body)
            if not isinstance(raw, dict):
                raise ProtocolError("feedback must be a JSON object {request_id, index, label}")
            record = FeedbackRecord.model_validate({k: v for k, v in raw.items() if k != "kind"})
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed JSON body: {exc}") from None
        except ValidationError as exc:
            errs = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:3]
            )
            raise ProtocolError(f"invalid feedback ({errs}); expected {{request_id, index, label}}") from None
        found = await run_in_threadpool(service.feedback, record)
        return {
            "status": "verified",
            "found_in": found.where,
            "request_id": record.request_id,
            "index": record.index,
            "label": record.label,
        }

    # -- operations ------------------------------------------------------------------------------------
    monitor_cache: dict[str, Any] = {}

    def monitor_status() -> dict[str, Any]:
        if not opts.log_dir:
            raise ProtocolError("the live monitor needs a request log: start the server with --log-dir", 503)
        try:
            from closedloop.monitoring.live import LiveMonitor
        except ImportError as exc:
            raise ProtocolError(
                f"the live monitor (closedloop.monitoring.live) is not available: {exc}", 503
            ) from None
        champion = service.router.current.champion
        key = str(champion.run_dir)
        if monitor_cache.get("key") != key:
            try:
                monitor_cache.update(key=key, monitor=LiveMonitor(champion.run_dir, opts.log_dir))
            except Exception as exc:  # e.g. a run without the monitor stage's reference profile
                raise ProtocolError(f"cannot start the live monitor for {key}: {exc}", 503) from None
        try:
            status = monitor_cache["monitor"].status().model_dump(mode="json")
        except Exception as exc:
            raise ProtocolError(f"the live monitor failed: {type(exc).__name__}: {exc}", 503) from None
        monitor_cache["time"] = time.monotonic()
        if service.metrics:
            service.metrics.observe_monitor(status)
        return status

    @app.get("/monitor")
    async def monitor() -> Any:
        """The live monitor over the latest windows of the request log (alert level, p-values, estimates)."""
        return await run_in_threadpool(monitor_status)

    @app.get("/metrics")
    async def metrics() -> Any:
        if service.metrics is None:
            raise ProtocolError("metrics are off (started with metrics=False)", 404)
        if opts.log_dir and time.monotonic() - monitor_cache.get("time", -1e9) > MONITOR_TTL_S:
            with contextlib.suppress(ProtocolError):  # the gauges keep their last values; /monitor says why
                await run_in_threadpool(monitor_status)
        content, ctype = service.metrics.render()
        return Response(content, media_type=ctype)

    def admin(request: Request) -> None:
        host = request.client.host if request.client else ""
        if host not in LOCAL_HOSTS:
            raise ProtocolError(f"admin endpoints answer only on localhost; request from {host}", 403)
        if opts.workers > 1:
            raise ProtocolError(
                f"promotion swaps the model in one process but this server runs {opts.workers} workers; "
                "restart with the new champion instead (see docs/serving.md)",
                409,
            )

    @app.post("/admin/promote")
    async def promote(request: Request) -> Any:
        """The challenger becomes champion; requests in flight finish on the models they started with."""
        from closedloop.serving.routing import RoutingError

        admin(request)
        try:
            new = service.router.promote()
        except RoutingError as exc:
            raise ProtocolError(str(exc), 409) from None
        return {
            "status": "promoted",
            **new.describe(),
            "monitor_reference": _reference_of(new.champion.run_dir),
        }

    def _reference_of(run_dir: Any) -> str:
        """The monitor reference the live monitor uses from now on: the new champion's own (its run's,
        or the ``references/`` an adapted folder carries); /monitor reloads it at its next call."""
        from closedloop.monitoring.monitor import find_profile_dir

        try:
            return str(find_profile_dir(run_dir))
        except Exception as exc:  # e.g. a folder without a reference: promotion stands, monitoring says why
            return f"none: {exc}"

    @app.post("/admin/rollback")
    async def rollback(request: Request) -> Any:
        """Undo the last promotion (the same swap back)."""
        from closedloop.serving.routing import RoutingError

        admin(request)
        try:
            back = service.router.rollback()
        except RoutingError as exc:
            raise ProtocolError(str(exc), 409) from None
        return {
            "status": "rolled back",
            **back.describe(),
            "monitor_reference": _reference_of(back.champion.run_dir),
        }

    @app.get("/admin/routing")
    async def routing_state() -> dict[str, Any]:
        return service.router.current.describe()

    batcher = None
    if opts.max_batch_size is not None:
        batcher = Batcher(service, opts.max_batch_size, opts.max_queue_delay_ms)
    return InferRoute(app, service, model_or_404, batcher, run_in_threadpool)


def _n_proba(model: ServedModel) -> int:
    if model.problem_type == "binary":
        return 2
    if model.problem_type == "regression":
        return 1
    return len(model.label_names) or -1


def _predictions(name: str, scored: Any) -> dict[str, Any]:
    model: ServedModel = scored.model
    p = model.predictor
    names = model.label_names
    thr = None if p.threshold is None else float(p.threshold)
    preds = []
    for i, (row, label) in enumerate(zip(scored.proba.tolist(), scored.labels, strict=True)):
        entry: dict[str, Any] = {"index": i, "label": label}
        if (
            model.problem_type == "regression"
        ):  # a number, not a class: named as one (label kept for old clients)
            entry["value"] = float(row[0]) if isinstance(row, list) else float(row)
        else:
            entry["probabilities"] = dict(zip(names, row, strict=False)) if names else row
        if model.problem_type == "binary":
            entry["decision"] = {
                "threshold": 0.5 if thr is None else thr,
                "positive_class": names[1] if len(names) > 1 else 1,
                "positive": bool(row[1] >= (0.5 if thr is None else thr)),
            }
        elif model.problem_type == "multilabel":
            entry["decision"] = {"threshold": 0.5 if thr is None else thr}
        elif model.problem_type != "regression":
            entry["decision"] = {"rule": "most probable class"}
        preds.append(entry)
    return {
        "request_id": scored.request_id,
        "model_name": name,
        "model_version": model.version,
        "variant": model.variant,
        "route": scored.route,
        "predictions": preds,
    }
