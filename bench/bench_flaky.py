"""A flaky server, bounded threads and cheap token counts (issue 28), against
the test server `tests/fake_openai_server.py` (cl100k counts on /tokenize).

* matrix: the SQuALITY dev subset (3 stories, hierarchical, chunk 1024) run
  clean and then against the server resetting 15 % of connections and
  answering 5 % with 503 (`Flaky()`), by `summarize corpus`, `summarize
  corpus --batch` and the evaluate_corpus flow: documents finished, calls
  answered by the server, cost, against the clean run of the same path.
* threads: peak threads of the process and peak connections open at the
  server, corpora of N tiny documents (two chunks each) at --concurrency 4 x
  --call-concurrency 4, synchronous and batch.
* tokenize: /tokenize requests for A Scandal in Bohemia (preflight, then the
  run), servers whose tokenizer is unknown here (giving counts only, or each
  token's text too) and one whose ids are cl100k's.

    .venv/bin/python bench/bench_flaky.py [--matrix] [--threads 25,250] [--tokenize]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
SUBSET = ROOT / "tests" / "data" / "squality" / "dev_subset.jsonl"
STORY = ROOT / "tests" / "data" / "books" / "doyle_scandal_in_bohemia.txt"
os.environ.setdefault("LONGSUM_PRICE_AS", "openai:gpt-4o-mini")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


from peak_rss import PeakThreads  # noqa: E402


def _journal(db: Path) -> tuple[int, int, int, float]:
    from pipelines.store import Store

    store = Store(db, read_only=True)
    ((ok, runs),) = store.execute("SELECT count(*) FILTER (WHERE status = 'ok'), count(*) FROM runs "
                                  "WHERE method <> 'extractive'")
    ((calls, cost),) = store.execute("SELECT count(*), coalesce(sum(cost_usd), 0) FROM llm_calls "
                                     "WHERE status = 'ok' AND NOT cached")
    return ok, runs, calls, cost


def _corpus(path: str, server, db: Path, batch: bool) -> float:
    started = time.perf_counter()
    config = {"method": "hierarchical", "model": "openai:served", "concurrency": 4, "base_url": server.base_url,
              "chunk_size": 1024, "summary_words": 150}
    if path == "flow":
        from flows.evaluate_flow import evaluate_corpus

        evaluate_corpus(source=str(SUBSET), configs=[config], metrics=[], db=str(db), concurrency=4, batch=batch,
                        report=str(db.with_suffix(".html")))
    else:  # the CLI in a process of its own, on the bench's Prefect API
        from prefect.settings import PREFECT_API_URL

        env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
        command = [sys.executable, "-m", "pipelines.cli", "corpus", str(SUBSET), "--method", "hierarchical",
                   "--model", "openai:served", "--base-url", server.base_url, "--chunk-size", "1024",
                   "--summary-words", "150", "--concurrency", "4", "--call-concurrency", "4", "--db", str(db)]
        result = subprocess.run(command + (["--batch"] if batch else []), capture_output=True, text=True,
                                cwd=ROOT, env=env, timeout=1800)
        if result.returncode != 0:
            print(result.stderr[-2000:], file=sys.stderr)
    return time.perf_counter() - started


def matrix() -> None:
    from fake_openai_server import FakeOpenAIServer, Flaky
    from pipelines.llm.tokenizers import ServerTokenizer, count_cl100k

    from prefect.testing.utilities import prefect_test_harness

    print("| path | run | documents ok | calls answered | journaled calls | cost (USD) | faults injected | wall (s) |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder, prefect_test_harness(server_startup_timeout=120):
        for path, batch in (("summarize corpus", False), ("summarize corpus --batch", True), ("evaluate_corpus flow", False)):
            with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768,
                                  batch_polls=0) as server:
                for run, flaky in (("clean", None), ("flaky", Flaky())):
                    server.flaky = flaky
                    ServerTokenizer.forget()  # the flow runs in this process: it counts anew
                    before, injected = (len(server.batch_lines) if batch else len(server.requests)), len(server.injected)
                    db = Path(folder) / f"{path.replace(' ', '_')}-{run}.duckdb"
                    wall = _corpus("flow" if "flow" in path else "cli", server, db, batch)
                    answered = (len(server.batch_lines) if batch else len(server.requests)) - before
                    ok, runs, calls, cost = _journal(db)
                    print(f"| {path} | {run} | {ok} of {runs} | {answered} | {calls} | {cost:.5f} | "
                          f"{len(server.injected) - injected} | {wall:.1f} |", flush=True)


def threads(sizes: list[int]) -> None:
    from fake_openai_server import FakeOpenAIServer
    from pipelines.batch_eval import evaluate_in_process
    from pipelines.corpus import load_corpus
    from pipelines.llm.tokenizers import cl100k, count_cl100k
    from pipelines.runner import RunConfig
    from pipelines.store import Store

    print(f"threads before any run: {threading.active_count()}")
    print("| mode | documents | documents ok | peak threads | peak open connections | peak chat requests in flight | wall (s) |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as folder:
        for batch in (False, True):
            for n in sizes:
                corpus = Path(folder) / f"corpus-{n}-{batch}"
                corpus.mkdir()
                for i in range(n):
                    text = "\n\n".join(f"Story {i}, part {p}. " + " ".join(f"word{w}" for w in range(40)) + "."
                                       for p in range(2))
                    (corpus / f"doc{i:04d}.txt").write_text(text + "\n", encoding="utf-8")
                with FakeOpenAIServer(delay=0.01, batch_polls=0, count_tokens=count_cl100k, tokenize=True,
                                      encode=cl100k().encode) as server:
                    config = RunConfig(method="hierarchical", model="openai:served", base_url=server.base_url,
                                       chunk_size=64, summary_words=10, concurrency=4)
                    started = time.perf_counter()
                    with PeakThreads() as peak:
                        outcomes = evaluate_in_process(load_corpus(str(corpus)), [config],
                                                       Store(Path(folder) / f"{n}-{batch}.duckdb"), batch=batch,
                                                       metrics=[], concurrency=4, settle_s=0.05, poll_s=0.01)
                    ok = sum(o.status == "ok" for o in outcomes)
                    print(f"| {'batch' if batch else 'synchronous'} | {n} | {ok} | {peak.peak} | "
                          f"{server.max_open_connections} | {server.max_in_flight} | {time.perf_counter() - started:.1f} |",
                          flush=True)


def tokenize() -> None:
    from fake_openai_server import FakeOpenAIServer
    from pipelines.documents import load_document
    from pipelines.llm.tokenizers import ServerTokenizer, cl100k, count_cl100k
    from pipelines.plan import estimate_document
    from pipelines.runner import RunConfig, make_backend, summarize_document
    from pipelines.store import Store

    document = load_document(STORY)
    print(f"A Scandal in Bohemia: {len(document.text):,} characters")
    print("| server's tokenizer | chunks | /tokenize: preflight | /tokenize: run | total | LLM calls | status |")
    print("|---|---|---|---|---|---|---|")
    def pieces(text: str) -> list[bytes]:
        return [cl100k().decode_single_token_bytes(i) for i in cl100k().encode(text, disallowed_special=())]

    servers = (("unknown here, counts only", {}), ("unknown here, with each token's text", {"pieces": pieces}),
               ("cl100k ids (runs here)", {"encode": cl100k().encode}))
    for name, extra in servers:
        ServerTokenizer.forget()  # each server as a fresh process meets it
        with FakeOpenAIServer(count_tokens=count_cl100k, tokenize=True, context_window=32_768, **extra) as server, \
                tempfile.TemporaryDirectory() as folder:
            config = RunConfig(method="hierarchical", model="openai:served", base_url=server.base_url,
                               context_window=32_768)
            estimate = estimate_document(document, config, make_backend(config))
            preflight = server.tokenize_calls
            result = summarize_document(document, config, Store(Path(folder) / "run.duckdb"),
                                        backend=make_backend(config))
            run = server.tokenize_calls - preflight
            print(f"| {name} | {estimate.chunks} | {preflight} | {run} | {preflight + run} | {len(server.requests)} | "
                  f"{result.status} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", action="store_true")
    parser.add_argument("--threads", default=None, help="corpus sizes, e.g. 25,250")
    parser.add_argument("--tokenize", action="store_true")
    args = parser.parse_args()
    everything = not (args.matrix or args.threads or args.tokenize)
    if args.tokenize or everything:
        tokenize()
    if args.threads or everything:
        threads([int(n) for n in (args.threads or "25,250").split(",")])
    if args.matrix or everything:
        matrix()


if __name__ == "__main__":
    main()
