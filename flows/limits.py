"""The global concurrency limit on API calls, set in one place.

A limit per API backend (`longsum-openai`, `longsum-anthropic`) bounds the
requests of every flow together. It is configured once, by `summarize
limits BACKEND N` or by `summarize serve --api-limit N` (for every API
backend its configurations use); flows only read it and occupy its slots,
never change it: a document task holds its calls' slots, a corpus run in the
flow's process (`--max-cost`) holds its documents' (`held_slots`). Without a
configured limit a flow is bounded by its own `concurrency` alone.
"""

from __future__ import annotations

import contextlib

API_BACKENDS = ("openai", "anthropic")


def limit_name(backend: str) -> str:
    return f"longsum-{backend}"


def set_limit(backend: str, limit: int) -> None:
    from prefect.client.orchestration import get_client

    if backend not in API_BACKENDS:
        raise ValueError(f"limits apply to the API backends ({', '.join(API_BACKENDS)}), not {backend!r}")
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(limit_name(backend), limit)


def read_limits() -> dict[str, int]:
    """backend -> configured limit."""
    from prefect.client.orchestration import get_client

    found = {}
    with get_client(sync_client=True) as client:
        for backend in API_BACKENDS:
            try:
                found[backend] = client.read_global_concurrency_limit_by_name(limit_name(backend)).limit
            except Exception:  # noqa: BLE001 - ObjectNotFound: not configured
                continue
    return found


def configured_limit(backend: str) -> str | None:
    """The name of this backend's limit when one is configured, else None."""
    return limit_name(backend) if backend in read_limits() else None


@contextlib.contextmanager
def api_slots(name: str | None, wanted: int):
    """Hold up to `wanted` slots of the limit while a round of steps runs (one
    acquisition per round, not per call: each is a round trip to the Prefect
    API); yields how many steps may run at once."""
    if not name:
        yield max(1, wanted)
        return
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as client:
        allowed = client.read_global_concurrency_limit_by_name(name).limit
    held = max(1, min(wanted, allowed))
    with concurrency(name, occupy=held):
        yield held


@contextlib.contextmanager
def held_slots(backends, wanted: int):
    """Slots of every configured limit among these API backends, for calls
    made in this process (not in tasks); yields how many calls may be in
    flight at once in all (None: no limit configured)."""
    with contextlib.ExitStack() as stack:
        held = None
        for backend in sorted(set(backends) & set(API_BACKENDS)):
            name = configured_limit(backend)
            if name is not None:
                got = stack.enter_context(api_slots(name, wanted))
                held = got if held is None else min(held, got)
        yield held
