"""What each served request returned, kept in memory to tie feedback to its impression."""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass


def new_request_id() -> str:
    """A fresh request id (32 hex digits)."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class ServedRequest:
    """One response: who got which items from which model."""

    request_id: str
    user_id: str
    items: tuple[str, ...]
    model_version: str
    variant: str
    served_at: float

    def position(self, item_id: str) -> int:
        """0-based position of ``item_id`` in the response, -1 when it was not served."""
        try:
            return self.items.index(item_id)
        except ValueError:
            return -1


class RequestLog:
    """The last ``capacity`` served requests by id (oldest dropped first)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._served: OrderedDict[str, ServedRequest] = OrderedDict()
        self._lock = threading.Lock()

    def add(
        self, request_id: str, user_id: str, items: list[str], model_version: str, variant: str
    ) -> ServedRequest:
        """Remember one response."""
        served = ServedRequest(
            request_id, user_id, tuple(items), model_version, variant, time.time()
        )
        with self._lock:
            self._served[request_id] = served
            while len(self._served) > self.capacity:
                self._served.popitem(last=False)
        return served

    def get(self, request_id: str) -> ServedRequest | None:
        """The response with that id, or None when unknown or forgotten."""
        with self._lock:
            return self._served.get(request_id)
