"""The store's errors: what a database problem says to the user, in one line."""

from __future__ import annotations


class StoreError(RuntimeError):
    """A database problem, described in one line for the user."""


class StoreBusy(StoreError):
    """Another process held the file past the timeout (or, on a lake, kept winning the commit)."""


def _first_line(message: str) -> str:
    from pipelines.lake import redact_conninfo

    return redact_conninfo(" ".join(message.strip().splitlines()[0].split()) if message.strip() else message)
