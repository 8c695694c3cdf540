"""Checking a ``/feedback`` label against the request it names, before it is recorded.

A label joins its prediction by ``(request_id, index)``; a typo in either would be recorded and then never
join, silently. So the service looks the request up first and answers what happened:

- ``verified``: an answered request with that id is in the request log and ``index`` is one of its inputs;
- refused (404): no answered request has that id; refused (400): ``index`` is past its inputs.

Several workers (``--workers N``) each write their own log files, but all into the same folder, and
every worker writes a request's record *before* answering it. A client can only give feedback for an
answer it received, so the record is already in that folder: searching it is conclusive, and no answer
needs to be "accepted unverified". Lookups cost nothing for requests this process answered (kept in a
bounded in-memory index); other ids are searched for in the folder's request files (one pass over their
bytes, the price of a rare lookup, e.g. after a restart or for another worker's request).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from closedloop.serving.protocol import ProtocolError

INDEX_SIZE = 1_000_000
"""Request ids of this process remembered (their input counts); older ones are searched in the log."""


@dataclass(frozen=True)
class Answered:
    """An answered request as the feedback check needs it: how many inputs it had, and where it was found."""

    n_inputs: int
    where: Literal["memory", "log"]


class AnsweredIndex:
    """Thread-safe ``request_id -> number of inputs`` of the requests this process answered (bounded)."""

    def __init__(self, size: int = INDEX_SIZE) -> None:
        self.size = size
        self._ids: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, request_id: str, n_inputs: int) -> None:
        with self._lock:
            self._ids[request_id] = n_inputs
            if len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def add_many(self, answered: list[tuple[str, int]]) -> None:
        """:meth:`add` for a batch's requests, under one lock."""
        with self._lock:
            for request_id, n_inputs in answered:
                self._ids[request_id] = n_inputs
            while len(self._ids) > self.size:
                self._ids.popitem(last=False)

    def get(self, request_id: str) -> int | None:
        with self._lock:
            return self._ids.get(request_id)


def find_in_log(log_dir: Path, request_id: str) -> int | None:
    """The number of inputs of the answered request ``request_id`` in ``log_dir``'s request files
    (champion or canary, status ok), or None. Shadow and error records never answered a client."""
    needle = b'"request_id":' + json.dumps(request_id).encode()
    for path in sorted(log_dir.glob("requests-*.jsonl")):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        start = data.find(needle)
        while start >= 0:
            line_start = data.rfind(b"\n", 0, start) + 1
            line_end = data.find(b"\n", start)
            if line_end >= 0:  # a line still being written (no newline yet) is not an answer yet
                try:
                    rec = json.loads(data[line_start:line_end])
                except (json.JSONDecodeError, UnicodeDecodeError):
                    rec = None
                if (
                    isinstance(rec, dict)
                    and rec.get("request_id") == request_id
                    and rec.get("route") in ("champion", "canary")
                    and rec.get("status") == "ok"
                    and isinstance(rec.get("labels"), list)
                ):
                    return len(rec["labels"])
            start = data.find(needle, start + 1)
    return None


def check_feedback_target(index: AnsweredIndex, log_dir: Path, request_id: str, input_index: int) -> Answered:
    """The answered request a label is for, or :class:`ProtocolError` (404 unknown id, 400 bad index)."""
    n = index.get(request_id)
    found = Answered(n, "memory") if n is not None else None
    if found is None:
        n = find_in_log(log_dir, request_id)
        if n is not None:
            found = Answered(n, "log")
    if found is None:
        raise ProtocolError(
            f"request_id {request_id!r}: no answered request with this id in the request log {log_dir}; "
            "feedback refused (use the id from the response's 'id' field or x-request-id header)",
            404,
        )
    if input_index >= found.n_inputs:
        raise ProtocolError(
            f"index {input_index} is past the inputs of request {request_id!r}, which had "
            f"{found.n_inputs} input(s) (index 0..{found.n_inputs - 1}); feedback refused"
        )
    return found
