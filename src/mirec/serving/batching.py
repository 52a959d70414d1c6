"""Adaptive batching of concurrent requests into one call, on one worker thread.

While a batch runs, new requests queue; when it finishes, everything queued (up to
``max_batch``) becomes the next batch. A lone request never waits for company (no timer), and
under load the lookup, tower forward and faiss search are paid once per batch.

With ``inline_when_idle``, a request that finds nothing running and nobody else queued is
served on the event loop's own thread: handing one request to the worker thread and back costs two
thread wake-ups, which on busy cores were ~1-2 ms of a ~4 ms request (docs/serving.md). The
loop is blocked for that one request's work (~1-2 ms); whatever arrives meanwhile waits in
the socket buffers and goes through the worker thread as usual. Leave it off when ``fn``
itself waits on the event loop (the composed service calls its dependencies there).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    """Runs ``fn(list of inputs) -> list of outputs`` over whatever is queued.

    Args:
        fn: the batch function (outputs in input order); it runs on one worker thread.
        max_batch: the most inputs per call.
        inline_when_idle: run a lone request's call on the event loop's thread (see above).
    """

    def __init__(
        self,
        fn: Callable[[Sequence[T]], Sequence[R]],
        max_batch: int = 64,
        inline_when_idle: bool = False,
    ) -> None:
        self.fn = fn
        self.max_batch = max_batch
        self.inline_when_idle = inline_when_idle
        self.inline = 0  # calls served on the loop's thread
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mirec-batch")
        self.batches = 0
        self.items = 0
        self.loop: asyncio.AbstractEventLoop | None = None  # where ``submit`` runs

    async def submit(self, item: T) -> R:
        """Queue one input and wait for its output (exceptions of ``fn`` are re-raised)."""
        loop = self.loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, future))
        if not self._running:
            self._running = True
            loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # This task starts one loop iteration after the first submit, when every request that
        # was ready at the same time has queued too: a queue of one is a lone request.
        loop = asyncio.get_running_loop()
        lone = self.inline_when_idle and len(self._queue) == 1
        try:
            while self._queue:
                group, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self.batches += 1
                self.items += len(group)
                inputs = [g[0] for g in group]
                try:
                    if lone:  # nothing else runs on the loop until fn returns
                        lone = False
                        self.inline += 1
                        outs = self.fn(inputs)
                    else:
                        outs = await loop.run_in_executor(self._executor, self.fn, inputs)
                except Exception as exc:  # every waiter of the batch gets the error
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), out in zip(group, outs, strict=True):
                    if not future.done():
                        future.set_result(out)
        finally:
            self._running = False

    def close(self) -> None:
        """Stop the worker thread."""
        self._executor.shutdown(wait=False)
