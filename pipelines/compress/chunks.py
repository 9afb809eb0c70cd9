"""Compressing a run's chunks before they are summarized: one step per chunk.

`ChunkCompressor` is a step owner (see `pipelines.summarize.executors`): the
executor runs `compress` for every chunk of the document as one batch, in
threads here or as Prefect tasks in a flow.
"""

from __future__ import annotations

import dataclasses

from pipelines.chunking import Chunk
from pipelines.summarize.executors import Executor, Recipe


class ChunkCompressor:
    def __init__(self, llm, *, method: str, ratio: float, kind: str | None, language: str | None, query: str = "",
                 concurrency: int = 1):
        self.llm = llm
        self.options = dict(method=method, ratio=ratio, kind=kind, language=language, query=query,
                            concurrency=concurrency)

    def recipe(self) -> Recipe:
        return Recipe(ChunkCompressor, dict(self.options))

    def compress(self, chunk: Chunk) -> tuple[Chunk, dict]:
        """The chunk the summarizer reads instead, and its `compressed_chunks` row."""
        from pipelines.compress import compress_text

        o = self.options
        result = compress_text(
            chunk.text, method=o["method"], ratio=o["ratio"], kind=o["kind"], language=o["language"],
            query=o["query"], llm=self.llm, count_tokens=self.llm.count_tokens, step=f"compress:{chunk.idx}",
            concurrency=o["concurrency"],
        )
        row = {
            "idx": chunk.idx, "method": result.method, "target_ratio": result.target_ratio,
            "original_tokens": result.original_tokens, "compressed_tokens": result.compressed_tokens,
            "ratio": result.ratio, "fallbacks": len(result.fallbacks), "text": result.text,
            "report": result.as_dict(with_text=False),
        }
        return dataclasses.replace(chunk, text=result.text, n_tokens=result.compressed_tokens), row

    def run(self, chunks: list[Chunk], executor: Executor) -> list[tuple[Chunk, dict]]:
        return executor.map(self.compress, [(chunk,) for chunk in chunks])
