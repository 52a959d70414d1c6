"""The retraining pipeline's library side: the steps the Kubeflow components call, and the runner.

Steps (``data``, ``model``, ``io``, ``summary``, ``demo``) hold the logic, testable without KFP.
The runner is split by concern: ``arguments`` (KFP parameters), ``cron`` (schedules), ``local``
(``kfp.local`` runs) and ``remote`` (submit and schedule on a cluster). The pipeline definition
and its compiler live in the top-level ``pipelines`` package (an adapter); nothing here imports it.
"""
