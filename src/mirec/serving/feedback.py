"""Feedback: tie an event to the response it is about, store it, and refresh the user's sequence.

The event store (durable, acknowledged after the write) and the push of a clicked item into
the user's online sequence are separate pieces; this module talks to them through two small
protocols, ``EventSink`` and ``SequencePush``, so either can be swapped or left out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from mirec.errors import FeatureLookupError
from mirec.schema import EVENT_IMPRESSION, EVENT_TS, ITEM_ID, USER_ID
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


class FeastClickPush:
    """The feature store's push of fresh clicks (``mirec.features.push.FreshHistories``)."""

    def __init__(self, repo: str | Path) -> None:
        from mirec.features.push import FreshHistories

        self.fresh = FreshHistories.from_repo(repo)

    def push_click(self, user_id: str, item_id: str, at: datetime) -> None:
        """Push one click through the Feast push source."""
        import pandas as pd

        clicks = pd.DataFrame({USER_ID: [user_id], ITEM_ID: [item_id], EVENT_TS: [at]})
        report = self.fresh.push_clicks(clicks)
        if report.unknown_items:
            raise FeatureLookupError(f"item {item_id!r} has no index in the online store")


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
    """Records feedback on served requests.

    Args:
        requests: this process's served requests; a request id it does not hold is looked up
            in the event store's impressions (feedback on an unknown request id is refused).
        model: the model that served them (maps item ids to indices).
        histories: the user lookup; a click extends the cached sequence too.
        sink: the event store, or None.
        push: the online-sequence push, or None.
    """

    def __init__(
        self,
        requests: RequestLog,
        model: ServingModel,
        histories: ResilientHistories,
        sink: EventSink | None = None,
        push: SequencePush | None = None,
    ) -> None:
        self.requests = requests
        self.model = model
        self.histories = histories
        self.sink = sink
        self.push = push

    def record(self, req: FeedbackRequest) -> FeedbackResponse:
        """Store the event and, for a click, push the user's new sequence.

        Raises:
            RequestError: unknown request id (404) or an item that response did not hold (400).
        """
        served = self.requests.get(req.request_id) or self._stored(req.request_id)
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
        if self.sink is not None:
            self.sink.append([event])
        pushed = self._extend_sequence(served, req.item_id, event.event_ts)
        return FeedbackResponse(
            request_id=served.request_id,
            user_id=served.user_id,
            item_id=req.item_id,
            event=req.event,
            position=position,
            model_version=served.model_version,
            pushed=pushed,
        )

    def _stored(self, request_id: str) -> ServedRequest | None:
        """An answer of another serving process (or of this one before a restart), from the
        impressions the event store holds; None without a store that can look them up."""
        lookup = getattr(self.sink, "served_request", None)
        return None if lookup is None else lookup(request_id)

    def _extend_sequence(self, served: ServedRequest, item_id: str, at: datetime) -> bool:
        idx = int(self.model.encode([item_id])[0])
        current = self.histories.cached(served.user_id) or []
        self.histories.remember(served.user_id, (current + [idx])[-self.model.max_len :])
        if self.push is None:
            return False
        try:
            self.push.push_click(served.user_id, item_id, at)
        except FeatureLookupError as exc:
            log.error("click of %s by %s not pushed online: %s", item_id, served.user_id, exc)
            return False
        return True
