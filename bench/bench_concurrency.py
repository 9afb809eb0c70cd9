"""Independent LLM calls in flight at once: one level of 16 chunk summaries
against an OpenAI-compatible server that answers after a fixed delay
(tests/fake_openai_server.py), sequential vs. concurrent.

    python bench/bench_concurrency.py [--chunks 16] [--delay 0.5] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from benchlib import book, table  # noqa: E402
from fake_openai_server import FakeOpenAIServer  # noqa: E402

from pipelines.chunking import chunk_text  # noqa: E402
from pipelines.llm.openai_backend import OpenAIBackend  # noqa: E402
from pipelines.llm.recording import MemoryJournal, RecordingLLM  # noqa: E402
from pipelines.summarize.common import SummarizeSettings  # noqa: E402
from pipelines.summarize.executors import ThreadExecutor  # noqa: E402
from pipelines.summarize.hierarchical import HierarchicalSummarizer  # noqa: E402


def level_wall(chunks, server: FakeOpenAIServer, concurrency: int) -> tuple[float, int]:
    backend = OpenAIBackend("fake", base_url=server.base_url, context_window=8192)
    llm = RecordingLLM(backend, MemoryJournal())
    summarizer = HierarchicalSummarizer(llm, SummarizeSettings(summary_words=120))
    server.max_in_flight = 0
    started = time.perf_counter()
    ThreadExecutor(concurrency).map(summarizer.summarize_chunk, [(c, len(chunks), 200) for c in chunks])
    return time.perf_counter() - started, server.max_in_flight


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=16)
    parser.add_argument("--delay", type=float, default=0.5)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    text = book("doyle_red_headed_league.txt").read_text(encoding="utf-8")
    from pipelines.llm.tokenizers import count_cl100k

    chunks = chunk_text(text, 256, count_cl100k)[: args.chunks]
    with FakeOpenAIServer(delay=args.delay) as server:
        sequential, _ = level_wall(chunks, server, 1)
        concurrent, peak = level_wall(chunks, server, args.concurrency)
    print(f"\nOne level of {len(chunks)} chunk summaries, server delay {args.delay} s per call\n")
    print(table(["concurrency", "wall s", "max in flight", "ratio to sequential"],
                [[1, f"{sequential:.2f}", 1, "1.00"],
                 [args.concurrency, f"{concurrent:.2f}", peak, f"{concurrent / sequential:.3f}"]]))


if __name__ == "__main__":
    main()
