"""Compressing a run's chunks before they are summarized.

`ChunkCompressor` is a step owner (see `pipelines.summarize.executors`).
SCOPE compresses each chunk on its own: the executor runs `compress` for
every chunk of the document as one round, in threads here or as Prefect
tasks in a flow. LongCodeZip ranks the functions of the whole file against
each other, so for code it is one step, `compress_document`, over the
document the chunks cover; its result is cut back along the chunks'
boundaries, so every chunk is summarized from what survived of its own span.
With a scoring model (`scorer_model`, `--compress-model`) its AMI joins the
ranking, and its scores are journaled in the run's `llm_calls`, so a re-run
scores nothing again.
"""

from __future__ import annotations

import dataclasses

from pipelines.chunking import Chunk
from pipelines.summarize.executors import Executor, Recipe


class ChunkCompressor:
    def __init__(self, llm, *, method: str, ratio: float, kind: str | None, language: str | None, query: str = "",
                 concurrency: int = 1, scorer_model: str | None = None):
        self.llm = llm
        self.options = dict(method=method, ratio=ratio, kind=kind, language=language, query=query,
                            concurrency=concurrency, scorer_model=scorer_model)

    def recipe(self) -> Recipe:
        return Recipe(ChunkCompressor, dict(self.options))

    def _scorer(self):
        from pipelines.llm.logprobs import default_scorer, scorer_path

        return default_scorer(scorer_path(self.options["scorer_model"]))

    def compress(self, chunk: Chunk) -> tuple[Chunk, dict]:
        """The chunk the summarizer reads instead, and its `compressed_chunks` row."""
        from pipelines.compress import compress_text

        o = self.options
        scorer = self._scorer() if o["scorer_model"] else None
        result = compress_text(
            chunk.text, method=o["method"], ratio=o["ratio"], kind=o["kind"], language=o["language"],
            query=o["query"], llm=self.llm, count_tokens=self.llm.count_tokens, step=f"compress:{chunk.idx}",
            concurrency=o["concurrency"], scorer=scorer, longcodezip_settings=longcodezip_settings(o["scorer_model"]),
        )
        return dataclasses.replace(chunk, text=result.text, n_tokens=result.compressed_tokens), _row(chunk, result)

    def compress_document(self, chunks: list[Chunk]) -> list[tuple[Chunk, dict]]:
        """LongCodeZip over the text of all the chunks, cut back into them."""
        from pipelines.compress.longcodezip import compress_code

        o = self.options
        text = "".join(c.text for c in chunks)
        result = compress_code(
            text, o["ratio"], o["query"], scorer=self._scorer() if o["scorer_model"] else None,
            count_tokens=self.llm.count_tokens, language=o["language"] or "python",
            settings=longcodezip_settings(o["scorer_model"]), journal=getattr(self.llm, "journal", None),
            run_id=getattr(self.llm, "run_id", None), step="compress:document",
        )
        pieces = split_result(result, text, [c.start - chunks[0].start for c in chunks], o["language"])
        out = []
        for chunk, (piece, reports) in zip(chunks, pieces):
            n = self.llm.count_tokens(piece)
            part = dataclasses.replace(result, text=piece, original_tokens=chunk.n_tokens, compressed_tokens=n,
                                       chunks=reports, stats={**result.stats, "document_level": True})
            out.append((dataclasses.replace(chunk, text=piece, n_tokens=n), _row(chunk, part)))
        return out

    def run(self, chunks: list[Chunk], executor: Executor) -> list[tuple[Chunk, dict]]:
        from pipelines.compress import resolve_method

        o = self.options
        if chunks and resolve_method(o["method"], o["kind"]) == "longcodezip" and _contiguous(chunks):
            return executor.map(self.compress_document, [(chunks,)])[0]
        return executor.map(self.compress, [(chunk,) for chunk in chunks])


def longcodezip_settings(scorer_model: str | None):
    """A scoring model asked for (`--compress-model`) is used: its AMI is
    fused with the structure signal. Without one, structure ranks alone."""
    from pipelines.compress.longcodezip import LongCodeZipSettings

    return LongCodeZipSettings(signals="structure+ami" if scorer_model else "structure")


def _contiguous(chunks: list[Chunk]) -> bool:
    """Chunks that tile one span of the document (no overlap, no gap)."""
    return all(a.end == b.start for a, b in zip(chunks, chunks[1:])) and \
        all(c.end - c.start == len(c.text) for c in chunks)


def split_result(result, text: str, starts: list[int], language: str | None) -> list[tuple[str, list]]:
    """The compressed text of each span [starts[i], starts[i+1]) of `text`.

    Code kept verbatim (`result.layout`) keeps its characters in whichever
    spans they lie; a pruned function and the placeholder of a run of
    dropped code go to the span where they start. A span left with nothing but whitespace gets a
    placeholder line, so that no chunk is empty."""
    from pipelines.compress.longcodezip import indentation, placeholder_line

    bounds = list(starts) + [len(text)]
    parts: list[list[str]] = [[] for _ in starts]
    reports: list[list] = [[] for _ in starts]

    def span_of(offset: int) -> int:
        import bisect

        return max(0, bisect.bisect_right(starts, offset) - 1)

    for report in result.chunks:
        reports[span_of(report.start)].append(report)
    for start, end, piece, verbatim in result.layout:
        first = span_of(start)
        if not verbatim:
            parts[first].append(piece)
            continue
        for i in range(first, len(starts)):
            lo, hi = max(start, bounds[i]), min(end, bounds[i + 1])
            if lo >= hi:
                break
            parts[i].append(text[lo:hi])
    out = []
    for i in range(len(starts)):
        piece = "".join(parts[i])
        if not piece.strip():  # keep any whitespace: it may indent the next span's first line
            piece = placeholder_line(indentation(text[bounds[i]:bounds[i + 1]]), language) + piece
        out.append((piece, reports[i]))
    return out


def _row(chunk: Chunk, result) -> dict:
    return {
        "idx": chunk.idx, "method": result.method, "target_ratio": result.target_ratio,
        "original_tokens": result.original_tokens, "compressed_tokens": result.compressed_tokens,
        "ratio": result.ratio, "fallbacks": len(result.fallbacks), "text": result.text,
        "report": result.as_dict(with_text=False),
    }
