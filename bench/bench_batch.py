"""Preflight vs real tokens, and batch vs synchronous, on the SQuALITY dev
corpus against the OpenAI-compatible test server (cl100k on its /tokenize),
priced as gpt-4o-mini (LONGSUM_PRICE_AS).

    .venv/bin/python bench/bench_batch.py [--data PATH] [--delay S]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    default = ROOT.parent / "shared" / "data" / "squality" / "dev.jsonl"
    parser.add_argument("--data", default=str(default if default.exists() else ROOT / "tests/data/squality/dev_subset.jsonl"))
    parser.add_argument("--delay", type=float, default=0.2, help="seconds the server takes per synchronous request")
    args = parser.parse_args()
    os.environ.setdefault("LONGSUM_PRICE_AS", "openai:gpt-4o-mini")
    from fake_openai_server import FakeOpenAIServer
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.corpus import squality_items
    from pipelines.llm.tokenizers import count_cl100k
    from pipelines.plan import estimate_corpus
    from pipelines.runner import RunConfig
    from pipelines.store import Store

    items = squality_items(args.data)
    with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768, delay=args.delay) as server:
        configs = [RunConfig(method=m, model="openai:served", base_url=server.base_url, context_window=32_768,
                             chunk_size=1024, summary_words=150, concurrency=4) for m in ("hierarchical", "incremental")]
        _, estimate = estimate_corpus(items, configs)
        rows = []
        with tempfile.TemporaryDirectory() as folder:
            for batch in (False, True):
                store = Store(Path(folder) / f"{batch}.duckdb")
                started = time.perf_counter()
                outcomes = evaluate_in_process(items, configs, store, batch=batch, metrics=[], concurrency=4,
                                               settle_s=1.0, poll_s=0.5)
                wall = time.perf_counter() - started
                ((calls, inputs, outputs, cost),) = store.execute(
                    "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd) FROM llm_calls "
                    "WHERE status = 'ok' AND NOT cached")
                batches = store.execute("SELECT count(*) FROM llm_batches")[0][0]
                rows.append(("batch" if batch else "synchronous", sum(o.status == "ok" for o in outcomes), calls,
                             inputs, outputs, batches, cost, wall))
    print(f"{len(items)} stories x 2 methods, chunk 1024, 150 words")
    print(f"preflight: calls {estimate.calls_min}..{estimate.calls_max}, input {estimate.input_min:,}..{estimate.input_max:,}, "
          f"output <= {estimate.output_max:,}; cost ${estimate.cost_low:.4f}..${estimate.cost_high:.4f} (list)")
    print("| mode | runs ok | calls | input tokens | output tokens | provider batches | cost (USD) | wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, ok, calls, inputs, outputs, batches, cost, wall in rows:
        print(f"| {mode} | {ok} | {calls} | {inputs:,} | {outputs:,} | {batches} | {cost:.4f} | {wall:.1f} |")


if __name__ == "__main__":
    main()
