"""A deterministic backend implementing the LLM protocol, for pure pipeline
logic. Features are also tested through the real llama.cpp backend."""

from __future__ import annotations

import re
from typing import Callable

from pipelines.llm.base import Completion, CompletionRequest

_WORDS = re.compile(r"at most (\d+) words")


def words_asked(request: CompletionRequest) -> int:
    found = _WORDS.findall(request.messages[-1]["content"])
    return int(found[-1]) if found else 50


def echo_answer(request: CompletionRequest) -> str:
    """Complete sentences built from the prompt's last fenced block, within the word budget."""
    content = request.messages[-1]["content"]
    blocks = re.findall(r"<(?:excerpt|summaries|summary)>\n(.*?)\n</", content, re.S)
    words = " ".join(blocks[-1].split()).split() if blocks else ["Nothing", "here"]
    budget = max(3, words_asked(request) - 5)
    picked = [w.strip(".!?\"'") for w in words[:budget]] or ["Nothing"]
    sentences = [" ".join(picked[i:i + 8]) for i in range(0, len(picked), 8)]
    return " ".join(s[0].upper() + s[1:] + "." for s in sentences if s)


class ScriptedBackend:
    backend = "scripted"

    def __init__(self, answer: Callable[[CompletionRequest], str] = echo_answer, context_window: int = 4096, model: str = "scripted"):
        self.answer = answer
        self.context_window = context_window
        self.model = model
        self.requests: list[CompletionRequest] = []

    def identity(self) -> dict:
        return {"backend": self.backend, "model": self.model}

    def describe(self) -> dict:
        return {"backend": self.backend, "model": self.model, "context_window": self.context_window}

    def count_tokens(self, text: str) -> int:
        return len(text.split()) + text.count("\n")

    def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        text = self.answer(request)
        tokens = self.count_tokens(text)
        finish = "stop"
        if tokens > request.max_tokens:
            text = " ".join(text.split()[: request.max_tokens])
            tokens, finish = request.max_tokens, "length"
        prompt = sum(self.count_tokens(m["content"]) for m in request.messages)
        return Completion(text=text, input_tokens=prompt, output_tokens=tokens, finish_reason=finish, latency_s=0.0)
