"""The admin surface's rules: the token, and the body of ``POST /admin/canary``.

The token comes from ``$MIREC_ADMIN_TOKEN``, or from the file named by
``$MIREC_ADMIN_TOKEN_FILE`` (its first line). A request must send it as
``Authorization: Bearer <token>`` (or ``X-Admin-Token``): without one it is refused with 401,
with a wrong one with 403. With no token configured every admin action is refused (403), so a
server never runs with open admin endpoints by accident.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mirec.errors import ConfigError
from mirec.serving.canary.split import check_weight
from mirec.serving.schemas import RequestError

TOKEN_ENV = "MIREC_ADMIN_TOKEN"
TOKEN_FILE_ENV = "MIREC_ADMIN_TOKEN_FILE"


def admin_token(env: Mapping[str, str] | None = None) -> str | None:
    """The configured token (environment first, then the token file), or None.

    Raises:
        ConfigError: the token file is named but unreadable or empty.
    """
    env = os.environ if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    path = env.get(TOKEN_FILE_ENV)
    if not path:
        return None
    try:
        token = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"{TOKEN_FILE_ENV}={path}: cannot read the admin token: {exc}") from exc
    if not token or not token[0].strip():
        raise ConfigError(f"{TOKEN_FILE_ENV}={path}: the file holds no token")
    return token[0].strip()


def presented_token(headers: Mapping[str, str]) -> str | None:
    """The token a request carries (``Authorization: Bearer`` or ``X-Admin-Token``)."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return headers.get("x-admin-token") or None


def check_admin(headers: Mapping[str, str], expected: str | None) -> None:
    """Refuse a request without the admin token (401) or with a wrong one (403)."""
    given = presented_token(headers)
    if given is None:
        raise RequestError("admin token required: send 'Authorization: Bearer <token>'", 401)
    if expected is None:
        raise RequestError(f"admin actions are disabled: set ${TOKEN_ENV} on the server", 403)
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise RequestError("wrong admin token", 403)


def weight_from_body(body: Any) -> float:
    """The ``weight`` of ``POST /admin/canary``; 400 naming the problem otherwise."""
    if not isinstance(body, dict) or "weight" not in body:
        raise RequestError('body must be a JSON object {"weight": <number in [0, 1]>}')
    extra = sorted(set(body) - {"weight"})
    if extra:
        raise RequestError(f"unknown fields {extra}; only 'weight' is accepted")
    try:
        return check_weight(body["weight"])
    except ConfigError as exc:
        raise RequestError(str(exc)) from exc
