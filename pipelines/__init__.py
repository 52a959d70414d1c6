"""Kubeflow pipelines of mirec: ``retraining`` (wiring only) and its compiler."""
