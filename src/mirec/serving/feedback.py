"""Feedback: tie an event to the response it is about, store it, and refresh the user's sequence.

The event store (durable, acknowledged after the write) and the push of a clicked item into
the user's online sequence are separate pieces; this module talks to them through two small
protocols, ``EventSink`` and ``SequencePush``, so either can be swapped or left out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from mirec.errors import FeatureLookupError
from mirec.schema import EVENT_IMPRESSION
from mirec.serving.events import FeedbackEvent
from mirec.serving.lookup import ResilientHistories
from mirec.serving.model import ServingModel
from mirec.serving.requests_log import RequestLog, ServedRequest
from mirec.serving.schemas import FeedbackRequest, FeedbackResponse, RequestError

log = logging.getLogger(__name__)


class EventSink(Protocol):
    """The durable event store: ``append`` returns only after the events are written."""

    def append(self, events: Sequence[FeedbackEvent]) -> object:
        """Write events durably."""
        ...


class SequencePush(Protocol):
    """Appends a clicked item to the user's online sequence."""

    def push_click(self, user_id: str, item_id: str, at: datetime) -> None:
        """Push the click; raises FeatureLookupError when the store refuses it."""
        ...

    def push_clicks(self, clicks: Sequence[tuple[str, str, datetime]]) -> list[str | None]:
        """Push ``(user, item, at)`` clicks together; per click None or why it was not pushed."""
        ...


@dataclass
class _Click:
    user_id: str
    item_id: str
    at: datetime
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None


_STOP = object()


class FeastClickPush:
    """The feature store's push of fresh clicks (``mirec.features.push.FreshHistories``).

    Concurrent ``push_click`` calls share one push: a background thread takes every waiting
    click (up to ``max_batch``), pushes them with one ``push_clicks`` (one read of the items,
    one of the users, one write of the changed rows; no pandas) and releases their callers. A caller
    returns only once its click is in the online history, as with a push of its own; clicks
    that arrive while a push runs go into the next one.

    Args:
        repo: the rendered Feast repository serving reads.
        max_batch: the most clicks one push takes.
        timeout_s: how long a caller waits for its push before giving up (FeatureLookupError).
    """

    def __init__(self, repo: str | Path, max_batch: int = 4096, timeout_s: float = 30.0) -> None:
        from mirec.features.push import FreshHistories

        self.fresh = FreshHistories.from_repo(repo)
        self.max_batch = max_batch
        self.timeout_s = timeout_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="feedback-push", daemon=True)
        self._thread.start()

    def push_click(self, user_id: str, item_id: str, at: datetime) -> None:
        """Push one click (with whatever else is waiting); returns once it is pushed.

        Raises:
            FeatureLookupError: the item has no index online, the push failed or timed out.
        """
        (error,) = self.push_clicks([(user_id, item_id, at)])
        if error is not None:
            raise FeatureLookupError(error)

    def push_clicks(self, clicks: Sequence[tuple[str, str, datetime]]) -> list[str | None]:
        """Push several clicks (with whatever else is waiting); returns once all are pushed.

        Returns:
            per click, None when it is in the online history, else why it is not (no index
            online for the item, the push failed, or it timed out).
        """
        waiting = [_Click(user, item, at) for user, item, at in clicks]
        for click in waiting:
            self._queue.put(click)
        deadline = time.monotonic() + self.timeout_s
        errors: list[str | None] = []
        for click in waiting:
            if not click.done.wait(max(0.0, deadline - time.monotonic())):
                errors.append(f"click of {click.item_id!r} not pushed in {self.timeout_s} s")
            else:
                errors.append(None if click.error is None else str(click.error))
        return errors

    def close(self) -> None:
        """Push what is queued, then stop the thread."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            group = [first]
            while len(group) < self.max_batch:
                try:
                    click = self._queue.get_nowait()
                except queue.Empty:
                    break
                if click is _STOP:
                    self._push(group)
                    return
                group.append(click)
            self._push(group)

    def _push(self, group: list[_Click]) -> None:
        clicks = [(c.user_id, c.item_id, c.at) for c in group]
        unknown: set[str] = set()
        failed: BaseException | None = None
        try:
            unknown = set(self.fresh.push_click_rows(clicks).unknown_items)
        except Exception as exc:  # every caller of the group gets the error
            failed = exc if isinstance(exc, FeatureLookupError) else FeatureLookupError(str(exc))
        for click in group:
            if failed is not None:
                click.error = failed
            elif click.item_id in unknown:
                click.error = FeatureLookupError(
                    f"item {click.item_id!r} has no index in the online store"
                )
            click.done.set()


def _at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def impressions(served: ServedRequest) -> list[FeedbackEvent]:
    """One impression event per served item, with its position."""
    return [
        FeedbackEvent(
            event_id=f"{served.request_id}:{pos}:{EVENT_IMPRESSION}",
            user_id=served.user_id,
            item_id=item,
            event_type=EVENT_IMPRESSION,
            event_ts=_at(served.served_at),
            request_id=served.request_id,
            model_version=served.model_version,
            variant=served.variant,
            position=pos,
        )
        for pos, item in enumerate(served.items)
    ]


class FeedbackHandler:
    """Records feedback on served requests, one event or a batch at a time.

    Args:
        requests: this process's served requests; a request id it does not hold is looked up
            in the event store's impressions (feedback on an unknown request id is refused).
        model: the model that served them (maps item ids to indices).
        histories: the user lookup; a click extends the cached sequence too.
        sink: the event store, or None.
        push: the online-sequence push, or None.
        max_batch: the most events one ``record_many`` takes.
    """

    def __init__(
        self,
        requests: RequestLog,
        model: ServingModel,
        histories: ResilientHistories,
        sink: EventSink | None = None,
        push: SequencePush | None = None,
        max_batch: int = 500,
    ) -> None:
        self.requests = requests
        self.model = model
        self.histories = histories
        self.sink = sink
        self.push = push
        self.max_batch = max_batch

    def record(self, req: FeedbackRequest) -> FeedbackResponse:
        """Store the event and push the user's new sequence.

        Raises:
            RequestError: unknown request id (404) or an item that response did not hold (400).
        """
        return self._record([self._event(req, self._served(req.request_id))])[0]

    def record_many(self, reqs: Sequence[FeedbackRequest]) -> list[FeedbackResponse]:
        """Store a batch of events in one durable append and push its clicks in one push.

        All or nothing: every event is checked before any is stored, and an invalid one
        refuses the batch, naming its position.

        Raises:
            RequestError: more than ``max_batch`` events (413), or ``events[i]`` names an
                unknown request id (404) or an item its response did not hold (400).
        """
        if len(reqs) > self.max_batch:
            raise RequestError(
                f"events holds {len(reqs)} events; at most {self.max_batch} per request",
                status=413,
            )
        answers: dict[str, ServedRequest | None] = {}  # each request id looked up once
        events = []
        for i, req in enumerate(reqs):
            if req.request_id not in answers:
                answers[req.request_id] = self._served(req.request_id)
            try:
                events.append(self._event(req, answers[req.request_id]))
            except RequestError as exc:
                raise RequestError(f"events[{i}]: {exc}", status=exc.status) from exc
        return self._record(events)

    def _served(self, request_id: str) -> ServedRequest | None:
        """The answer ``request_id`` names: this process's, else the event store's."""
        return self.requests.get(request_id) or self._stored(request_id)

    def _event(
        self, req: FeedbackRequest, served: ServedRequest | None
    ) -> tuple[ServedRequest, FeedbackEvent]:
        """The stored form of ``req``, tied to ``served``, the response it is about."""
        if served is None:
            raise RequestError(f"unknown request_id {req.request_id!r}", status=404)
        position = served.position(req.item_id)
        if position < 0:
            raise RequestError(
                f"item_id {req.item_id!r} was not in the response to request {req.request_id}"
            )
        event = FeedbackEvent(
            event_id=f"{served.request_id}:{req.item_id}:{req.event}",
            user_id=served.user_id,
            item_id=req.item_id,
            event_type=req.event,
            event_ts=datetime.now(UTC),
            request_id=served.request_id,
            model_version=served.model_version,
            variant=served.variant,
            position=position,
        )
        return served, event

    def _record(self, events: list[tuple[ServedRequest, FeedbackEvent]]) -> list[FeedbackResponse]:
        """Append the events durably, then extend their users' sequences (cache and online)."""
        stored = [event for _, event in events]
        if self.sink is not None:
            self.sink.append(stored)
        pushed = self._extend_sequences(stored)
        return [
            FeedbackResponse(
                request_id=served.request_id,
                user_id=served.user_id,
                item_id=event.item_id,
                event=event.event_type,
                position=event.position,
                model_version=served.model_version,
                pushed=ok,
            )
            for (served, event), ok in zip(events, pushed, strict=True)
        ]

    def _stored(self, request_id: str) -> ServedRequest | None:
        """An answer of another serving process (or of this one before a restart), from the
        impressions the event store holds; None without a store that can look them up."""
        lookup = getattr(self.sink, "served_request", None)
        return None if lookup is None else lookup(request_id)

    def _extend_sequences(self, events: list[FeedbackEvent]) -> list[bool]:
        """Append each event's item to its user's cached and online sequence, in order;
        per event whether the online push took it."""
        indices = self.model.encode([event.item_id for event in events])
        for event, idx in zip(events, indices.tolist(), strict=True):
            current = self.histories.cached(event.user_id) or []
            self.histories.remember(event.user_id, (current + [idx])[-self.model.max_len :])
        if self.push is None:
            return [False] * len(events)
        clicks = [(e.user_id, e.item_id, e.event_ts) for e in events]
        errors = self.push.push_clicks(clicks)
        for event, error in zip(events, errors, strict=True):
            if error is not None:
                log.error(
                    "click of %s by %s not pushed online: %s", event.item_id, event.user_id, error
                )
        return [error is None for error in errors]
