"""What every service shares: the model it serves, HTTP errors, the body limit, metrics.

The model is the registered bundle named by ``$MIREC_MODEL_TAG``, or the registry's production
version (``$MIREC_REGISTRY``); ``bentoml build`` records that tag in the Bento. The feature
repository is the one in the model's lineage unless ``$MIREC_FEATURE_REPO`` names another.
With ``$MIREC_EVENT_STORE`` set, events are written through a ``GroupCommitWriter``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from http import HTTPStatus
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException

from mirec.registry import BUNDLE_DIR, METADATA_KEY, PRODUCTION, ModelVersion, Registry
from mirec.serving.app import ServingApp
from mirec.serving.model import load_bundle, version_label
from mirec.serving.schemas import RequestError
from mirec.serving.settings import ServingSettings

TAG_ENV = "MIREC_MODEL_TAG"
EVENTS_ENV = "MIREC_EVENT_STORE"  # the event store URL (a file path, sqlite:/// or postgresql://)
MAX_K_ENV = "MIREC_MAX_K"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def model_tag() -> str:
    """The tag to serve: ``$MIREC_MODEL_TAG`` or the registry's production version."""
    tag = os.environ.get(TAG_ENV)
    if tag:
        return tag
    entry = Registry().stage(PRODUCTION)
    if entry is None:
        raise RuntimeError("no production model in the registry and no $MIREC_MODEL_TAG")
    return entry.tag


def settings() -> ServingSettings:
    """Serving settings (``$MIREC_MAX_K`` overrides the largest k)."""
    max_k = os.environ.get(MAX_K_ENV)
    return ServingSettings(max_k=int(max_k)) if max_k else ServingSettings()


def load_app(model: bentoml.Model) -> ServingApp:
    """The serving app of a registered bundle (a BentoML model of the registry)."""
    record = ModelVersion.from_dict(json.loads(str(model.info.metadata[METADATA_KEY])))
    served = load_bundle(
        model.path_of(BUNDLE_DIR),
        version_label(record),
        tag=str(model.tag),
        feature_repo=str(record.lineage.get("feature_repo", "")),
    )
    sink = None
    if os.environ.get(EVENTS_ENV):
        from mirec.serving.events import GroupCommitWriter, open_event_store

        # concurrent /feedback (and impression) writes share one fsync'd transaction; each
        # call still returns only after its own events are committed
        sink = GroupCommitWriter(open_event_store(os.environ[EVENTS_ENV]))
    return ServingApp.for_model(served, settings=settings(), sink=sink)


def http_error(exc: RequestError) -> BentoMLException:
    """A refused request as the BentoML error that answers with its status and message."""
    return BentoMLException(str(exc), error_code=HTTPStatus(exc.status))


class BodyLimit:
    """ASGI middleware: a request body above ``max_bytes`` gets 413 with a message."""

    def __init__(self, app: Callable[..., Awaitable[None]], max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = int(headers.get(b"content-length", b"0") or 0)
        if declared > self.max_bytes:
            await self._refuse(send, declared)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise BentoMLException(
                    f"request body over {self.max_bytes} bytes",
                    error_code=HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                )
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send, size: int) -> None:
        body = json.dumps(
            {"error": f"request body of {size} bytes is over the limit of {self.max_bytes}"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
