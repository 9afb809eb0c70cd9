"""The store's errors: what a database problem says to the user, in one line."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A database problem, described in one line for the user."""


class StoreBusy(StoreError):
    """Another process held the file past the timeout (or, on a lake, kept winning the commit)."""
