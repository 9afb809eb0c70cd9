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

The same inputs give the same results on every executor: the owners' step
methods are the only code that runs a step.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence


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
            futures = [pool.submit(step, *args) for args in calls]
        return gather(futures)


def gather(futures) -> list:
    """Results of finished futures in order; the first failure is raised once all are done."""
    results, errors = [], []
    for future in futures:
        try:
            results.append(future.result())
        except Exception as exc:  # noqa: BLE001 - re-raised below, after the others finished
            errors.append(exc)
    if errors:
        raise errors[0]
    return results
