"""Answers in the shape a capable model gives, for the fake OpenAI-compatible
server: a SCOPE rewrite that keeps every required keyword within the words
asked, BooookScore judgements that parse (v1 lines, v2 JSON) and flag every
even-numbered sentence, and for anything else the server's own summary."""

from __future__ import annotations

import json
import re

_SENTENCES_TO_REVIEW = re.compile(r"^(\d+)\. ", re.M)
_V1_SENTENCE = re.compile(r"Sentence (\d+): <sentence>")


def required_keywords(content: str) -> list[str]:
    tail = content.split("exactly as written: ", 1)[1]
    tail = re.split(r"\. (?:Your previous|Write only)", tail)[0].strip().rstrip(".")
    return [] if tail == "(none)" else [k.strip() for k in tail.split(",")]


def excerpt_of(content: str) -> str:
    return re.search(r"<excerpt>\n(.*?)\n</excerpt>", content, re.S).group(1)


def scope_rewrite(content: str) -> str:
    """As many words as asked for, as a model that heeds the limit writes: the required
    keywords, then the excerpt's words."""
    asked = int(re.search(r"in at most (\d+) words", content).group(1))
    keywords = required_keywords(content)
    words = (keywords + excerpt_of(content).split())[: max(len(keywords) + 2, asked)]
    return " ".join(words).rstrip(",;:") + ("" if words and words[-1][-1:] in ".!?\"'”" else ".")


def flagged(number: int) -> bool:
    return number % 2 == 0


def judge_v1(number: int) -> str:
    if flagged(number):
        return "Types: entity omission\nQuestions: Who is this person, who has not been introduced?"
    return "Types: none\nQuestions: none"


def judge_v2(numbers: list[int]) -> str:
    return json.dumps([
        {"sentence": n, "questions": "Who is this person, who has not been introduced?", "types": ["entity omission"]}
        if flagged(n) else {"sentence": n, "questions": None, "types": []}
        for n in numbers
    ])


def capable_answer(messages: list[dict]) -> str | None:
    """The answer to a request, or None to let the server write its summary."""
    content = messages[-1]["content"] if messages else ""
    if "exactly as written: " in content and "<excerpt>" in content:
        return scope_rewrite(content)
    if "Sentences to review:" in content:
        batch = content.rsplit("Sentences to review:", 1)[1]
        return judge_v2([int(n) for n in _SENTENCES_TO_REVIEW.findall(batch)])
    found = _V1_SENTENCE.findall(content)
    if found:
        return judge_v1(int(found[-1]))
    return None
