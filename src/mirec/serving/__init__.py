"""Serving logic, BentoML-free: model loading, user lookup, towers, retrieval, requests, feedback.

The BentoML services in the top-level ``serving/`` folder are thin adapters over this package;
everything here is plain Python that unit tests call directly.
"""
