"""``POST /v2/models/{name}[/versions/{version}]/infer`` as a bare ASGI handler in front of FastAPI.

The inference route is the one that carries load, so it skips what the framework adds per request
(route matching over every endpoint, a ``Request`` object, dependency solving, a ``Response`` object)
and, for ordinary-sized bodies, the hop to a worker thread: the request is parsed, checked, scored,
logged and encoded on the event loop. On a loaded two-core machine that hop cost more than the model
call (``benchmarks/profile_serve_path.py``; docs/serving.md, "Request path"). Bodies over
``INLINE_MAX_BYTES`` and ``--fsync always`` (an fsync blocks for milliseconds) still go to a thread,
and with ``--max-batch-size`` requests wait for their batch instead (batching.py).

Everything else (and every other scope: lifespan, other routes) goes to the FastAPI app unchanged.
Errors are the same JSON ``{"error": ...}`` with the same statuses as the rest of the service.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from closedloop.serving.batching import Batcher, Pending, wait_for_disconnect
from closedloop.serving.model import ServedModel
from closedloop.serving.model_thread import ModelThread
from closedloop.serving.protocol import (
    HEADER_LENGTH,
    OutputTensor,
    ProtocolError,
    encode_response,
    parse_infer_request,
    requested_outputs,
)
from closedloop.serving.routing import Routing
from closedloop.serving.service import Scored, Service, new_request_id

INFER_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?/infer$")
INLINE_MAX_BYTES = 64 * 1024
"""Bodies up to this size are handled on the event loop (a few images); larger ones in a thread."""

_HEADER_LENGTH = HEADER_LENGTH.lower().encode()
_JSON = [(b"content-type", b"application/json")]
_BINARY = [(b"content-type", b"application/octet-stream")]


def label_text(value: Any) -> str:
    return ";".join(map(str, value)) if isinstance(value, list) else str(value)


class InferRoute:
    """The ASGI app ``build_app`` returns: OIP inference here, everything else to FastAPI (``self.app``)."""

    def __init__(
        self,
        app: Any,
        service: Service,
        model_or_404: Callable[..., ServedModel],
        batcher: Batcher | None,
        run_in_thread: Callable[..., Awaitable[Any]],
    ) -> None:
        self.app = app
        self.service = service
        self.model_or_404 = model_or_404
        self.batcher = batcher
        self.run_in_thread = run_in_thread
        self.inline = service.options.fsync == "none"
        # one thread for the unbatched model call: onnxruntime releases the GIL, so the event loop
        # parses and answers other requests on the second core meanwhile (one thread: the calls of a
        # one-thread session would only queue behind each other in more)
        self._model_thread = ModelThread()

    def __getattr__(self, name: str) -> Any:  # state, routes, ...: the FastAPI app's
        return getattr(self.app, name)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            match = INFER_PATH.match(scope["path"])
            if match and scope["method"] == "POST":
                await self.infer(scope, receive, send, match[1], match[2])
                return
            if match:
                message = f"method {scope['method']} not allowed on {scope['path']}"
                await _send(send, 405, json.dumps({"error": message}).encode(), [*_JSON, (b"allow", b"POST")])
                return
        await self.app(scope, receive, send)

    # -- one request ------------------------------------------------------------------------------------
    async def infer(
        self, scope: dict[str, Any], receive: Any, send: Any, name: str, version: str | None
    ) -> None:
        endpoint = "infer_version" if version is not None else "infer_latest"
        metrics = self.service.metrics
        try:
            headers = dict(scope["headers"])
            routing = self.service.router.current  # read once: a swap mid-request does not split it
            if version is not None:  # a client asking for one version gets that model, never the canary
                routing = Routing(champion=self.model_or_404(name, version))
            self.model_or_404(name)
            body = await self.read_body(receive, headers)
            if body is None:
                return  # the client left before sending its request: nothing to answer or log
            header_len = _text(headers.get(_HEADER_LENGTH))
            given_id = _text(headers.get(b"x-request-id"))
            if self.batcher is not None:
                answer = await self.batched(body, header_len, given_id, routing, receive)
                if answer is None:
                    return  # left while queued: never scored, never logged, nobody to answer
            elif self.inline and len(body) <= INLINE_MAX_BYTES:
                answer = await self.overlapped(body, header_len, given_id, routing)
            else:
                answer = await self.run_in_thread(self.work, body, header_len, given_id, routing)
        except ProtocolError as exc:
            if metrics:
                metrics.count(endpoint, "-", str(exc.status))
            await _send(send, exc.status, json.dumps({"error": str(exc)}).encode(), _JSON)
            return
        except Exception as exc:  # e.g. a failing model or a full disk: the client still gets JSON
            message = f"internal error while answering {scope['path']}: {type(exc).__name__}: {exc}"
            await _send(send, 500, json.dumps({"error": message}).encode(), _JSON)
            return
        scored, content, n_header = answer
        extra = [(b"x-request-id", scored.request_id.encode())]
        if n_header is not None:
            extra.append((HEADER_LENGTH.encode(), str(n_header).encode()))
        if metrics:
            metrics.count(endpoint, scored.route, "200")
        await _send(send, 200, content, (_BINARY if n_header is not None else _JSON) + extra)

    async def read_body(self, receive: Any, headers: dict[bytes, bytes]) -> bytes | None:
        """The whole body, 413 as soon as it passes the limit, None if the client disconnected."""
        limit = self.service.options.max_body_bytes
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ProtocolError(
                f"request body of {declared.decode()} bytes is over the limit of {limit} bytes", 413
            )
        encoding = headers.get(b"content-encoding", b"identity")
        if encoding != b"identity":
            raise ProtocolError(
                f"Content-Encoding {encoding.decode(errors='replace')!r} is not supported; send the body uncompressed"
            )
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise ProtocolError(f"request body is over the limit of {limit} bytes", 413)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def prepare(
        self, body: bytes, header_len: str | None, given_id: str | None, routing: Routing
    ) -> tuple[np.ndarray, str, list[str], dict[str, bool], list[dict[str, Any]]]:
        """Parse and check one request: its input array, id, the outputs it asked for and the category
        names the model never saw (answered as missing values)."""
        req = parse_infer_request(body, header_len)
        unseen: list[dict[str, Any]] = []
        x = self.service.check_oip_inputs(req, routing.champion, unseen)
        available = ["proba"] if routing.champion.problem_type == "regression" else ["proba", "label"]
        names, binary = requested_outputs(req, available)
        return x, new_request_id(req.id or given_id), names, binary, unseen

    def work(
        self, body: bytes, header_len: str | None, given_id: str | None, routing: Routing
    ) -> tuple[Scored, bytes, int | None]:
        """Parse, check, score, log and encode one request (unbatched)."""
        x, rid, names, binary, unseen = self.prepare(body, header_len, given_id, routing)
        scored = self.service.score(routing, x, rid)  # logged when this returns
        self.service.shadow(routing, x, rid)  # the answer is determined: the shadow scores it off this path
        return (scored, *self.encode(scored, names, binary, unseen))

    async def overlapped(
        self, body: bytes, header_len: str | None, given_id: str | None, routing: Routing
    ) -> tuple[Scored, bytes, int | None]:
        """:meth:`work` with the model call and its log record in the model thread, the rest here."""
        x, rid, names, binary, unseen = self.prepare(body, header_len, given_id, routing)
        scored = await self._model_thread.run(self.service.score, routing, x, rid)
        self.service.shadow(routing, x, rid)  # logged when score returned; the shadow runs off this path
        return (scored, *self.encode(scored, names, binary, unseen))

    async def batched(
        self, body: bytes, header_len: str | None, given_id: str | None, routing: Routing, receive: Any
    ) -> tuple[Scored, bytes, int | None] | None:
        """Check the request alone, queue it, and wait for its batch (None: the client left while queued)."""
        assert self.batcher is not None
        if len(body) <= INLINE_MAX_BYTES:
            x, rid, names, binary, unseen = self.prepare(body, header_len, given_id, routing)
        else:
            x, rid, names, binary, unseen = await self.run_in_thread(
                self.prepare, body, header_len, given_id, routing
            )
        pending = self.batcher.submit(routing, x, rid)
        # One watcher per queued request takes it out of the queue if its client leaves; it resolves the
        # request's own future with None, so this awaits one future (no asyncio.wait, no second waiter)
        watcher = asyncio.get_running_loop().create_task(self._drop_when_gone(pending, receive))
        try:
            scored = await pending.future
        finally:
            watcher.cancel()
        if scored is None:
            return None  # left while queued: never scored, never logged
        return (scored, *self.encode(scored, names, binary, unseen))

    async def _drop_when_gone(self, pending: Pending, receive: Any) -> None:
        """Wait for the client's disconnect; a request still queued then is dropped, never scored.
        One whose batch already started is answered and logged as usual (nobody can tell it left)."""
        await wait_for_disconnect(receive)
        if not pending.future.done() and self.batcher is not None and self.batcher.abandon(pending):
            pending.future.set_result(None)

    def encode(
        self,
        scored: Scored,
        names: list[str],
        binary: dict[str, bool],
        unseen: list[dict[str, Any]] | None = None,
    ) -> tuple[bytes, int | None]:
        tensors = {"proba": OutputTensor("proba", "FP64", scored.proba)}
        if "label" in names:
            tensors["label"] = OutputTensor("label", "BYTES", [label_text(v) for v in scored.labels])
        head = {
            "model_name": self.service.name,
            "model_version": scored.model.version,
            "id": scored.request_id,
        }
        if unseen:  # category names the model never saw, answered as missing values (categories.py)
            head["parameters"] = {"unseen_categories": unseen}
        return encode_response(head, [tensors[n] for n in names], binary)


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


async def _send(send: Any, status: int, content: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(content)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": content})
