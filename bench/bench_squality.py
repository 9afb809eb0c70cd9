"""Quality against people and peers: SQuALITY stories, one instruct model.

Summarizes the first N SQuALITY dev stories with the embedded
Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) behind llama-cpp-python's
OpenAI-compatible server, one server for every method:

- longsum's hierarchical (plain and with grounded merges), incremental and
  extractive workflows, through the library (`pipelines.runner.summarize_file`,
  a store in a temp dir);
- LangChain's `map_reduce` and `refine` (`load_summarize_chain` from
  langchain-classic, ChatOpenAI from langchain-openai) and LlamaIndex's
  `TreeSummarize` (llama-index-core, OpenAILike), each in a subprocess under
  the peers' own virtualenv (`bench/squality_peers.py`).

Every method gets the same chunks (longsum's, 2,048 tokens of the model's
own tokenizer by default) and the same word budget (585 words; the peers'
shipped prompts with "Use at most N words." added where the summary is
written, and max_tokens 900 on every call). Every summary is scored in this
process against the story's four human plot answers: ROUGE-1/2/L/Lsum and
BERTScore F1 (packaged all-MiniLM-L6-v2, layer 6), best of the four
references. Calls and tokens come from longsum's usage and, for the peers,
from the server's `usage` field on each response.

    python bench/bench_squality.py [--stories 2] [--methods ...] [--results FILE]

The peers' virtualenv (.venv-peers, outside the project's dependencies) is
made on first use, or beforehand with

    python3 -m venv .venv-peers && .venv-peers/bin/pip install langchain-classic \\
        langchain-openai llama-index-core llama-index-llms-openai-like

`--results FILE` keeps each (story, method) row as it finishes (JSON lines)
and skips rows already there, so a longer run extends a shorter one.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import LOCAL, ROOT, SHARED, data_file, table  # noqa: E402 (puts the repository on sys.path)

LONGSUM = ("hierarchical", "grounded", "incremental", "extractive")  # grounded: hierarchical, --grounded
PEERS = ("map_reduce", "refine", "tree_summarize")
PEER_LABEL = {"map_reduce": "LangChain map_reduce", "refine": "LangChain refine",
              "tree_summarize": "LlamaIndex TreeSummarize"}
PEER_PACKAGES = ("langchain-classic", "langchain-openai", "llama-index-core", "llama-index-llms-openai-like")
MODEL = "qwen2.5-coder-1.5b-instruct"
ROUGE = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def stories(n: int) -> tuple[list[dict], Path]:
    path = data_file(SHARED / "squality" / "dev.jsonl", LOCAL / "squality" / "dev_subset.jsonl")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines()[:n]:
        item = json.loads(line)
        plot = item["questions"][0]  # "What is the plot of the story?"
        out.append({"id": item["metadata"]["passage_id"], "text": item["document"],
                    "references": [r["response_text"].strip() for r in plot["responses"]]})
    return out, path


def peers_python(venv: Path) -> Path:
    """The peers' interpreter, making the virtualenv first if it is missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} with {', '.join(PEER_PACKAGES)} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES], check=True)
    return python


def run_longsum(method: str, path: Path, base_url: str, args, store) -> dict:
    from pipelines.runner import RunConfig, summarize_file

    config = RunConfig(method="hierarchical" if method == "grounded" else method, grounded=method == "grounded",
                       model=f"openai:{MODEL}", base_url=base_url, context_window=args.n_ctx,
                       chunk_size=args.chunk_size, summary_words=args.words, timeout_s=args.call_timeout)
    started = time.perf_counter()
    try:
        result = summarize_file(path, config, store)
    except Exception as exc:  # a failed run is a row, like a peer's failure
        return {"summary": "", "calls": 0, "prompt_tokens": 0, "completion_tokens": 0,
                "wall_s": time.perf_counter() - started, "chunks": 0, "status": "failed",
                "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    wall = time.perf_counter() - started
    return {"summary": result.summary, "calls": result.usage.calls, "prompt_tokens": result.usage.input_tokens,
            "completion_tokens": result.usage.output_tokens, "wall_s": wall, "chunks": result.n_chunks,
            "status": result.status, "error": None}


def chunks_of(path: Path, base_url: str, args) -> list[str]:
    """The chunks longsum cuts from this story: what every peer is given."""
    from pipelines.documents import load_document
    from pipelines.runner import RunConfig, count_tokens_for, make_backend, make_chunks

    config = RunConfig(model=f"openai:{MODEL}", base_url=base_url, context_window=args.n_ctx,
                       chunk_size=args.chunk_size, summary_words=args.words)
    return [c.text for c in make_chunks(load_document(path), config, count_tokens_for(make_backend(config)))]


def run_peer(method: str, chunks: list[str], base_url: str, args, python: Path) -> dict:
    request = {"method": method, "chunks": chunks, "base_url": base_url, "model": MODEL, "words": args.words,
               "max_tokens": args.max_tokens, "context_window": args.n_ctx}
    started = time.perf_counter()
    proc = subprocess.run([str(python), str(ROOT / "bench" / "squality_peers.py")], input=json.dumps(request),
                          capture_output=True, text=True, timeout=args.peer_timeout)
    process_wall = time.perf_counter() - started
    lines = proc.stdout.strip().splitlines()
    if proc.returncode or not lines:
        return {"summary": "", "calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "wall_s": process_wall,
                "chunks": len(chunks), "status": "failed",
                "error": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}"}
    out = json.loads(lines[-1])
    out.update(chunks=len(chunks), status="failed" if out["error"] else "ok", process_wall_s=process_wall)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=2, help="the first N stories of SQuALITY dev")
    parser.add_argument("--methods", default=",".join(LONGSUM + PEERS), help="comma-separated, run in this order")
    parser.add_argument("--chunk-size", type=int, default=2048)
    parser.add_argument("--words", type=int, default=585, help="the summary's word budget")
    parser.add_argument("--max-tokens", type=int, default=900, help="the peers' max_tokens on every call")
    parser.add_argument("--n-ctx", type=int, default=8192, help="the server's context window")
    parser.add_argument("--peers-venv", default=str(ROOT / ".venv-peers"))
    parser.add_argument("--peer-timeout", type=float, default=3600)
    parser.add_argument("--call-timeout", type=float, default=1800,
                        help="longsum's per-request timeout (its 120 s default is too short for a loaded CPU)")
    parser.add_argument("--results", default=None, help="JSON-lines file of finished rows: kept and resumed")
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    if set(methods) - set(LONGSUM + PEERS):
        parser.error(f"--methods: choose from {', '.join(LONGSUM + PEERS)}")

    from llama_server import llama_server  # tests/, on sys.path through benchlib
    from pipelines.store import Store

    items, source = stories(args.stories)
    tmp = Path(tempfile.mkdtemp(prefix="longsum-squality-"))
    results = Path(args.results) if args.results else tmp / "results.jsonl"
    done = {}
    if results.exists():
        for line in results.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            done[(row["story"], row["method"])] = row
    python = peers_python(Path(args.peers_venv)) if set(methods) & set(PEERS) else None
    store = Store(tmp / "squality.duckdb")
    todo = [(s, m) for s in items for m in methods if (s["id"], m) not in done]
    if todo:
        with llama_server(args.n_ctx, alias=MODEL, model=MODEL, startup_s=300) as base_url:
            chunk_cache: dict[str, list[str]] = {}
            for story, method in todo:
                path = tmp / f"squality_{story['id']}.txt"
                path.write_text(story["text"], encoding="utf-8")
                print(f"story {story['id']} ({len(story['text'].split()):,} words): {method} ...", flush=True)
                if method in LONGSUM:
                    row = run_longsum(method, path, base_url, args, store)
                else:
                    if story["id"] not in chunk_cache:
                        chunk_cache[story["id"]] = chunks_of(path, base_url, args)
                    row = run_peer(method, chunk_cache[story["id"]], base_url, args, python)
                row.update(story=story["id"], method=method)
                print(f"  {row['status']}: {row['calls']} calls, {row['prompt_tokens']:,}+{row['completion_tokens']:,} "
                      f"tokens, {row['wall_s']:.0f} s, {len(row['summary'].split())} words"
                      + (f"; {row['error']}" if row["error"] else ""), flush=True)
                done[(story["id"], method)] = row
                with results.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")

    from scoring.bertscore import BertScorer, score_against_references
    from scoring.rouge import RougeScorer

    refs = {s["id"]: s["references"] for s in items}
    rows = [done[(s["id"], m)] for s in items for m in methods]
    scored = [r for r in rows if r["summary"].strip()]
    rouge = RougeScorer()
    for r in scored:
        best = rouge.score_one(r["summary"], refs[r["story"]]).max
        r["rouge"] = {t: best[t].fmeasure for t in ROUGE}
    for r, b in zip(scored, score_against_references(BertScorer(), [r["summary"] for r in scored],
                                                     [refs[r["story"]] for r in scored])):
        r["bertscore_f1"] = b.max.f1

    def mean(values):
        values = list(values)
        return sum(values) / len(values) if values else float("nan")

    body, notes = [], []
    for m in methods:
        mine = [r for r in rows if r["method"] == m]
        ok = [r for r in mine if "rouge" in r]
        label = PEER_LABEL.get(m, "longsum hierarchical, grounded" if m == "grounded" else f"longsum {m}")
        body.append([label, len(ok)] + [f"{mean(r['rouge'][t] for r in ok):.3f}" for t in ROUGE]
                    + [f"{mean(r['bertscore_f1'] for r in ok):.3f}", f"{mean(r['calls'] for r in mine):.1f}",
                       f"{mean(r['prompt_tokens'] for r in mine):,.0f}",
                       f"{mean(r['completion_tokens'] for r in mine):,.0f}", f"{mean(r['wall_s'] for r in mine):.0f}"])
        for r in mine:
            if r["status"] != "ok":
                notes.append(f"{label}, story {r['story']}: {r['status']}" + (f" ({r['error']})" if r["error"] else ""))
    print(f"\n{source.name}: {len(items)} stories ({', '.join(s['id'] for s in items)}); {MODEL} Q4_K_M behind "
          f"llama-cpp-python's server (n_ctx {args.n_ctx}); chunks of {args.chunk_size} tokens, {args.words}-word "
          f"budget; scores best of 4 references; means per story; {os.cpu_count()} cores\n")
    print(table(["method", "stories", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "BERTScore F1", "calls",
                 "prompt tokens", "completion tokens", "wall s"], body))
    for note in notes:
        print(f"- {note}")
    print(f"\nrows: {results}")


if __name__ == "__main__":
    main()
