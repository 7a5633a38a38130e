"""Lectr: an AI gateway that observes every request without getting in its way."""

__version__ = "0.1.0"
