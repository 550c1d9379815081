"""Archibald reference application: a small job service with a blue/green contract."""

__all__ = ["__version__"]

__version__ = "1.0.0"
