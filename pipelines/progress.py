"""The progress bar on stderr: steps done / expected, LLM calls, tokens."""

from __future__ import annotations

import threading

from pipelines.summarize.common import Progress


class RunProgress:
    def __init__(self, enabled: bool = True, label: str = "summarizing"):
        self.enabled = enabled
        self.label = label
        self.calls = 0
        self.cached = 0
        self.tokens_in = 0
        self.tokens_out = 0
        self._total = 0
        self._lock = threading.Lock()
        self._bar = None
        self._task = None
        self.callbacks = Progress(on_expect=self._expect, on_step=self._step)

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, TimeElapsedColumn

            console = Console(stderr=True)
            self._bar = Bar(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[stats]}"),
                TimeElapsedColumn(), console=console, transient=False, disable=not console.is_terminal,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task(self.label, total=None, stats=self._stats())
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def _stats(self) -> str:
        return f"calls {self.calls} (cached {self.cached})  tokens {self.tokens_in:,} in / {self.tokens_out:,} out"

    def _update(self, **kwargs) -> None:
        if self._bar is not None:
            self._bar.update(self._task, stats=self._stats(), **kwargs)

    def _expect(self, steps: int) -> None:
        with self._lock:
            self._total += steps
            self._update(total=self._total)

    def _step(self, what: str) -> None:
        with self._lock:
            self._update(advance=1)

    def on_call(self, result) -> None:
        with self._lock:
            if result.cached:
                self.cached += 1
            else:
                self.calls += 1
                self.tokens_in += result.completion.input_tokens
                self.tokens_out += result.completion.output_tokens
            self._update()
