"""mirec: multi-interest, multi-tower candidate retrieval."""

__version__ = "0.1.0"
