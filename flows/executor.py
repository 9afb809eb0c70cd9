"""The flows' executor: each step of a workflow's round is a Prefect task.

The library's workflows hand rounds of independent steps to an executor
(`pipelines.summarize.executors`); this one submits each as `step_task` to
the flow's task runner (threads, or Dask), at most `width` at a time and
within the API's global concurrency limit, and journals every call the
steps made in the flow's store as each step finishes.
"""

from __future__ import annotations

from typing import Callable, Sequence

from flows.limits import api_slots
from flows.tasks import StepFailed, step_task
from pipelines.runner import RunConfig
from pipelines.store import Store, record_calls


class PrefectExecutor:
    def __init__(self, runner, store: Store, run_id: str, config: RunConfig, replay: dict, limit: str | None,
                 width: int):
        self.runner = runner  # a started Prefect task runner
        self.store = store
        self.run_id = run_id
        self.config = config
        self.replay = replay  # request_hash -> CallRecord: earlier answers the steps may replay
        self.limit = limit
        self.width = max(1, width)

    def map(self, step: Callable, calls: Sequence[tuple]) -> list:
        recipe, method = step.__self__.recipe(), step.__name__
        with api_slots(self.limit, min(self.width, len(calls))) as width:
            futures = submit_bounded(self.runner, step_task, [
                dict(recipe=recipe, method=method, args=args, step=_describe(method, args),
                     config=self.config, run_id=self.run_id, replay=self.replay)
                for args in calls
            ], width)
            results, errors = [], []
            for future in futures:
                try:
                    outcome = future.result()
                except StepFailed as exc:
                    record_calls(self.store, self.run_id, exc.calls)
                    errors.append(exc)
                except Exception as exc:  # noqa: BLE001 - a lost worker: raised below, after the others
                    errors.append(exc)
                else:
                    record_calls(self.store, self.run_id, outcome.calls)
                    results.append(outcome.value)
        if errors:
            raise errors[0]
        return results


def submit_bounded(runner, task, parameters: list[dict], width: int) -> list:
    """The task with each set of parameters on the runner, never more than `width` running at once."""
    futures: list = []
    for params in parameters:
        if len(futures) >= width:
            futures[-width].wait()  # with every earlier one waited on before: at most width-1 still running
        futures.append(runner.submit(task, params))
    return futures


def _describe(method: str, args: tuple) -> str:
    """A task run's name: the step and its chunk, or its level and position."""
    from pipelines.chunking import Chunk

    chunk = next((a for a in args if isinstance(a, Chunk)), None)
    if chunk is not None:
        return f"{method} chunk {chunk.idx}"
    numbers = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    return f"{method} level {numbers[0]} #{numbers[1]}" if len(numbers) >= 2 else method
