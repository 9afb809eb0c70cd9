"""Plan a run without calling a model: chunks, tokens and the LLM calls each
workflow would make at least (`summarize chunks FILE`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from pipelines.chunking import Chunk
from pipelines.defaults import DEFAULT_MODEL
from pipelines.documents import Document, load_document
from pipelines.llm import token_counter
from pipelines.runner import RunConfig, make_chunks


@dataclass
class Plan:
    document: Document
    chunks: list[Chunk]
    config: RunConfig
    tokenizer: str

    def chunk_lines(self) -> list[str]:
        return [
            f"{c.idx:5d}  {c.n_tokens:6d} tokens  {(c.section or '-')[:30]:30s}  {' '.join(c.text.split()[:8])[:60]}"
            for c in self.chunks
        ]

    def describe(self) -> str:
        tokens = sum(c.n_tokens for c in self.chunks)
        n = len(self.chunks)
        sizes = sorted(c.n_tokens for c in self.chunks) or [0]
        merges_floor = max(0, math.ceil(math.log(n, 8))) if n > 1 else 0
        return "\n".join([
            f"{self.document.path}: {self.document.kind}, {self.document.encoding}, {len(self.document.text):,} characters, "
            f"{len(self.document.sections)} sections",
            f"{n} chunks of at most {self.config.chunk_size} tokens ({self.tokenizer}); {tokens:,} tokens in all; "
            f"chunk sizes min {sizes[0]}, median {sizes[len(sizes) // 2]}, max {sizes[-1]}",
            f"hierarchical: at least {n} chunk-summary calls plus merges over {merges_floor}+ levels; "
            f"incremental: at least {n} update calls; extractive: no LLM call",
        ])


def plan_file(path: str | Path, *, model: str = DEFAULT_MODEL, chunk_size: int = 2048, chunker: str = "structured",
              overlap: int = 0, kind: str | None = None) -> Plan:
    config = RunConfig(model=model, chunk_size=chunk_size, chunker=chunker, overlap=overlap, kind=kind)
    config.validate()
    document = load_document(path, kind=kind)
    tokenizer, count = token_counter(model)
    return Plan(document, make_chunks(document, config, count), config, tokenizer=tokenizer)
