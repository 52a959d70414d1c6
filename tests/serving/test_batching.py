"""MicroBatcher: queued requests become one call; a lone one can run on the loop's thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest

from mirec.serving.batching import MicroBatcher


class _Recorder:
    """A batch function that remembers each call's inputs and thread, and takes a while."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds
        self.calls: list[tuple[list[int], str]] = []

    def __call__(self, items: Sequence[int]) -> list[int]:
        self.calls.append((list(items), threading.current_thread().name))
        time.sleep(self.seconds)
        if any(i < 0 for i in items):
            raise ValueError("negative input")
        return [i * 10 for i in items]


async def _gather(batcher: MicroBatcher[int, int], items: Sequence[int]) -> list[int]:
    return list(await asyncio.gather(*(batcher.submit(i) for i in items)))


@pytest.mark.parametrize("inline", [False, True])
def test_concurrent_requests_share_calls_and_keep_their_order(inline: bool) -> None:
    fn = _Recorder()
    batcher = MicroBatcher(fn, max_batch=4, inline_when_idle=inline)
    try:
        assert asyncio.run(_gather(batcher, range(9))) == [i * 10 for i in range(9)]
    finally:
        batcher.close()
    sizes = [len(items) for items, _ in fn.calls]
    assert sum(sizes) == 9 and max(sizes) == 4 and len(sizes) < 9
    assert batcher.batches == len(fn.calls) and batcher.items == 9


def test_a_lone_request_runs_on_the_loop_thread_only_when_asked() -> None:
    for inline, expected in ((True, threading.main_thread().name), (False, "mirec-batch")):
        fn = _Recorder(0.0)
        batcher = MicroBatcher(fn, inline_when_idle=inline)
        try:
            assert asyncio.run(_gather(batcher, [3])) == [30]
            assert asyncio.run(_gather(batcher, [4])) == [40]
        finally:
            batcher.close()
        assert [items for items, _ in fn.calls] == [[3], [4]]
        assert all(thread.startswith(expected) for _, thread in fn.calls)
        assert batcher.inline == (2 if inline else 0)


@pytest.mark.parametrize("inline", [False, True])
def test_an_error_reaches_every_waiter_of_its_batch_and_the_next_batch_runs(
    inline: bool,
) -> None:
    fn = _Recorder()
    batcher = MicroBatcher(fn, max_batch=8, inline_when_idle=inline)

    async def scenario() -> tuple[list[object], list[int]]:
        failed = await asyncio.gather(
            *(batcher.submit(i) for i in (1, -1, 2)), return_exceptions=True
        )
        return list(failed), await _gather(batcher, [5, 6])

    try:
        failed, after = asyncio.run(scenario())
    finally:
        batcher.close()
    errors = [r for r in failed if isinstance(r, ValueError)]
    assert errors and len(errors) + sum(1 for r in failed if r in (10, 20)) == 3
    assert after == [50, 60]
