"""Request and response models of the entry service, and the request error with its status.

pydantic checks presence and types (a missing field or a string for ``k`` is a 400 naming the
field); ``check_recommend`` checks what depends on the served model and the settings.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mirec.errors import MirecError
from mirec.serving.settings import ServingSettings

FeedbackKind = Literal["click", "interaction"]  # behaviour events: both extend the sequence
# Where the candidates of a response came from.
SOURCE_MODEL, SOURCE_CACHED, SOURCE_COLD_START, SOURCE_POPULARITY = (
    "model",
    "cached_sequence",
    "cold_start",
    "popularity",
)


class RequestError(MirecError):
    """A request the service refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RecommendRequest(_Strict):
    """``POST /recommend``."""

    user_id: str = Field(min_length=1, max_length=256)
    k: int = 20
    exclude: list[str] = Field(default_factory=list)
    context: dict[str, Any] | None = None


class RecommendResponse(BaseModel):
    """Items best first, their scores, and what produced them."""

    items: list[str]
    scores: list[float]
    model_version: str
    request_id: str
    degraded: bool = False
    source: str = SOURCE_MODEL
    variant: str = "production"


class FeedbackRequest(_Strict):
    """``POST /feedback``: an event on an item of an earlier response."""

    request_id: str = Field(min_length=1, max_length=64)
    item_id: str = Field(min_length=1, max_length=256)
    event: FeedbackKind = "click"


class FeedbackResponse(BaseModel):
    """What the feedback was recorded as."""

    request_id: str
    user_id: str
    item_id: str
    event: str
    position: int
    model_version: str
    pushed: bool


class FeedbackBatchRequest(_Strict):
    """``POST /feedback/batch``: events on items of earlier responses, stored in one write.

    A client that buffers its users' clicks (a page's beacon queue, a mobile app's outbox)
    sends them together: one request, one durable append, one online push. The batch is
    atomic: an invalid event refuses the whole request and nothing of it is stored.
    """

    events: list[FeedbackRequest] = Field(min_length=1)


class FeedbackBatchResponse(BaseModel):
    """What each event of the batch was recorded as, in request order."""

    events: list[FeedbackResponse]


class ItemIn(_Strict):
    """One item of ``POST /items``: its id and, for a new item, items it resembles."""

    item_id: str = Field(min_length=1, max_length=256)
    similar_to: list[str] = Field(default_factory=list, max_length=100)
    attributes: list[str] = Field(default_factory=list, max_length=64)


class ItemsResponse(BaseModel):
    """Which items were added to the index and which existing ones were updated."""

    added: list[str]
    updated: list[str]
    num_items: int


def check_recommend(req: RecommendRequest, settings: ServingSettings) -> None:
    """Refuse a request whose ``k`` or ``exclude`` breaks the limits (400 naming the field)."""
    if req.k <= 0:
        raise RequestError(f"k must be a positive integer, got {req.k}")
    if req.k > settings.max_k:
        raise RequestError(f"k must be at most {settings.max_k}, got {req.k}")
    if len(req.exclude) > settings.max_exclude:
        raise RequestError(
            f"exclude holds {len(req.exclude)} ids; at most {settings.max_exclude} are allowed"
        )
