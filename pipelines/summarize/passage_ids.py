"""Passage ids in grounded merge prompts, and the model's citations of them.

A grounded merge gives its passages as `[P1] text`, `[P2] text` ... and asks
the model to put the ids each sentence rests on after it, as `[P2]` or
`[P1, P4]`. The summary keeps the text without them (`without_ids`); the
citations read them back from the journaled answer (`cited_ids`), where an
id the prompt did not give is dropped and counted, and a sentence naming
more than `MAX_IDS` passages keeps its first `MAX_IDS`.
"""

from __future__ import annotations

import re

from pipelines.text import split_sentences

MAX_IDS = 5  # a sentence resting on more passages than this is not being precise
_IDS = re.compile(r"\s*\[\s*(P\s*\d+(?:\s*[,;]\s*P\s*\d+)*)\s*\]", re.IGNORECASE)
_ONE = re.compile(r"\d+")
_GIVEN = re.compile(r"^\[P(\d+)\] ", re.MULTILINE)
_SEPARATOR = "\n\n"
_BLOCK = re.compile(r"<passages>\n(.*?)\n</passages>", re.S)  # as the grounded templates fence them


def with_ids(passages: list[str]) -> str:
    """The passages as a prompt gives them, numbered from 1."""
    return _SEPARATOR.join(f"[P{n}] {text}" for n, text in enumerate(passages, 1))


def passages_block(prompt: str) -> str | None:
    """The passages block of a grounded prompt (None when it gives none)."""
    found = _BLOCK.search(prompt)
    return found.group(1) if found else None


def given(block: str) -> dict[int, str]:
    """id -> passage text, read back from a prompt's passages block."""
    marks = list(_GIVEN.finditer(block))
    out = {}
    for mark, following in zip(marks, marks[1:] + [None]):
        end = following.start() if following else len(block)
        out[int(mark.group(1))] = block[mark.end():end].strip()
    return out


def without_ids(text: str) -> str:
    """The answer as the summary keeps it: every id marker gone, spacing mended."""
    return re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", _IDS.sub("", text))).strip()


def cited_ids(answer: str, known: set[int]) -> dict[int, tuple[list[int], int]]:
    """Sentence number (of `without_ids(answer)`'s sentences) -> (the ids it cites that the prompt
    gave, at most MAX_IDS, in order; how many it named that were dropped: unknown or over the cap).
    A marker belongs to the sentence it follows, whether before or after its full stop."""
    clean, marks, removed = [], [], 0
    position = 0
    for match in _IDS.finditer(answer):
        clean.append(answer[position:match.start()])
        marks.append((match.start() - removed, [int(n) for n in _ONE.findall(match.group(1))]))
        removed += match.end() - match.start()
        position = match.end()
    clean.append(answer[position:])
    text = "".join(clean)
    starts, offset = [], 0
    for piece in split_sentences(text):
        if piece.strip():
            starts.append(offset + len(piece) - len(piece.lstrip()))
        offset += len(piece)
    out: dict[int, tuple[list[int], int]] = {}
    for at, ids in marks:
        sentence = max(0, sum(1 for s in starts if s < at) - 1)
        kept, dropped = out.get(sentence, ([], 0))
        for n in ids:
            if n in known and n not in kept and len(kept) < MAX_IDS:
                kept.append(n)
            elif n not in kept:
                dropped += 1
        out[sentence] = (kept, dropped)
    return out
