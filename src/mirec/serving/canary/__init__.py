"""The canary: sticky split, production and canary side by side, the CTR test and the policy.

- ``split``: per-user arm by a salted hash against the weight (persisted with its salt).
- ``sequential``: mSPRT with always-valid p-values; Wilson intervals.
- ``tracker``: impressions and clicks per arm over time, from the durable event store.
- ``policy``: promote / hold / rollback from guardrails, minimum impressions and the test.
- ``router``: the entry service's ``VariantRouter``, swapped atomically, with failover.
- ``controller``: keeps the router in step with the registry; admin actions; the schedule.
- ``report``: the status for ``/admin/status``, ``/ui`` and ``mirec canary status``.
"""
