"""The service's logic without the web framework: options, input checks, routing a request to a model,
and writing the request log. ``app.py`` only parses HTTP and calls this."""

from __future__ import annotations

import contextlib
import gc
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from closedloop.core.errors import RunDirError
from closedloop.core.run_reader import RunDir
from closedloop.monitoring.requestlog import (
    FeedbackRecord,
    LoggedArray,
    RequestLogWriter,
    RequestRecord,
    utc_now,
)
from closedloop.serving.categories import category_codes, encode_names, numeric_codes, oip_table_rows
from closedloop.serving.feedback import Answered, AnsweredIndex, check_feedback_target
from closedloop.serving.log_lines import request_line
from closedloop.serving.metrics import ServiceMetrics
from closedloop.serving.model import ServedModel, ServeError
from closedloop.serving.predictor import feature_mismatch
from closedloop.serving.protocol import DecodedRequest, ProtocolError
from closedloop.serving.routing import Router, Routing
from closedloop.serving.shadow import ShadowJob, ShadowRunner

if TYPE_CHECKING:
    from closedloop.serving.batching import Pending

ACCEPTED_DATATYPES = ("UINT8", "UINT16", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")


class ServeOptions(BaseModel):
    """Everything ``create_app`` and ``closedloop serve`` take (also passed to uvicorn workers as JSON)."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str
    """Run directory of the champion (it must hold the export stage's output)."""
    variant: str | None = None
    """Model file to serve: int8, fp32, student, ... (default: the variant the export stage shipped)."""
    log_dir: str | None = None
    """Request log folder; without it nothing is logged and /feedback and /monitor answer 503."""
    shadow: str | None = None
    """Run directory of a challenger scored on every request, logged, never returned."""
    canary: str | None = None
    """Run directory of a challenger that answers ``canary_share`` of the requests."""
    canary_share: float = Field(0.1, ge=0.0, le=1.0)
    model_name: str | None = None
    """Name clients use in /v2/models/{name} (default: the pipeline's name)."""
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)
    """Larger request bodies get 413."""
    input_reduction: Literal["full", "none"] = "full"
    """What the log keeps of each input: the raw array (``full``) or nothing (``none``)."""
    log_max_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    """Rotate a log file past this size."""
    fsync: Literal["none", "always"] = "none"
    """``always``: fsync every record (survives a machine crash, costs throughput)."""
    workers: int = Field(1, ge=1)
    """Number of uvicorn worker processes (promotion then needs a restart; see docs/serving.md)."""
    metrics: bool = True
    """Count requests and latencies for /metrics."""
    max_batch_size: int | None = Field(None, ge=1)
    """Dynamic batching: gather concurrent requests into model calls of up to this many inputs (off: None)."""
    max_queue_delay_ms: float = Field(2.0, ge=0.0)
    """Dynamic batching: the longest a request waits for batch-mates (below the task's max_latency_ms)."""
    app_dir: str | None = None
    """An ``export-web`` folder of this run, served at /app/ (the model running in the browser)."""


@dataclass
class Scored:
    """What answered a request."""

    request_id: str
    model: ServedModel
    route: Literal["champion", "canary"]
    proba: np.ndarray
    labels: list[Any]


def freeze_startup_heap() -> None:
    """Hide what start-up built (models, the web framework, the routes: ~70,000 objects that live as long
    as the process) from the cyclic garbage collector.

    Every few thousand requests the collector makes a full pass over every object in the process. Over
    the start-up heap such a pass took 17-40 ms under load, a pause that every request in flight waited
    out, and with 32 clients that pause was the batched p99 (docs/serving.md, "Request path"). After
    ``gc.freeze()`` a full pass sees only what requests created: about 0.2 ms. Garbage is collected first,
    so only live objects are frozen; reference counting still frees frozen objects that are dropped.
    """
    gc.collect()
    gc.freeze()


def new_request_id(given: str | None) -> str:
    """The client's id, or 32 random hex digits (what ``uuid4().hex`` looks like, at a seventh of its cost:
    no UUID object). Random, not counted: ids name requests in ``/feedback``, so they must not be guessable."""
    return given if given else os.urandom(16).hex()


class Service:
    """Loaded models, the router, the request log and the metrics of one process."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        if options.shadow and options.canary:
            raise ServeError("give --shadow or --canary, not both (one challenger at a time)")
        champion = ServedModel.load(options.run_dir, options.variant, options.model_name)
        challenger, mode = None, None
        for role in ("shadow", "canary"):
            path = getattr(options, role)
            if path:
                challenger = ServedModel.load(path, options.variant, champion.name)
                champion.check_compatible(challenger, role)
                mode = role
        self.router = Router(
            Routing(champion=champion, challenger=challenger, mode=mode, canary_share=options.canary_share)
        )
        self.name = champion.name
        self.writer = _open_log(options) if options.log_dir else None
        self.metrics = ServiceMetrics() if options.metrics else None
        self.answered = AnsweredIndex()
        if options.max_batch_size is not None:
            check_batching(options, [m for m in (champion, challenger) if m is not None])
        self.shadow_runner = ShadowRunner(self._score_shadow)
        self.ready = False

    # -- lifecycle -----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """One inference per loaded model; the server reports ready only after this."""
        routing = self.router.current
        for model in (routing.champion, routing.challenger):
            if model is not None:
                model.warm_up()
        freeze_startup_heap()
        self.ready = True

    def close(self) -> None:
        """Drain the shadow queue, then close the log (uvicorn has already finished the requests)."""
        self.shadow_runner.close()
        if self.writer is not None:
            self.writer.close()

    # -- inputs ----------------------------------------------------------------------------------------
    def check_oip_inputs(
        self, req: DecodedRequest, model: ServedModel, unseen: list[dict[str, Any]] | None = None
    ) -> np.ndarray:
        """The single input tensor of an OIP request, checked against the model's contract. A table
        may also come by name (:func:`~closedloop.serving.categories.oip_table_rows`); unseen category
        names are missing values, listed in ``unseen``."""
        contract = model.predictor.meta["input"]
        if model.input_kind != "images" and contract.get("feature_names"):
            rows = oip_table_rows(
                req.inputs, model.input_name, contract["feature_names"], category_codes(contract),
                [] if unseen is None else unseen,
            )  # fmt: skip
            if rows is not None:
                return self.check_array(rows, model, "inputs")
        if len(req.inputs) != 1:
            got = ", ".join(repr(i.name) for i in req.inputs) or "none"
            raise ProtocolError(
                f"wrong number of inputs: model {model.name!r} takes 1 input ({model.input_name!r}), "
                f"got {len(req.inputs)} ({got})"
            )
        inp = req.inputs[0]
        if inp.name != model.input_name:
            raise ProtocolError(
                f"unknown input {inp.name!r}; model {model.name!r} takes {model.input_name!r}"
            )
        if inp.datatype not in ACCEPTED_DATATYPES:
            raise ProtocolError(
                f"input {inp.name!r}: datatype {inp.datatype} is not accepted; expected FP32 "
                f"(also {', '.join(d for d in ACCEPTED_DATATYPES if d != 'FP32')})"
            )
        return self.check_array(inp.array, model, f"input {inp.name!r}")

    def check_array(self, arr: np.ndarray, model: ServedModel, what: str) -> np.ndarray:
        want = model.input_shape
        if arr.ndim != len(want) + 1 or tuple(arr.shape[1:]) != want or arr.shape[0] == 0:
            raise ProtocolError(
                f"{what}: shape {list(arr.shape)} does not match the model; expected [N, "
                f"{', '.join(map(str, want))}] with N >= 1"
                + (" (images channels last: N, H, W, C)" if model.input_kind == "images" else "")
            )
        # The same contract as Predictor.check_input (which runs again inside predict), with the
        # messages naming the request's input.
        if arr.dtype.kind == "f":
            bad = ~np.isfinite(arr)
            # NaN is the table contract's "missing value"; images and infinities have no such meaning
            if model.input_kind != "images":
                bad &= ~np.isnan(arr)
            if bad.any():
                first = [int(i) for i in np.argwhere(bad)[0]]
                hint = " (NaN marks a missing feature only in tables)" if model.input_kind == "images" else ""
                raise ProtocolError(
                    f"{what}: {int(bad.sum())} value(s) are NaN or infinite (first at index {first}); "
                    f"expected finite numbers{hint}"
                )
        if model.input_kind == "images" and arr.dtype != np.uint8:
            lo, hi = arr.min(), arr.max()
            if lo < 0 or hi > 255:
                raise ProtocolError(
                    f"{what}: image values range {lo:.6g}..{hi:.6g}; expected raw pixels in 0..255 "
                    "(do not normalize: the model does)"
                )
        return arr

    def check_json_inputs(
        self, data: Any, model: ServedModel, unseen: list[dict[str, Any]] | None = None
    ) -> np.ndarray:
        """``/predict``'s JSON array: one element per input (nested lists, or for tables objects by feature).
        A categorical feature may be sent by name (:mod:`.categories`); an unseen name is a missing value,
        listed in ``unseen``."""
        if not isinstance(data, list) or not data:
            raise ProtocolError(
                "the body must be a non-empty JSON array with one element per input "
                f"(each of shape {list(model.input_shape)})"
            )
        contract = model.predictor.meta["input"]
        names = contract.get("feature_names")
        codes = category_codes(contract) if model.input_kind != "images" else {}
        unseen = [] if unseen is None else unseen
        if model.input_kind != "images" and names and all(isinstance(r, dict) for r in data):
            by_value = numeric_codes(codes)  # keyed rows: a number of a numeric category is its name
            rows = []
            for i, row in enumerate(data):
                if wrong := feature_mismatch(row, names):
                    raise ProtocolError(f"input {i}: {wrong}; expected {names} (null for a missing value)")
                values = encode_names([row[n] for n in names], names, codes, i, unseen, by_value)
                text = next(
                    (j for j, v in enumerate(values) if isinstance(v, str | bool | list | dict)), None
                )
                if text is not None:  # name the field: "not arrays of numbers" would not say which
                    raise ProtocolError(
                        f"input {i}: feature {names[text]!r} is {values[text]!r}, not a number; send numbers "
                        "(a categorical feature as its category name or code, null for a missing value)"
                    )
                rows.append([math.nan if v is None else v for v in values])
            data = rows
        elif model.input_kind != "images" and names and all(isinstance(r, list) for r in data):
            wrong = next((i for i, r in enumerate(data) if len(r) != len(names)), None)
            if wrong is not None:  # a table wider (or narrower) than the model's columns: say which row
                raise ProtocolError(
                    f"input {wrong}: {len(data[wrong])} values; expected [N, {len(names)}] in the column "
                    f"order {names} (or objects keyed by feature name)"
                )
            if codes:
                data = [encode_names(r, names, codes, i, unseen) for i, r in enumerate(data)]
        try:
            arr = np.asarray(data)
        except (TypeError, ValueError):
            arr = None
        if arr is None or arr.dtype.kind not in "biuf":
            raise ProtocolError(
                f"the inputs are not arrays of numbers of one shape; expected {len(data)} x "
                f"{list(model.input_shape)} numbers"
            )
        return self.check_array(arr, model, "inputs")

    # -- scoring -----------------------------------------------------------------------------------------
    def score(self, routing: Routing, x: np.ndarray, request_id: str) -> Scored:
        """Answer with the champion, or the canary for its share of request ids (champion if it fails).
        The record is in the log when this returns."""
        if routing.answers_with_canary(request_id):
            assert routing.challenger is not None
            try:
                proba, labels, ms = routing.challenger.predict(x)
            except Exception as exc:  # a failing canary must not fail the request: the champion answers
                self._log_error(routing.challenger, "canary", request_id, x, exc)
                if self.metrics:
                    self.metrics.fallbacks.inc()
            else:
                self._log(routing.challenger, "canary", request_id, x, proba, labels, ms)
                return Scored(request_id, routing.challenger, "canary", proba, labels)
        proba, labels, ms = routing.champion.predict(x)
        self._log(routing.champion, "champion", request_id, x, proba, labels, ms)
        return Scored(request_id, routing.champion, "champion", proba, labels)

    def score_batch(self, batch: list[Pending]) -> list[Scored | Exception]:
        """Score queued requests with one model call per model (champion, canary), one record each,
        all written before any is answered. If a batch's call fails, its requests are scored one by one,
        so only a request that fails on its own gets an error."""
        groups: dict[int, list[Pending]] = {}
        for p in batch:
            model = (
                p.routing.challenger if p.routing.answers_with_canary(p.request_id) else p.routing.champion
            )
            groups.setdefault(id(model), []).append(p)
        out: dict[int, Scored | Exception] = {}
        for group in groups.values():
            routing = group[0].routing
            canary = routing.answers_with_canary(group[0].request_id)
            model = routing.challenger if canary else routing.champion
            assert model is not None
            route: Literal["champion", "canary"] = "canary" if canary else "champion"
            try:
                proba, labels, ms = model.predict(np.concatenate([p.x for p in group]))
            except Exception:
                for p in group:
                    try:
                        out[id(p)] = self.score(p.routing, p.x, p.request_id)
                    except Exception as exc:
                        out[id(p)] = exc
                continue
            if self.metrics:
                self.metrics.observe_batch(len(group), len(proba))
            lines, scored, start = [], [], 0
            now = utc_now()  # one model call: its requests were scored at the same moment
            for p in group:
                n = len(p.x)
                # each request waited for the whole call: its latency is the batch's
                sl = slice(start, start + n)
                scored.append(Scored(p.request_id, model, route, proba[sl], labels[sl]))
                if self.metrics:
                    self.metrics.observe(route, n, ms / 1000.0)
                if self.writer is not None:
                    lines.append(self._line(model, route, p.request_id, p.x, proba[sl], labels[sl], ms, now))
                start += n
            try:
                if self.writer is not None:
                    self.writer.write_lines(b"".join(lines))
            except Exception as exc:  # e.g. a full disk: nothing of this group is acknowledged
                for p in group:
                    out[id(p)] = exc
                continue
            if self.writer is not None:
                self.answered.add_many([(p.request_id, len(p.x)) for p in group])
            for p, sc in zip(group, scored, strict=True):
                self.shadow(p.routing, p.x, p.request_id)
                out[id(p)] = sc
        return [out[id(p)] for p in batch]

    def shadow(self, routing: Routing, x: np.ndarray, request_id: str) -> None:
        """Hand the input to the shadow model's thread (call once the response is determined)."""
        if routing.shadow is not None:
            self.shadow_runner.submit(ShadowJob(routing.shadow, x, request_id))

    def _score_shadow(self, jobs: list[ShadowJob]) -> None:
        """One model call for the queued inputs of one shadow model, one record per request; failures
        are logged and counted, never raised (the responses are long gone)."""
        model = jobs[0].model
        try:
            proba, labels, ms = model.predict(np.concatenate([j.x for j in jobs]))
        except Exception:
            for job in jobs:  # score one by one, so only the failing requests get error records
                self._score_shadow_one(job)
            return
        lines, start, now = [], 0, utc_now()
        for job in jobs:
            n = len(job.x)
            # the batch's time shared by rows: what each request would have cost the shadow model
            share_ms = ms * n / len(proba)
            if self.metrics:
                self.metrics.observe("shadow", n, share_ms / 1000.0)
            sl = slice(start, start + n)
            lines.append(
                self._line(model, "shadow", job.request_id, job.x, proba[sl], labels[sl], share_ms, now)
            )
            start += n
        if self.writer is not None:
            with contextlib.suppress(Exception):  # e.g. a full disk: not the (long answered) client's problem
                self.writer.write_lines(b"".join(lines))

    def _score_shadow_one(self, job: ShadowJob) -> None:
        try:
            proba, labels, ms = job.model.predict(job.x)
            self._log(job.model, "shadow", job.request_id, job.x, proba, labels, ms)
        except Exception as exc:
            if self.metrics:
                self.metrics.shadow_errors.inc()
            with contextlib.suppress(Exception):  # e.g. a full disk: still not the client's problem
                self._log_error(job.model, "shadow", job.request_id, job.x, exc)

    def _inputs(self, x: np.ndarray) -> LoggedArray | None:
        return LoggedArray.from_array(x) if self.options.input_reduction == "full" else None

    def _log(
        self,
        model: ServedModel,
        route: str,
        rid: str,
        x: np.ndarray,
        proba: np.ndarray,
        labels: list[Any],
        ms: float,
    ) -> None:
        """Count one scored request in the metrics and write its record (before it is answered)."""
        if self.metrics:
            self.metrics.observe(route, len(x), ms / 1000.0)
        if self.writer is None:
            return
        self.writer.write_lines(self._line(model, route, rid, x, proba, labels, ms, utc_now()))
        if route != "shadow":
            self.answered.add(rid, len(x))

    def _line(
        self,
        model: ServedModel,
        route: str,
        rid: str,
        x: np.ndarray,
        proba: np.ndarray,
        labels: list[Any],
        ms: float,
        now: str,
    ) -> bytes:
        """The log record of one scored request, as its JSON line (:mod:`.log_lines`)."""
        kept = x if self.options.input_reduction == "full" else None
        return request_line(model, route, rid, now, kept, proba, labels, ms)

    def _log_error(self, model: ServedModel, route: str, rid: str, x: np.ndarray, exc: Exception) -> None:
        if self.writer is None:
            return
        self.writer.write(
            RequestRecord(
                request_id=rid,
                model_name=model.name,
                model_version=model.version,
                run_dir=str(model.run_dir),
                route=route,  # type: ignore[arg-type]
                variant=model.variant,
                inputs=self._inputs(x),
                proba=None,
                labels=None,
                latency_ms=0.0,
                status="error",
                error=f"{type(exc).__name__}: {exc}",
            )
        )

    # -- feedback ----------------------------------------------------------------------------------------
    def feedback(self, record: FeedbackRecord) -> Answered:
        """Check the label and the request it names (see feedback.py), then append it to the log."""
        model = self.router.current.champion
        names = model.label_names
        given = record.label if isinstance(record.label, list) else [record.label]
        if model.problem_type != "multilabel" and isinstance(record.label, list):
            raise ProtocolError(
                f"label: one class name expected for a {model.problem_type} model, got a list"
            )
        unknown = [g for g in given if g not in names]
        if unknown:
            raise ProtocolError(f"label: unknown class {unknown[0]!r}; this model's classes are {names}")
        if self.writer is None:
            raise ProtocolError("feedback needs a request log: start the server with --log-dir", status=503)
        found = check_feedback_target(self.answered, self.writer.log_dir, record.request_id, record.index)
        self.writer.write(record)
        return found


def task_max_latency_ms(run_dir: Path) -> tuple[float | None, Path | None]:
    """The task's ``constraints.max_latency_ms`` from a run's task artifact, and the file it came from
    (None, None without one, or for a task of an older layout: the latency bound is then not checked)."""
    from closedloop.artifacts.task import TaskSpec

    run = RunDir(run_dir)
    found = run.artifact_dir(TaskSpec)
    if found is None:
        return None, None
    try:
        value = run.artifact(TaskSpec).constraints.max_latency_ms
    except RunDirError:
        return None, None
    return value, found / TaskSpec.record_file


def onnx_batch_limit(model: ServedModel) -> int | None:
    """The largest batch the ONNX graph takes: its input's first dimension when fixed, else None."""
    dim = model.predictor.session.get_inputs()[0].shape[0]
    return dim if isinstance(dim, int) and dim > 0 else None


def check_batching(options: ServeOptions, models: list[ServedModel]) -> None:
    """Refuse a batch size the models cannot take, or a queue delay the task's latency budget cannot."""
    assert options.max_batch_size is not None
    for model in models:
        limit = onnx_batch_limit(model)
        if limit is not None and options.max_batch_size > limit:
            raise ServeError(
                f"--max-batch-size {options.max_batch_size}: the model of {model.run_dir} takes batches of at "
                f"most {limit} (its ONNX input {model.predictor.input_name!r} has a fixed first dimension {limit})"
            )
    bound, source = task_max_latency_ms(Path(options.run_dir))
    if bound is not None and options.max_queue_delay_ms >= bound:
        raise ServeError(
            f"--max-queue-delay-ms {options.max_queue_delay_ms:g}: a request could wait longer than the task "
            f"allows for its whole answer (constraints.max_latency_ms {bound:g} in {source}); give less than {bound:g}"
        )


def check_log_dir(log_dir: str) -> None:
    """One sentence when ``--log-dir`` names something that cannot be the request log's folder."""
    path = Path(log_dir)
    if path.exists() and not path.is_dir():
        raise ServeError(
            f"--log-dir {path}: this is an existing file, not a folder; give a folder for the request log "
            "(it is created when missing)"
        )


def _open_log(options: ServeOptions) -> RequestLogWriter:
    assert options.log_dir is not None
    check_log_dir(options.log_dir)
    try:
        return RequestLogWriter(options.log_dir, max_bytes=options.log_max_bytes, fsync=options.fsync)
    except OSError as exc:
        raise ServeError(
            f"--log-dir {options.log_dir}: cannot create the request log's folder there ({exc.strerror or exc})"
        ) from None


def resolve(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None
