"""Degenerate answers: text that loops, or copies the prompt's instructions back.

A weak model asked to summarize (the embedded Gemma 270M base model, a small
model behind an OpenAI-compatible server) often answers with the system
prompt followed by one line repeated until max_tokens. Such an answer can be
non-empty, within budget and end on a full stop, so the ordinary validity
checks pass it. `detect()` says what is wrong with it, or None:

- **repetition**: one sentence or line (at least MIN_UNIT_WORDS words) occurs
  REPEAT_TIMES or more times;
- **loop**: a high share of the answer's word 4-grams repeat an earlier one
  (rep-4 of Welleck et al. 2019), which catches loops without sentence ends;
- **prompt echo**: the answer reproduces ECHO_WORDS or more consecutive words
  of the prompt's instructions (everything outside the fenced material), or
  writes one of the tags the prompt fences its material in.

The thresholds were checked on real summaries (tests/test_degeneration.py):
none of the BooookScore GPT-4/ChatGPT book summaries or the SQuALITY human
references is flagged, while the embedded model's real answers are.

`Watch` runs the same checks on a growing answer during generation, so a
backend can stop at the loop instead of at max_tokens. Backends that cannot
watch a growing answer (the API backends, which receive the answer whole)
use its `stop_sequences` instead: the opening words of each prompt message
and the first fence tag, where a verbatim echo of the prompt begins. A loop
cannot be written as a stop sequence; there the answer is checked when it
arrives, and max_tokens bounds the waste.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

from pipelines.text import count_words, sentences

REPEAT_TIMES = 3
MIN_UNIT_WORDS = 3
NGRAM = 4
MAX_REPEATED_NGRAM_SHARE = 0.3
MIN_NGRAMS = 24  # fewer 4-grams than this say too little about a loop
ECHO_WORDS = 8
# Part of the request identity: answers cut by another version of these rules are not reused.
WATCH_NAME = "degeneration/1"
# Checking a growing answer costs a detokenize and a scan; every few tokens is plenty.
WATCH_EVERY_TOKENS = 8
# A message's first words as a stop sequence: long enough never to occur in a summary.
STOP_WORDS = 6
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
_FENCE_OPEN = re.compile(r"<([a-z_]+)>")

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
# The tags prompts fence material in (see prompts/__init__.py); copies inside the material are defanged.
_FENCED = re.compile(r"<([a-z_]+)>.*?</\1>", re.S)


@dataclass(frozen=True)
class Degeneration:
    kind: str  # "repetition" | "loop" | "prompt echo"
    detail: str  # one line, safe to show and store

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def words(text: str) -> list[str]:
    """Lower-cased words without punctuation: what repetition and echo compare."""
    return _WORD.findall(text.lower())


def instructions_of(messages) -> str:
    """The prompt minus its fenced material (`<excerpt>...</excerpt>` etc.;
    the empty fences stay): what the model was told, as opposed to what it
    was given to summarize."""
    return "\n".join(_FENCED.sub(lambda m: f"<{m.group(1)}></{m.group(1)}>", m["content"]) for m in messages)


def repeated_unit(text: str) -> tuple[str, int] | None:
    """The sentence or line repeated most often, if one occurs REPEAT_TIMES or more."""
    best: tuple[int, str] | None = None
    # Sentences and lines are counted apart: a line that is one sentence must not count twice.
    for pieces in (sentences(text), text.splitlines()):
        counts: Counter = Counter()
        shown: dict[tuple[str, ...], str] = {}
        for piece in pieces:
            key = tuple(words(piece))
            if len(key) >= MIN_UNIT_WORDS:
                counts[key] += 1
                shown.setdefault(key, " ".join(piece.split()))
        if counts:
            key, n = counts.most_common(1)[0]
            if n >= REPEAT_TIMES and (best is None or n > best[0]):
                best = (n, shown[key])
    return (best[1], best[0]) if best else None


def repeated_ngram_share(text: str, n: int = NGRAM) -> tuple[float, int]:
    """Share of word n-grams that repeat an earlier one (rep-n), and how many n-grams there are."""
    seq = words(text)
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    if not grams:
        return 0.0, 0
    return 1 - len(set(grams)) / len(grams), len(grams)


class _EchoIndex:
    def __init__(self, instructions: str):
        seq = words(instructions)
        self.grams = {tuple(seq[i:i + ECHO_WORDS]) for i in range(len(seq) - ECHO_WORDS + 1)}
        # A summary has no use for the prompt's fence tags; an answer that writes one is copying the prompt's layout.
        self.tags = sorted({tag for name in _FENCE_OPEN.findall(instructions) for tag in (f"<{name}>", f"</{name}>")})

    def tag(self, text: str) -> str | None:
        return next((tag for tag in self.tags if tag in text), None)

    def longest(self, text: str) -> str | None:
        """The longest run of the answer's words that copies the instructions, if ECHO_WORDS or longer."""
        if not self.grams:
            return None
        seq = words(text)
        best, i = None, 0
        while i + ECHO_WORDS <= len(seq):
            if tuple(seq[i:i + ECHO_WORDS]) in self.grams:
                j = i + 1
                while j + ECHO_WORDS <= len(seq) and tuple(seq[j:j + ECHO_WORDS]) in self.grams:
                    j += 1
                span = seq[i:j + ECHO_WORDS - 1]
                if best is None or len(span) > len(best):
                    best = span
                i = j + ECHO_WORDS - 1
            else:
                i += 1
        return " ".join(best) if best else None


def detect(text: str, instructions: str = "") -> Degeneration | None:
    """What makes `text` a degenerate answer to a prompt with these instructions, or None."""
    return _detect(text, _EchoIndex(instructions) if instructions else None)


def _detect(text: str, echo: _EchoIndex | None) -> Degeneration | None:
    if not text.strip():
        return None
    if echo is not None:
        tag = echo.tag(text)
        if tag:
            return Degeneration("prompt echo", f"it writes the prompt's {tag} tag")
        copied = echo.longest(text)
        if copied:
            return Degeneration("prompt echo", f"{count_words(copied)} words of the instructions copied back "
                                               f"(\"{_clip(copied)}\")")
    unit = repeated_unit(text)
    if unit is not None:
        piece, n = unit
        return Degeneration("repetition", f"\"{_clip(piece)}\" {n} times")
    share, total = repeated_ngram_share(text)
    if total >= MIN_NGRAMS and share >= MAX_REPEATED_NGRAM_SHARE:
        return Degeneration("loop", f"{share:.0%} of its {NGRAM}-word sequences repeat")
    return None


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def echo_stops(messages) -> tuple[str, ...]:
    """Where a verbatim copy of the prompt would begin: each message's first
    STOP_WORDS words (from its first line) and the first fence tag."""
    stops: list[str] = []
    for message in messages:
        lines = message["content"].strip().splitlines()
        opening = lines[0].split()[:STOP_WORDS] if lines else []
        if len(opening) == STOP_WORDS and " ".join(opening) not in stops:
            stops.append(" ".join(opening))
    fence = _FENCE_OPEN.search("\n".join(m["content"] for m in messages))
    if fence:
        stops.append(fence.group(0))
    return tuple(stops[:MAX_STOP_SEQUENCES])


class Watch:
    """The checks above as a stop condition for a growing answer: call it with
    the text so far; it returns the reason to stop, or None. `name` goes into
    the request identity (an answer cut short is not the same answer)."""

    name = WATCH_NAME
    every_tokens = WATCH_EVERY_TOKENS

    def __init__(self, instructions: str = "", stop_sequences: tuple[str, ...] = ()):
        self._echo = _EchoIndex(instructions) if instructions else None
        self.stop_sequences = stop_sequences

    @classmethod
    def for_prompt(cls, messages) -> "Watch":
        return cls(instructions_of(messages), echo_stops(messages))

    def __call__(self, text: str) -> str | None:
        found = _detect(text, self._echo)
        return str(found) if found else None

    def check(self, text: str) -> Degeneration | None:
        return _detect(text, self._echo)
