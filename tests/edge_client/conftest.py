"""Fixtures for the edge client tests (defined in tests/client_kit.py)."""

from client_kit import logreg_file, make_aggregator

__all__ = ["logreg_file", "make_aggregator"]
