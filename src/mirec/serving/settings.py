"""Serving limits and behaviour, with defaults in code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class ServingSettings:
    """What the entry service accepts and how it degrades.

    Attributes:
        max_k: the largest ``k`` a request may ask for.
        max_exclude: the most ids a request may exclude.
        max_body_bytes: request bodies above this size are refused (413).
        max_feedback_batch: the most events one ``POST /feedback/batch`` may hold.
        unknown_users: ``"popularity"`` serves a user the online store does not know from the
            cold-start hook or popularity; ``"reject"`` answers 404.
        lookup_retry_s: after a failed online lookup, the store is not asked again for this
            long (requests are served degraded meanwhile); then it is tried again.
        cache_users: how many users' last known sequences are kept for degraded mode.
        remembered_requests: how many served requests are kept to tie feedback to them.
        torch_threads: intra-op threads of the towers (1 is fastest for one request).
        faiss_threads: OpenMP threads of the index search. A serving batch holds a few
            dozen query vectors: with 2 threads on 2 busy cores the threads' start and
            spin-wait cost more than the search (4 vectors: 0.6 ms with 1 thread, 1.4-21 ms
            with 2, docs/serving.md), so the default is 1; a process serves more requests
            with more workers instead.
    """

    max_k: int = 200
    max_exclude: int = 1_000
    max_body_bytes: int = 64 * 1024
    max_feedback_batch: int = 500
    unknown_users: Literal["popularity", "reject"] = "popularity"
    lookup_retry_s: float = 1.0
    cache_users: int = 100_000
    remembered_requests: int = 100_000
    torch_threads: int = 1
    faiss_threads: int = 1
