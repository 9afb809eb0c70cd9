"""Executors: who runs a workflow's independent steps.

A workflow (hierarchical merging, incremental updating, chunk compression)
is written once, in the library. Wherever it has a round of steps that do not
depend on each other (the chunk summaries of a level, the compressions of a
document's chunks) it hands them to an executor as one `map` call; a step
that depends on the one before is a round of one. A step is a method of a
*step owner* (a summarizer, a chunk compressor) called with picklable
arguments and returning a picklable result.

* `ThreadExecutor` runs the owner's method in a thread pool of this process;
  the owner's RecordingLLM journals every call as it returns.
* The flows supply an executor that runs each step as a Prefect task
  (`flows/executor.py`), which Prefect may place on Dask: the worker rebuilds
  the owner from `owner.recipe()` around an LLM of its own.

Both drive a round with `run_round`, each supplying only how a step starts
(a thread pool's `submit`, a task runner's) and, for the flows, what is done
with a finished one. `completions` is the driver beneath it, and beneath the
evaluation harness's documents x configurations too (`pipelines.evaluate`):
at most `width` started and unfinished, each completion starting the next at
once.

The same inputs give the same results on every executor: the owners' step
methods are the only code that runs a step.
"""

from __future__ import annotations

import queue
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Recipe:
    """How to rebuild a step owner around another LLM: `factory(llm, **options)`.
    `factory` is a module-level class or function, so a recipe pickles."""

    factory: Callable[..., Any]
    options: dict


class Executor(Protocol):
    def map(self, step: Callable, calls: Sequence[tuple]) -> list:
        """`step(*args)` for each args in calls (a bound method of a step owner),
        results in the order of `calls`. Raises the first failure, after every
        step of the round has finished."""


def call(executor: Executor, step: Callable, *args):
    """One dependent step: a round of one."""
    return executor.map(step, [args])[0]


class ThreadExecutor:
    """Steps of a round run in up to `width` threads of this process."""

    def __init__(self, width: int = 1):
        self.width = max(1, width)

    def map(self, step: Callable, calls: Sequence[tuple]) -> list:
        workers = min(self.width, len(calls))
        if workers <= 1:
            return [step(*args) for args in calls]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="longsum-step") as pool:
            return run_round(lambda args: pool.submit(step, *args), calls, workers)


def run_round(start: Callable[[tuple], Future], calls: Sequence[tuple], width: int,
              finish: Callable[[Future], Any] | None = None) -> list:
    """`start(args)` for each args in calls, at most `width` unfinished at once;
    `finish(future)` of each as it completes (in the caller's thread) gives its
    result (default: the future's result). Results in the order of `calls`;
    the first failure (in that order) is raised once every step has finished."""
    results: list = [None] * len(calls)
    errors: dict[int, Exception] = {}
    for n, future in completions(range(len(calls)), lambda n: start(calls[n]), width):
        try:
            results[n] = finish(future) if finish else future.result()
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others finished
            errors[n] = exc
    if errors:
        raise errors[min(errors)]
    return results


def completions(items: Iterable[T], start: Callable[[T], Future], width: int) -> Iterator[tuple[T, Future]]:
    """Yield (item, its finished future) as each completes, never more than
    `width` started and unfinished; each completion starts the next item at
    once (once the consumer has taken it). `start` returns a future at once;
    any future with `add_done_callback` does (concurrent, Prefect, Dask)."""
    finished: queue.SimpleQueue = queue.SimpleQueue()
    waiting = iter(items)
    running = 0

    def start_next() -> bool:
        for item in waiting:
            future = start(item)
            future.add_done_callback(lambda done, item=item: finished.put((item, done)))
            return True
        return False

    while running < max(1, width) and start_next():
        running += 1
    while running:
        item, future = finished.get()
        running -= 1
        yield item, future
        if start_next():
            running += 1
