"""How long the cost preflight takes on a whole novel (it runs before every
paid run), per method, and what it says: a planning of
`summarize chunks BOOK --model openai:gpt-4o-mini` in process, the chunking
done once and not counted.

    .venv/bin/python bench/bench_plan.py [BOOK] [--repeat N] [--compress scope]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    novel = ROOT.parent / "shared" / "data" / "books" / "austen_prideprejudice.txt"
    parser.add_argument("book", nargs="?", default=str(novel))
    parser.add_argument("--model", default="openai:gpt-4o-mini")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--compress", default="none")
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args()
    from pipelines.documents import load_document
    from pipelines.plan import estimate_document, planning_backend
    from pipelines.runner import RunConfig, count_tokens_for, make_chunks

    document = load_document(args.book)
    for method in ("hierarchical", "incremental"):
        config = RunConfig(method=method, model=args.model, chunk_size=args.chunk_size, compress=args.compress)
        backend = planning_backend(config)
        chunks = make_chunks(document, config, count_tokens_for(backend))
        estimate_document(document, config, backend, chunks=chunks)  # warm: tokenizer, templates
        times, cpu = [], []
        for _ in range(args.repeat):
            started, started_cpu = time.perf_counter(), time.process_time()
            estimate = estimate_document(document, config, backend, chunks=chunks)
            times.append(time.perf_counter() - started)
            cpu.append(time.process_time() - started_cpu)
        print(f"{method}: {len(chunks)} chunks, plan {min(times):.3f} s wall, {min(cpu):.3f} s CPU (min of "
              f"{args.repeat}; wall {', '.join(f'{t:.2f}' for t in times)}); "
              f"calls {estimate.calls_min}..{estimate.calls_max} "
              f"(typ {estimate.calls_typical}), input {estimate.input_min:,}..{estimate.input_max:,} "
              f"(typ {estimate.input_typical:,}), output <= {estimate.output_max:,} (typ {estimate.output_typical:,}), "
              f"levels {estimate.levels}, cost ${estimate.cost_low:.4f}..${estimate.cost_high:.4f}")


if __name__ == "__main__":
    main()
