"""Where tasks run: threads in the flow process, or an existing Dask cluster."""

from __future__ import annotations


def task_runner_for(dask_address: str | None = None, concurrency: int = 4):
    """`DaskTaskRunner` on the cluster at `dask_address` (tcp://host:port), else a thread pool."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max(1, concurrency))
