"""What both LLM workflows share: settings, the summary record, and the
generate-check-salvage-retry loop that turns one prompt into an accepted
summary.

A summary is accepted when it is non-empty, within its token limit, ends
on a sentence end and is not degenerate (repeats itself or copies the
prompt's instructions back; see degeneration.py). An answer cut off at
max_tokens is first salvaged (trimmed to its last complete sentence); only if
that leaves too little is the model asked again, with a tighter word budget
and a new seed, a bounded number of times. Generation watches for
degeneration and stops at it; the attempt after a degenerate one also samples
(RETRY_TEMPERATURE: at temperature 0 a new seed changes nothing) with a
repeat penalty. When no attempt was valid, none is kept: the step is marked
degraded, with the reasons, and keeps the best summary longsum can make
without the model -- an extractive selection over all of the step's input,
within its budget (`fallback`; in the workflows
`pipelines.summarize.extractive.salvage`), so that a degraded run still
draws from the whole document.

The retry policy learns within a run (`RetryLearning`): a model that failed
every attempt of each of its first LEARN_STEPS steps (a base model that can
only echo the prompt) is not asked again and again -- every later step gets
one attempt and, when that fails too, is degraded with the reason the model
showed on its first steps. A model that answers its first steps (or any
later one) keeps its full retries for the odd answer that fails. The
workflow's driver feeds the learning its steps' records in step order, never
a step itself, so every executor (threads, Prefect tasks on Dask) makes the
same decisions; the settings a step gets carry them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import prompts
from pipelines.llm.recording import LLMResult, RecordingLLM
from pipelines.summarize.degeneration import Degeneration, Watch
from pipelines.text import count_words, ends_with_sentence_end, trim_to_last_sentence

from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_SUMMARY_WORDS, WORDS_PER_TOKEN  # noqa: F401 (re-exported)

# A salvaged answer must keep at least this share of the words asked for.
MIN_SALVAGE_SHARE = 0.3
# Each retry asks for this much less than the attempt before.
RETRY_SHRINK = 0.15
# After a degenerate answer: sample instead of greedy decoding, and penalise
# repeated tokens (CompletionRequest.repeat_penalty).
RETRY_TEMPERATURE = 0.7
RETRY_REPEAT_PENALTY = 0.3
# Steps whose outcome decides whether the model deserves retries (see RetryLearning).
LEARN_STEPS = 2


@dataclass(frozen=True)
class SummarizeSettings:
    summary_words: int = DEFAULT_SUMMARY_WORDS
    max_attempts: int = 3
    temperature: float = 0.0
    level_shrink: float = WORDS_PER_TOKEN  # hierarchical: each level down gets this share
    context_share: float = 0.2  # hierarchical: room given to the previous merge as context
    grounding_share: float = 0.0  # room of a merge or update given to source passages (--grounded)
    concurrency: int = 1  # parallel chunk summaries (API backends)
    # Set by RetryLearning: why the steps from here on get only one attempt (None: full retries).
    retry_note: str | None = None

    @property
    def summary_tokens(self) -> int:
        return tokens_for_words(self.summary_words)


def tokens_for_words(words: int) -> int:
    return max(16, round(words / WORDS_PER_TOKEN))


def words_for_tokens(tokens: int) -> int:
    return max(8, round(tokens * WORDS_PER_TOKEN))


@dataclass
class SummaryRecord:
    level: int
    idx: int
    kind: str  # chunk | merge | update | compress | extractive
    text: str
    token_limit: int
    word_limit: int
    first_chunk: int
    last_chunk: int
    n_tokens: int = 0
    attempts: int = 1
    degraded: bool = False
    salvaged: bool = False
    note: str | None = None
    request_hash: str | None = None
    is_final: bool = False
    kept: bool = True  # False when the workflow discarded this output (a compression that did not shorten)
    exhausted: bool = False  # no attempt gave a valid answer (not stored: what RetryLearning reads)
    reasons: str | None = None  # why the attempts failed, in short, when exhausted

    @property
    def n_words(self) -> int:
        return count_words(self.text)

    @classmethod
    def from_outcome(cls, outcome: "Outcome", **fields) -> "SummaryRecord":
        return cls(
            text=outcome.text, n_tokens=outcome.n_tokens, attempts=outcome.attempts, degraded=outcome.degraded,
            salvaged=outcome.salvaged, note=outcome.note, request_hash=outcome.request_hash,
            exhausted=outcome.exhausted, reasons=outcome.reasons, **fields,
        )


@dataclass
class Attempt:
    text: str
    n_tokens: int
    salvaged: bool
    result: LLMResult
    words_asked: int
    problem: Degeneration | None = None

    @property
    def acceptable(self) -> bool:
        return bool(self.text) and ends_with_sentence_end(self.text) and self.problem is None


@dataclass
class Progress:
    """Callbacks the CLI uses to draw its progress bar; all optional."""

    on_expect: Callable[[int], None] | None = None  # this many more steps are coming
    on_step: Callable[[str], None] | None = None  # one step finished

    def expect(self, steps: int) -> None:
        if self.on_expect:
            self.on_expect(steps)

    def step(self, what: str) -> None:
        if self.on_step:
            self.on_step(what)


@dataclass(frozen=True)
class Outcome:
    text: str
    n_tokens: int
    attempts: int
    degraded: bool
    salvaged: bool
    note: str | None
    request_hash: str | None
    exhausted: bool = False
    reasons: str | None = None


class RetryLearning:
    """Whether this run's model deserves retries (see module doc). `observe`
    takes records in step order and returns the settings for the steps after
    them: the run's own, or one attempt with a note saying why."""

    def __init__(self, settings: SummarizeSettings):
        self.full = settings
        self.settings = settings
        self.first: list[SummaryRecord] = []  # the steps that decide

    def observe(self, records: list[SummaryRecord]) -> SummarizeSettings:
        for record in records:
            if record.kind == "extractive":
                continue
            if len(self.first) < LEARN_STEPS:
                self.first.append(record)
                if (len(self.first) == LEARN_STEPS and self.full.max_attempts > 1
                        and all(r.exhausted and r.attempts >= self.full.max_attempts for r in self.first)):
                    reasons = "; ".join(dict.fromkeys(r.reasons or "no valid answer" for r in self.first))
                    self.settings = replace(self.full, max_attempts=1, retry_note=(
                        f"one attempt only: the model failed all {self.full.max_attempts} attempts of each of "
                        f"its first {LEARN_STEPS} steps ({reasons})"))
            elif self.settings is not self.full and not record.exhausted:
                self.settings = self.full  # it answered after all: full retries again
        return self.settings


class Generation:
    """Turns one step's prompt into an accepted summary (see module doc)."""

    def __init__(self, llm: RecordingLLM, settings: SummarizeSettings):
        self.llm = llm
        self.settings = settings

    def run(
        self,
        template: str,
        values: dict,
        token_limit: int,
        word_limit: int,
        step: str,
        fallback: Callable[[int], str] | None = None,
        clean: Callable[[str], str] | None = None,
    ) -> Outcome:
        """`fallback(words)` supplies text without the LLM when no attempt gave a valid answer;
        `clean(answer)` is what the summary keeps of an answer (a grounded merge's, without its
        passage ids), checked and counted as such."""
        attempts: list[Attempt] = []
        for n in range(self.settings.max_attempts):
            words = max(8, round(word_limit * (1 - RETRY_SHRINK * n)))
            prompt = prompts.render(template, words=words, **values)
            watch = Watch.for_prompt(prompt.messages)
            temperature, penalty = self.settings.temperature, 0.0
            if attempts and attempts[-1].problem is not None:
                temperature, penalty = max(temperature, RETRY_TEMPERATURE), RETRY_REPEAT_PENALTY
            result = self.llm.complete(
                prompt, token_limit, temperature=temperature, seed=n, step=f"{step}#{n + 1}",
                repeat_penalty=penalty, watch=watch,
            )
            attempt = self._check(result, token_limit, words, watch, clean)
            attempts.append(attempt)
            if attempt.acceptable:
                return Outcome(attempt.text, attempt.n_tokens, n + 1, False, attempt.salvaged, None, result.request_hash)
        return self._best_of(attempts, token_limit, word_limit, fallback)

    def _best_of(self, attempts: list[Attempt], token_limit: int, word_limit: int,
                 fallback: Callable[[int], str] | None) -> Outcome:
        best = max(attempts, key=lambda a: (bool(a.text), -abs(count_words(a.text) - a.words_asked)))
        reasons = "; ".join(dict.fromkeys(_why(a) for a in attempts))
        note = f"no valid summary after {len(attempts)} attempt{'s' if len(attempts) > 1 else ''}: {reasons}"
        if self.settings.retry_note:
            note += f"; {self.settings.retry_note}"
        if fallback is not None:
            # No attempt is valid, so none is kept: the step's own input, selected without the model.
            text = self._salvage(fallback, word_limit, token_limit)
            note += "; kept an extractive selection of the step's input instead"
        else:  # (no input to select from) a degenerate answer is never kept, not even as a last resort
            text = best.text or ("" if best.problem else best.result.text.strip())
        causes = "; ".join(dict.fromkeys(_cause(a) for a in attempts))
        return Outcome(text, self.llm.count_tokens(text), len(attempts), True, best.salvaged, note,
                       best.result.request_hash, exhausted=True, reasons=causes)

    def _salvage(self, fallback: Callable[[int], str], word_limit: int, token_limit: int) -> str:
        """fallback's text within the token limit too (later prompts were planned on it): fewer
        words asked while it is over, then cut at a word boundary."""
        words = word_limit
        text = fallback(words)
        while words > 8 and self.llm.count_tokens(text) > token_limit:
            words = max(8, int(words * (1 - RETRY_SHRINK)))
            text = fallback(words)
        return self._within(text, token_limit)

    def _within(self, text: str, token_limit: int) -> str:
        """text, cut at a word boundary to at most token_limit tokens."""
        words = text.split()
        while words and self.llm.count_tokens(" ".join(words)) > token_limit:
            words = words[: min(len(words) - 1, int(len(words) * 0.9))]
        return " ".join(words)

    def _check(self, result: LLMResult, token_limit: int, words_asked: int, watch: Watch | None = None,
               clean: Callable[[str], str] | None = None) -> Attempt:
        text = clean(result.text) if clean is not None else result.text.strip()
        # A replayed answer was maybe made without the watch: check it whole.
        problem = watch.check(text) if watch is not None else None
        if problem is not None:
            return Attempt("", 0, False, result, words_asked, problem)
        n_tokens = self.llm.count_tokens(text)
        if text and n_tokens <= token_limit and ends_with_sentence_end(text):
            return Attempt(text, n_tokens, False, result, words_asked)
        trimmed = trim_to_last_sentence(text)
        if trimmed and count_words(trimmed) >= MIN_SALVAGE_SHARE * words_asked:
            trimmed_tokens = self.llm.count_tokens(trimmed)
            if trimmed_tokens <= token_limit:
                return Attempt(trimmed, trimmed_tokens, True, result, words_asked)
        return Attempt("", 0, False, result, words_asked)


def _why(attempt: Attempt) -> str:
    raw = attempt.result.text.strip()
    if attempt.problem is not None:
        return f"degenerate answer ({attempt.problem})"
    if not raw and attempt.result.completion.finish_reason == "degenerate":
        return "degenerate answer (it began to copy the prompt back and was stopped)"
    if not raw:
        return "empty answer"
    if attempt.result.completion.finish_reason == "length":
        return "answer cut off at max_tokens"
    return "answer does not end on a complete sentence"


def _cause(attempt: Attempt) -> str:
    """Why an attempt failed, without its particulars (what RetryLearning repeats)."""
    if attempt.problem is not None:
        return f"degenerate answer ({attempt.problem.kind})"
    return _why(attempt).split(" (")[0] if attempt.result.text.strip() else _why(attempt)


def kind_noun(kind: str) -> str:
    return {"book": "book", "paper": "paper", "code": "source file"}.get(kind, "document")


def prompt_values(kind: str) -> dict:
    """The values every summarizing prompt shares for a document of this kind."""
    return {
        "system": prompts.snippet("system_summarizer"),
        "kind": kind_noun(kind),
        "focus": prompts.snippet(f"focus_{kind}" if kind in ("book", "paper", "code") else "focus_book"),
    }
