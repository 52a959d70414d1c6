"""The canary in the entry service: the controller, ``/admin/*`` and the operator page ``/ui``.

``attach_canary`` wraps the service's ``ServingApp`` in a ``CanaryController`` (production and
canary from ``$MIREC_REGISTRY``, counts from the event store, the policy every
``$MIREC_CANARY_INTERVAL_S`` seconds; ``MIREC_CANARY=off`` switches it off). ``mount_canary``
mounts two small ASGI apps on the service:

- ``GET /admin/status``: versions, weight, counts, CTR with bands over time, p-value, decision,
  guardrails, recent events (no token needed to read);
- ``POST /admin/canary {"weight": w}``, ``POST /admin/promote``, ``POST /admin/rollback``,
  ``POST /admin/evaluate``: need the admin token (401 without, 403 wrong);
- ``GET /ui``: the operator page (static HTML + JS shipped in ``mirec.serving.canary``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import bentoml
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mirec.registry import Registry
from mirec.serving.app import ServingApp
from mirec.serving.canary.admin import admin_token, check_admin, weight_from_body
from mirec.serving.canary.controller import CanaryController
from mirec.serving.canary.policy import policy_from_json
from mirec.serving.schemas import RequestError
from serving import canary_metrics

log = logging.getLogger("mirec.serving.canary")
CANARY_ENV = "MIREC_CANARY"  # "off" serves production only
INTERVAL_ENV = "MIREC_CANARY_INTERVAL_S"
POLICY_ENV = "MIREC_CANARY_POLICY"  # JSON overrides of PolicyConfig, e.g. {"min_impressions": 500}
Handler = Callable[[Request], Awaitable[Response]]


def attach_canary(app: ServingApp) -> CanaryController | None:
    """The controller over ``app`` with its schedule started, or None when switched off."""
    if os.environ.get(CANARY_ENV, "on") == "off" or not os.environ.get("MIREC_REGISTRY"):
        return None
    events = app.sink if hasattr(app.sink, "read_events") else None
    if events is None:
        log.warning("no event store: the canary is served, but the policy has no counts")
    ctl = CanaryController(
        app,
        Registry(),
        events,  # type: ignore[arg-type]
        config=policy_from_json(os.environ.get(POLICY_ENV)),
        interval_s=float(os.environ.get(INTERVAL_ENV, "5")),
    )
    admin_token()  # a bad token file fails the start, not the first admin call
    ctl.listeners.append(lambda d: canary_metrics.observe_decision(d, ctl.router.arms.split.weight))
    canary_metrics.observe_decision(None, ctl.router.arms.split.weight)
    ctl.start()
    return ctl


def _controller() -> CanaryController:
    ctl = getattr(bentoml.get_current_service(), "canary", None)
    if ctl is None:
        raise RequestError(f"the canary is off on this server (${CANARY_ENV})", status=409)
    return ctl


def _guarded(action: Callable[[CanaryController, Any], Any], admin: bool = True) -> Handler:
    """A handler: check the token, run ``action`` off the event loop, answer JSON."""

    async def handle(request: Request) -> Response:
        try:
            if admin:
                check_admin(request.headers, admin_token())
            body = await _body(request)
            ctl = _controller()
            result = await run_in_threadpool(action, ctl, body)
            status = await run_in_threadpool(ctl.status)
            canary_metrics.observe_decision(ctl.last_decision, ctl.router.arms.split.weight)
            return JSONResponse({"result": result, "status": status})
        except RequestError as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)

    return handle


async def _body(request: Request) -> Any:
    if request.method != "POST":
        return None
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestError(f"body is not JSON: {exc}") from exc


def _evaluate(ctl: CanaryController, _: Any) -> Any:
    decision = ctl.evaluate("on_demand")
    return None if decision is None else decision.dump()


ADMIN = Starlette(
    routes=[
        Route("/status", _guarded(lambda ctl, _: None, admin=False), methods=["GET"]),
        Route(
            "/canary",
            _guarded(lambda ctl, body: ctl.set_weight(weight_from_body(body)).weight),
            methods=["POST"],
        ),
        Route("/promote", _guarded(lambda ctl, _: ctl.promote()), methods=["POST"]),
        Route("/rollback", _guarded(lambda ctl, _: ctl.rollback()), methods=["POST"]),
        Route("/evaluate", _guarded(_evaluate), methods=["POST"]),
    ]
)


def _asset(name: str, media_type: str) -> Handler:
    async def serve(_: Request) -> Response:
        text = (resources.files("mirec.serving.canary") / "ui" / name).read_text()
        return Response(text, media_type=media_type)

    return serve


UI = Starlette(
    routes=[
        Route("/", _asset("index.html", "text/html"), methods=["GET"]),
        Route("/app.js", _asset("app.js", "text/javascript"), methods=["GET"]),
    ]
)


def mount_canary(service: Any) -> None:
    """Mount ``/admin`` and ``/ui`` on the entry service."""
    service.mount_asgi_app(ADMIN, path="/admin")
    service.mount_asgi_app(UI, path="/ui")
