"""Side by side with the BooookScore reference scripts (lilakk/BooookScore).

The reference was run here on doyle_scandal_in_bohemia.txt (6 chunks of
2,048 cl100k tokens, max context 8,192, its default 900-token summary limit)
against the embedded Gemma model behind llama-cpp-python's OpenAI-compatible
server; its figures (Gemma tokens, as the server counted them) are below.
This script runs longsum's side with the same settings, model and server,
then its BooookScore checker on the hierarchical summary, and prints both.

    python bench/bench_reference.py [--document PATH] [--checker v1|v2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE = {
    "hierarchical": {"seconds": 683, "requests": 32, "prompt": 73_560, "completion": 20_218,
                     "note": "25 validity retries; 28 of 32 answers hit max_tokens; final merge never passed its check"},
    "incremental": {"seconds": 850, "requests": 30, "prompt": 43_303, "completion": 26_113,
                    "note": "crashed as shipped; figures after a patch"},
    "checker": {"note": "never finished (v1 retries without bound; v2 prompt + max_tokens overflowed the context)"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(n_ctx: int) -> tuple[subprocess.Popen, str]:
    import httpx

    from pipelines.llm.llamacpp import default_model_path

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(default_model_path()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", str(n_ctx), "--chat_format", "gemma", "--model_alias", "gemma-3-270m"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/v1"
    for _ in range(240):
        try:
            if httpx.get(f"{base}/models", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the llama-cpp-python server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--document", default=None)
    parser.add_argument("--checker", default="v1", choices=["v1", "v2"])
    args = parser.parse_args()
    from pipelines.llm.recording import RecordingLLM
    from pipelines.runner import RunConfig, make_backend, summarize_file
    from pipelines.store import DuckDBJournal, Store
    from scoring.booookscore import BooookScoreChecker

    document = Path(args.document) if args.document else next(
        p for p in (ROOT.parent / "shared" / "data" / "books" / "doyle_scandal_in_bohemia.txt",
                    ROOT / "tests" / "data" / "books" / "doyle_scandal_in_bohemia.txt") if p.exists())
    tmp = Path(tempfile.mkdtemp(prefix="longsum-reference-"))
    store = Store(tmp / "reference.duckdb")
    server, base_url = start_server(8192)
    rows, summaries = {}, {}
    try:
        for method in ("hierarchical", "incremental"):
            config = RunConfig(method=method, model="openai:gemma-3-270m", base_url=base_url, context_window=8192,
                               chunk_size=2048, summary_words=585)
            started = time.perf_counter()
            result = summarize_file(document, config, store)
            wall = time.perf_counter() - started
            ((retries,),) = store.execute(
                "SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND NOT ends_with(step, '#1')",
                [result.run_id])
            ((hit_max,),) = store.execute(
                "SELECT count(*) FROM llm_calls WHERE run_id = ? AND NOT cached AND finish_reason = 'length'",
                [result.run_id])
            rows[method] = {
                "seconds": wall, "requests": result.usage.calls, "prompt": result.usage.input_tokens,
                "completion": result.usage.output_tokens, "chunks": result.n_chunks,
                "note": f"{retries} retries; {hit_max} answers hit max_tokens (salvaged); "
                        f"{result.degraded_summaries} degraded summaries; status {result.status}",
            }
            summaries[method] = result
        backend = make_backend(RunConfig(model="openai:gemma-3-270m", base_url=base_url, context_window=8192))
        llm = RecordingLLM(backend, DuckDBJournal(store), run_id=summaries["hierarchical"].run_id)
        started = time.perf_counter()
        check = BooookScoreChecker(llm, args.checker).check(summaries["hierarchical"].summary)
        checker_wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"\n{document.name}: {summaries['hierarchical'].n_chunks} chunks of 2,048 cl100k tokens, context 8,192, "
          f"900-token summary limit; embedded Gemma 3 270M behind llama-cpp-python's server; {os.cpu_count()} cores\n")
    print("workflow | side | wall s | requests | prompt tokens | completion tokens | total | notes")
    print("--- | --- | --- | --- | --- | --- | --- | ---")
    for method in ("hierarchical", "incremental"):
        ref, ours = REFERENCE[method], rows[method]
        for side, r in (("reference", ref), ("longsum", ours)):
            print(f"{method} | {side} | {r['seconds']:.0f} | {r['requests']} | {r['prompt']:,} | {r['completion']:,} | "
                  f"{r['prompt'] + r['completion']:,} | {r['note']}")
        share = (ours["prompt"] + ours["completion"]) / (ref["prompt"] + ref["completion"])
        print(f"{method} | longsum / reference | {ours['seconds'] / ref['seconds']:.2f} | | | | {share:.2f} |")
    score = "none" if check.score is None else f"{100 * check.score:.2f}"
    print(f"checker | reference | - | - | - | - | - | {REFERENCE['checker']['note']}")
    print(f"checker ({args.checker}) | longsum | {checker_wall:.0f} | {llm.usage.calls} | {llm.usage.input_tokens:,} | "
          f"{llm.usage.output_tokens:,} | {llm.usage.input_tokens + llm.usage.output_tokens:,} | "
          f"finished: BooookScore {score} over {check.n_judged} of {check.n_sentences} sentences "
          f"({check.n_unparseable} unparseable)")


if __name__ == "__main__":
    main()
