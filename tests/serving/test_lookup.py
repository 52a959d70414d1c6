"""ResilientHistories: the cache answers while the store is down, and one request probes it."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from mirec.errors import FeatureLookupError
from mirec.serving.lookup import ResilientHistories


class FlakyStore:
    """A history source that fails while ``down`` and can hold a call until released."""

    def __init__(self) -> None:
        self.down = False
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def histories(self, user_ids: Sequence[str]) -> dict[str, list[int] | None]:
        self.calls += 1
        self.entered.set()
        self.release.wait(10)
        if self.down:
            raise FeatureLookupError("connection refused")
        return {u: [1, 2, 3] if u == "warm" else None for u in user_ids}


def test_down_store_answers_from_the_cache_then_recovers() -> None:
    store = FlakyStore()
    histories = ResilientHistories(store, retry_s=0.0)
    assert histories.lookup(["warm"])["warm"].history == [1, 2, 3]
    store.down = True
    got = histories.lookup(["warm", "cold"])
    assert got["warm"].degraded and got["warm"].cached and got["warm"].history == [1, 2, 3]
    assert got["cold"].degraded and got["cold"].history is None
    store.down = False
    back = histories.lookup(["warm"])["warm"]
    assert not back.degraded and histories.failures == 0


def test_only_one_request_probes_a_down_store() -> None:
    store = FlakyStore()
    histories = ResilientHistories(store, retry_s=0.0)
    histories.lookup(["warm"])
    store.down = True
    histories.lookup(["warm"])  # the failure: the store is down from now on
    calls = store.calls
    store.release.clear()
    store.entered.clear()
    prober = threading.Thread(target=histories.lookup, args=(["warm"],))
    prober.start()
    assert store.entered.wait(5)  # the probe is inside the store, blocked
    meanwhile = histories.lookup(["warm"])["warm"]
    store.release.set()
    prober.join(5)
    assert meanwhile.degraded and meanwhile.cached  # answered without waiting on the probe
    assert store.calls == calls + 1
