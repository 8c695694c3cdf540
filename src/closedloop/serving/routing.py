"""Champion, challenger and how requests are split between them; promotion and rollback.

The whole routing state is one immutable :class:`Routing` object held by a :class:`Router`. A request
reads ``router.current`` once and uses that object to the end, so swapping it (promote, rollback) is a
single reference assignment: requests in flight finish on the models they started with, new ones see
the new state, and none is dropped or served half by one state and half by the other.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, replace
from typing import Literal

from closedloop.serving.model import ServedModel

Mode = Literal["shadow", "canary"]


def canary_fraction(request_id: str) -> float:
    """A request id's deterministic position in [0, 1): the same id always takes the same route."""
    digest = hashlib.sha256(request_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True)
class Routing:
    """Who answers: the champion, and optionally a challenger in shadow or canary mode."""

    champion: ServedModel
    challenger: ServedModel | None = None
    mode: Mode | None = None
    canary_share: float = 0.0

    def answers_with_canary(self, request_id: str) -> bool:
        return (
            self.mode == "canary"
            and self.challenger is not None
            and canary_fraction(request_id) < self.canary_share
        )

    @property
    def shadow(self) -> ServedModel | None:
        return self.challenger if self.mode == "shadow" else None

    def swapped(self) -> Routing:
        """The challenger becomes champion and the champion challenger, in the same mode."""
        if self.challenger is None:
            raise RoutingError("no challenger to promote: start the server with --shadow or --canary")
        return replace(self, champion=self.challenger, challenger=self.champion)

    def describe(self) -> dict[str, object]:
        return {
            "champion": {"version": self.champion.version, "run_dir": str(self.champion.run_dir)},
            "challenger": (
                {"version": self.challenger.version, "run_dir": str(self.challenger.run_dir)}
                if self.challenger
                else None
            ),
            "mode": self.mode,
            "canary_share": self.canary_share if self.mode == "canary" else None,
        }


class RoutingError(RuntimeError):
    """A promotion or rollback that cannot be done in the current state."""


class Router:
    """Holds the current :class:`Routing`; promote and rollback replace it atomically."""

    def __init__(self, routing: Routing) -> None:
        self._current = routing
        self._history: list[Routing] = []
        self._lock = threading.Lock()  # serializes swaps; readers never take it

    @property
    def current(self) -> Routing:
        return self._current

    def promote(self) -> Routing:
        """Serve the challenger as champion (the old champion becomes the challenger)."""
        with self._lock:
            new = self._current.swapped()
            self._history.append(self._current)
            self._current = new
            return new

    def rollback(self) -> Routing:
        """Undo the last promotion."""
        with self._lock:
            if not self._history:
                raise RoutingError("nothing to roll back: no promotion since the server started")
            self._current = self._history.pop()
            return self._current
