"""The flows' executor: each step of a workflow's round is a Prefect task.

The library's workflows hand rounds of independent steps to an executor
(`pipelines.summarize.executors`); this one supplies the library's driver
(`run_round`) with how a step starts: as `step_task` on the flow's task
runner (threads, or Dask), at most `width` at a time and within the API's
global concurrency limit. As each step finishes, every call it made is
journaled in the flow's store (a failed step's calls too).
"""

from __future__ import annotations

from typing import Callable, Sequence

from flows.limits import api_slots
from flows.tasks import StepFailed, step_task
from pipelines.runner import RunConfig
from pipelines.store import Store, record_calls
from pipelines.summarize.executors import run_round


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

        def start(args: tuple):
            return self.runner.submit(step_task, dict(
                recipe=recipe, method=method, args=args, step=_describe(method, args), config=self.config,
                run_id=self.run_id, replay=self.replay))

        with api_slots(self.limit, min(self.width, len(calls))) as width:
            return run_round(start, calls, width, finish=self._journaled)

    def _journaled(self, future):
        """The step's value, its calls journaled first (a failed step's too; a lost worker's are lost)."""
        try:
            outcome = future.result()
        except StepFailed as exc:
            record_calls(self.store, self.run_id, exc.calls)
            raise
        record_calls(self.store, self.run_id, outcome.calls)
        return outcome.value


def _describe(method: str, args: tuple) -> str:
    """A task run's name: the step and its chunk, or its level and position."""
    from pipelines.chunking import Chunk

    chunk = next((a for a in args if isinstance(a, Chunk)), None)
    if chunk is not None:
        return f"{method} chunk {chunk.idx}"
    numbers = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
    return f"{method} level {numbers[0]} #{numbers[1]}" if len(numbers) >= 2 else method
