"""Asking a judge model until its answer parses: the one loop of every LLM-annotated score.

The coherence checker (BooookScore) and the faithfulness checker (claims, verdicts) ask
a model for an answer in a fixed format. A small or busy model sometimes answers in
another one; each checker then asks again, a bounded number of times, with a format
reminder added to the prompt and a new seed (and a higher temperature), so the request
differs from the last one and the call cache cannot replay the same unusable answer.
What failed on each attempt is kept as a note, so an annotation that never parsed says
why in the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

from pipelines.llm.base import LLMError, PromptTooLongError

T = TypeVar("T")
NOTE_CHARS = 500  # notes are kept short: they land in a database column per row


@dataclass(frozen=True)
class RetryPolicy:
    """How often to ask, and how the sampling changes after the first answer."""

    max_attempts: int
    temperature: float = 0.0
    retry_temperature: float = 0.7

    def sampling(self, attempt: int) -> tuple[float, int]:
        """(temperature, seed) of the attempt-th request (0-based)."""
        temperature = self.temperature if attempt == 0 else max(self.temperature, self.retry_temperature)
        return temperature, attempt


@dataclass
class Answer(Generic[T]):
    """What asking produced: the parsed value, or None and the reasons in `notes`."""

    value: T | None = None
    text: str | None = None  # the last answer received
    request_hash: str | None = None
    attempts: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def note(self) -> str | None:
        return "; ".join(self.notes)[:NOTE_CHARS] or None


def reminder(table: Sequence[str], attempt: int) -> str:
    """The format reminder for the attempt-th request: the table's entries, then its last one, numbered."""
    return table[attempt] if attempt < len(table) else f"{table[-1]} (attempt {attempt + 1})"


def ask_until_parsed(
    llm,
    render: Callable[[str], object],
    parse: Callable[[str, object], tuple[T | None, str]],
    *,
    policy: RetryPolicy,
    reminders: Sequence[str],
    max_tokens: int,
    step: str,
    stop: Sequence[str] | None = None,
) -> Answer[T]:
    """Ask `llm` (a RecordingLLM) until `parse(answer_text, prompt)` returns a value.

    `render(reminder_text)` builds the prompt of an attempt; `parse` returns
    (value, "") or (None, why it did not parse). A failed call counts as an
    attempt; a prompt too long for the model ends the asking (another attempt
    would be as long)."""
    answer: Answer[T] = Answer()
    for attempt in range(policy.max_attempts):
        answer.attempts = attempt + 1
        prompt = render(reminder(reminders, attempt))
        temperature, seed = policy.sampling(attempt)
        try:
            result = llm.complete(prompt, max_tokens, temperature=temperature, seed=seed,
                                  step=f"{step}#{attempt + 1}", stop=stop)
        except PromptTooLongError as exc:
            answer.notes.append(f"prompt too long: {exc}")
            break
        except LLMError as exc:
            answer.notes.append(f"#{attempt + 1}: {exc}")
            continue
        answer.text, answer.request_hash = result.text, result.request_hash
        value, why = parse(result.text, prompt)
        if value is not None:
            answer.value = value
            return answer
        answer.notes.append(f"#{attempt + 1}: {why}{cut_note(result)}")
    return answer


def cut_note(result) -> str:
    """' (cut at max_tokens)' when the answer ran out of tokens: the likeliest reason it did not parse."""
    return " (cut at max_tokens)" if result.completion.finish_reason == "length" else ""


def join_notes(old: str | None, new: str | None) -> str | None:
    if not new:
        return old
    return (f"{old}; {new}" if old else new)[:NOTE_CHARS]


def each(work: Callable, items: list, concurrency: int, name: str) -> list:
    """work(item) for every item, in order, up to `concurrency` at a time (threads: the work waits on an API)."""
    if concurrency == 1 or len(items) < 2:
        return [work(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(concurrency, len(items)), thread_name_prefix=name) as pool:
        return list(pool.map(work, items))
