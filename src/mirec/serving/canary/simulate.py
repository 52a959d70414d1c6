"""The replay simulator: held-out users drive ``/recommend`` on a running server, clicks follow.

Each replayed user has one held-out next item (protocol B: the user's last event, which the
served features must not hold). The simulator asks the server for ``k`` items for a user; when
the held-out item is among them at position ``p`` it clicks with probability
``(1 + p) ** -position_bias`` (0 = every hit is clicked), through ``/feedback``. It counts what
the server acknowledged (impressions of answered requests, recorded clicks), polls
``/admin/status`` every ``poll_every`` requests, and stops at ``max_requests`` or, with
``stop_on_decision``, once the policy has promoted or rolled back the canary.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import requests

from mirec.errors import ConfigError
from mirec.schema import EVENT_ORDER, ITEM_ID, USER_ID

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Replay:
    """One held-out user and the item they actually took next."""

    user_id: str
    next_item: str


def held_out_next_items(events: pd.DataFrame, min_events: int = 3) -> list[Replay]:
    """Protocol B's test targets: every user's last event (users with >= ``min_events``)."""
    ordered = events.sort_values([USER_ID, *EVENT_ORDER], kind="stable")
    sizes = ordered.groupby(USER_ID, sort=False)[ITEM_ID].transform("size")
    last = ordered[sizes >= min_events].groupby(USER_ID, sort=False).tail(1)
    return [Replay(str(u), str(i)) for u, i in zip(last[USER_ID], last[ITEM_ID], strict=True)]


def without_held_out(events: pd.DataFrame, replays: Sequence[Replay]) -> pd.DataFrame:
    """The events minus each replayed user's held-out last event (what serving may know)."""
    ordered = events.sort_values([USER_ID, *EVENT_ORDER], kind="stable")
    replayed = {r.user_id for r in replays}
    is_last = ~ordered.duplicated(USER_ID, keep="last") & ordered[USER_ID].astype(str).isin(
        replayed
    )
    return ordered[~is_last].reset_index(drop=True)


@dataclass
class SimulationResult:
    """What one simulation did and saw."""

    requests: int = 0
    failed_requests: int = 0
    acked_impressions: int = 0
    acked_clicks: int = 0
    hits: int = 0
    by_variant: dict[str, list[int]] = field(default_factory=dict)  # [impressions, clicks]
    acked_request_ids: list[str] = field(default_factory=list)
    acked_click_ids: list[tuple[str, str]] = field(default_factory=list)
    decision: dict[str, Any] | None = None
    status: dict[str, Any] | None = None
    seconds: float = 0.0


class Simulator:
    """Replays users against ``url``.

    Args:
        url: the entry service, e.g. ``http://127.0.0.1:3000``.
        replays: the held-out users.
        k: items per request.
        position_bias: exponent of the click probability's decay with position.
        seed: the user order and the clicks.
        admin_token: sent with ``/admin/evaluate`` when ``evaluate_every`` is set.
    """

    def __init__(
        self,
        url: str,
        replays: Sequence[Replay],
        k: int = 10,
        position_bias: float = 0.0,
        seed: int = 0,
        admin_token: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        if not replays:
            raise ConfigError("the simulation needs at least one held-out user")
        self.url = url.rstrip("/")
        self.replays = list(replays)
        self.k = k
        self.position_bias = position_bias
        self.rng = np.random.default_rng(seed)
        self.admin_token = admin_token
        self.timeout_s = timeout_s
        self.session = requests.Session()

    def status(self) -> dict[str, Any]:
        """``GET /admin/status``."""
        answer = self.session.get(f"{self.url}/admin/status", timeout=self.timeout_s)
        answer.raise_for_status()
        return dict(answer.json()["status"])

    def step(self, replay: Replay, result: SimulationResult) -> None:
        """One request and, on a hit, maybe a click."""
        result.requests += 1
        try:
            answer = self.session.post(f"{self.url}/recommend", timeout=self.timeout_s,
                                       json={"user_id": replay.user_id, "k": self.k})  # fmt: skip
        except requests.RequestException:
            result.failed_requests += 1
            return
        if answer.status_code != 200:
            result.failed_requests += 1
            return
        body = answer.json()
        arm = result.by_variant.setdefault(body["variant"], [0, 0])
        arm[0] += len(body["items"])
        result.acked_impressions += len(body["items"])
        result.acked_request_ids.append(body["request_id"])
        if replay.next_item not in body["items"]:
            return
        result.hits += 1
        position = body["items"].index(replay.next_item)
        if self.rng.random() >= (1.0 + position) ** -self.position_bias:
            return
        feedback = {"request_id": body["request_id"], "item_id": replay.next_item}
        try:
            ack = self.session.post(f"{self.url}/feedback", json=feedback, timeout=self.timeout_s)
        except requests.RequestException:
            return
        if ack.status_code == 200:
            arm[1] += 1
            result.acked_clicks += 1
            result.acked_click_ids.append((body["request_id"], replay.next_item))

    def run(
        self,
        max_requests: int,
        *,
        stop_on_decision: bool = True,
        poll_every: int = 200,
        on_poll: Callable[[SimulationResult], object] | None = None,
    ) -> SimulationResult:
        """Replay users (shuffled, cycled) until ``max_requests`` or an applied decision."""
        result = SimulationResult()
        start = time.monotonic()
        order = self.rng.permutation(len(self.replays))
        for n in range(max_requests):
            self.step(self.replays[int(order[n % len(order)])], result)
            if (n + 1) % poll_every == 0:
                self._poll(result)
                if on_poll is not None:
                    on_poll(result)
                if stop_on_decision and result.decision and result.decision.get("applied"):
                    break
        result.seconds = time.monotonic() - start
        try:
            self._poll(result)
        except requests.RequestException as exc:
            log.warning("final status unavailable: %s", exc)
        return result

    def _poll(self, result: SimulationResult) -> None:
        status = self.status()
        result.status = status
        decision = status.get("decision")
        if decision and (result.decision is None or not result.decision.get("applied")):
            result.decision = decision
