"""Benchmark the compressors on real data and print tables.

LongCodeZip on the stdlib function-completion tasks at ratio 0.3: achieved
ratio, seconds per task, the seconds of one prompt pass of the embedded
model over the task's whole context (measured in the same run) and their
ratio, and how often the definitions of the names the answer body uses
(and the context defines) survive compression, for the chosen signals and
for the structure signal alone, against a random selection of the same
function-level chunks up to the same size. With model signals, a second
pass over the tasks replays the journaled scores (the cached re-run).

SCOPE on three SQuALITY dev stories at ratio 0.5: achieved ratio, what was
done with the chunks, and keyword retention (the required keywords kept in
the compressed chunks, and the story's named entities still present).

Data comes from ../shared/data when present, else from the copies in
tests/data. Usage:

    python bench/bench_compress.py [--part code|prose|all] [--start N] [--limit N] [--every N]
        [--task ID ...] [--attempts N] [--context-lines N] [--story-words N] [--quick]
        [--code-ratio 0.3] [--prose-ratio 0.5] [--model llamacpp] [--json PATH]
        [--signals structure|ami|structure+ami] [--compress-model PATH] [--cache-db PATH]
        [--jsonl PATH] [--no-prompt-pass] [--no-rerun]

`--quick` (what `make bench` runs): one code task (zipfile.py:open) with
only the last 300 lines of its context (cut where a top-level statement
starts; a tail that holds the definitions of three of the names its answer
uses), and one story's first 800 words with one rewrite attempt per chunk.
A sample this small shows the machinery and the rates, not the retention
figures, which need every task.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchlib import LOCAL, SHARED, apply_quick, data_file, excerpt, table  # noqa: E402 (puts the repository on sys.path)

from pipelines.defaults import DEFAULT_MODEL  # noqa: E402
from pipelines.compress.retention import needed_definitions, random_selection, retained  # noqa: E402
RANDOM_SEEDS = (0, 1, 2, 3, 4)
QUICK = {"task": ["zipfile.py:open:2444"], "context_lines": 300, "limit": 1, "story_words": 800, "attempts": 1}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if abs(value) >= 100 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3f}"
    return str(value)


# --- LongCodeZip -------------------------------------------------------------------


def context_tail(code: str, lines: int | None) -> str:
    """The last `lines` lines of code, starting where a top-level statement
    starts (all of it when none starts there: a cut inside a class would not parse)."""
    all_lines = code.split("\n")
    if not lines or len(all_lines) <= lines:
        return code
    for i in range(len(all_lines) - lines, len(all_lines)):
        line = all_lines[i]
        if line and not line[0].isspace() and line[0] not in ")]}#'\"":
            return "\n".join(all_lines[i:])
    return code


def prompt_pass_seconds(tokens: list[int], model_path=None) -> float:
    """Seconds for the model to evaluate `tokens` once as a prompt (logits
    only where llama.cpp asks for them by default: the end of each batch)."""
    from pipelines.llm.llamacpp import default_local_model, load_llama, model_file

    llama, lock = load_llama(model_path or model_file(default_local_model())[0], PROMPT_PASS_CONTEXT)
    with lock:
        llama.reset()
        llama._ctx.kv_cache_clear()
        started = time.perf_counter()
        llama.eval([llama.token_bos()] + list(tokens)[: PROMPT_PASS_CONTEXT - 2])
        seconds = time.perf_counter() - started
        llama.reset()
        llama._ctx.kv_cache_clear()
    return seconds


PROMPT_PASS_CONTEXT = 32768  # Gemma 3 270M's context: every task's whole context in one prompt


def bench_code(ratio: float, limit: int | None, model: str, report: dict, threads: int | None = None,
               start: int = 0, every: int = 1, context_lines: int | None = None,
               task_ids: list[str] | None = None, signals: str = "structure", cache_db: Path | None = None,
               prompt_pass: bool = True, rerun: bool = True, jsonl: Path | None = None,
               compress_model: str | None = None) -> None:
    from pipelines.compress.longcodezip import LongCodeZipSettings, compress_code
    from pipelines.llm import resolve
    from pipelines.llm.logprobs import default_scorer
    from pipelines.llm.recording import MemoryJournal

    path = data_file(SHARED / "code" / "stdlib_funccomp" / "tasks.jsonl", LOCAL / "code" / "stdlib_funccomp" / "tasks.jsonl")
    tasks = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][start::every]
    if task_ids:
        tasks = [task for task in tasks if task["task_id"] in task_ids]
        missing = set(task_ids) - {task["task_id"] for task in tasks}
        if missing:
            raise SystemExit(f"no such task in {path}: {', '.join(sorted(missing))}")
    if limit:
        tasks = tasks[:limit]
    backend = resolve(model)
    count = backend.count_tokens
    scorer = default_scorer(compress_model)
    if threads:
        scorer.set_threads(threads)
    if cache_db is not None:
        from pipelines.store import DuckDBJournal, Store

        journal = DuckDBJournal(Store(cache_db))
    else:
        journal = MemoryJournal()
    settings = LongCodeZipSettings(signals=signals)
    structure_only = LongCodeZipSettings(signals="structure")
    print(f"LongCodeZip ({signals}) at ratio {ratio} on {len(tasks)} tasks from {path} "
          f"(tokens counted with {backend.model}; scored with {scorer.model})"
          + (f", the last {context_lines} lines of each context" if context_lines else ""), file=sys.stderr)
    rows = []
    for task in tasks:
        context = context_tail(task["context"], context_lines)
        defs, names = needed_definitions(context, task["query"], task["answer"])
        alone = compress_code(context, ratio, task["query"], scorer=scorer, count_tokens=count,
                              settings=structure_only)
        result = compress_code(context, ratio, task["query"], scorer=scorer, count_tokens=count, settings=settings,
                               journal=journal, step=f"bench:{task['task_id']}")
        rand = [len(retained(defs, names, random_selection(context, result.compressed_tokens, count, seed)))
                for seed in RANDOM_SEEDS]
        prompt_s = prompt_pass_seconds(scorer.tokenize(context), compress_model) if prompt_pass else None
        row = {
            "task": task["task_id"], "tokens": result.original_tokens, "ratio": round(result.ratio, 3),
            "seconds": round(result.seconds, 1), "prompt_pass_s": None if prompt_s is None else round(prompt_s, 1),
            "time_ratio": None if not prompt_s else round(result.seconds / prompt_s, 3),
            "names": len(names), "lcz_kept": len(retained(defs, names, result.text)),
            "structure_kept": len(retained(defs, names, alone.text)), "random_kept": round(sum(rand) / len(rand), 2),
            "chunks": result.stats.get("chunks"), "selected": result.stats.get("selected"),
            "ami_scored": result.stats.get("ami_scored"),
            "scorer_tokens": result.stats.get("scorer", {}).get("tokens_evaluated"),
        }
        rows.append(row)
        print(f"  {row}", file=sys.stderr, flush=True)
        if jsonl is not None:
            with jsonl.open("a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
    rerun_s = None
    if rerun and signals != "structure":
        started = time.perf_counter()
        for task in tasks:
            compress_code(context_tail(task["context"], context_lines), ratio, task["query"], scorer=scorer,
                          count_tokens=count, settings=settings, journal=journal)
        rerun_s = time.perf_counter() - started
    print_code_table(rows, ratio, signals, context_lines, rerun_s)
    report["code"] = {"ratio": ratio, "signals": signals, "rows": rows, "rerun_seconds": rerun_s}


def print_code_table(rows: list[dict], ratio: float, signals: str, context_lines: int | None = None,
                     rerun_s: float | None = None) -> None:
    headers = ["task", "tokens", "ratio", "s/task", "prompt pass s", "x prompt", "names", f"LCZ ({signals}) kept",
               "structure alone", "random kept"]
    body = [[r["task"], r["tokens"], r["ratio"], r["seconds"], r["prompt_pass_s"] or "-", r["time_ratio"] or "-",
             r["names"], _share(r["lcz_kept"], r["names"]), _share(r["structure_kept"], r["names"]),
             _share(r["random_kept"], r["names"])] for r in rows]
    n = max(1, len(rows))
    total = lambda key: sum(r[key] or 0 for r in rows)  # noqa: E731
    passes = total("prompt_pass_s")
    body.append(["ALL (pooled)", total("tokens"), round(sum(r["ratio"] * r["tokens"] for r in rows) / max(1, total("tokens")), 3),
                 round(total("seconds") / n, 1), round(passes / n, 1) if passes else "-",
                 round(total("seconds") / passes, 2) if passes else "-", total("names"),
                 _share(total("lcz_kept"), total("names")), _share(total("structure_kept"), total("names")),
                 _share(total("random_kept"), total("names"))])
    print(f"\nLongCodeZip ({signals}), ratio {ratio}: definitions of the names the answer uses that survive compression "
          f"(random = same chunking, random order, same token budget, mean of {len(RANDOM_SEEDS)} seeds); "
          f"x prompt = compression seconds / seconds of one prompt pass over the whole context"
          + (f"; the last {context_lines} lines of each context" if context_lines else "") + "\n")
    print(table(headers, body, fmt=_fmt))
    if rerun_s is not None:
        print(f"\ncached re-run of all {len(rows)} tasks: {rerun_s:.1f} s")


def _share(kept: float, total: int) -> str:
    if not total:
        return "-"
    return f"{kept / total:.0%} ({kept:g}/{total})"


# --- SCOPE ----------------------------------------------------------------------------


def _progress(result) -> None:
    """A dot per LLM call on stderr (the embedded model takes seconds per call)."""
    print("." if not result.cached else ",", end="", file=sys.stderr, flush=True)


def bench_prose(ratio: float, limit: int | None, model: str, report: dict, start: int = 0,
                attempts: int | None = None, story_words: int | None = None) -> None:
    from pipelines.compress import keywords as kw
    from pipelines.compress.scope import ScopeSettings, compress_prose
    from pipelines.llm import resolve
    from pipelines.llm.recording import MemoryJournal, RecordingLLM

    path = data_file(SHARED / "squality" / "dev.jsonl", LOCAL / "squality" / "dev_subset.jsonl")
    stories = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    stories = stories[start:][: limit or max(0, 3 - start)]
    backend = resolve(model)
    settings = ScopeSettings() if attempts is None else ScopeSettings(max_attempts=attempts)
    print(f"SCOPE at ratio {ratio} on {len(stories)} SQuALITY stories from {path} with {backend.model}, "
          f"{settings.max_attempts} rewrite attempt(s) per chunk", file=sys.stderr)
    rows = []
    for story in stories:
        text = excerpt(story["document"], story_words) if story_words else story["document"]
        question = story["questions"][0]["question_text"]
        llm = RecordingLLM(backend, MemoryJournal(), on_call=_progress)
        started = time.perf_counter()
        result = compress_prose(text, ratio, llm, query=question, settings=settings)
        seconds = time.perf_counter() - started
        required = sum(len(c.keywords) for c in result.chunks)
        kept = sum(len(c.keywords_kept) for c in result.chunks)
        vocab = kw.vocabulary(text, [text])
        entities = sorted(set(vocab.proper.values()))
        entities_kept = sum(1 for e in entities if kw.present(e, result.text))
        actions = {a: sum(c.action == a for c in result.chunks) for a in ("rewritten", "extractive", "verbatim")}
        row = {
            "story": story["metadata"]["passage_id"], "tokens": result.original_tokens,
            "compressed": result.compressed_tokens, "ratio": round(result.ratio, 3), "chunks": len(result.chunks),
            **actions, "keywords": required, "keywords_kept": kept, "entities": len(entities),
            "entities_kept": entities_kept, "llm_calls": llm.usage.calls, "seconds": round(seconds, 1),
            "fallback_reasons": [c.fallback_reason for c in result.fallbacks][:3],
        }
        rows.append(row)
        print(f"\n  {dict((k, v) for k, v in row.items() if k != 'fallback_reasons')}", file=sys.stderr, flush=True)
    headers = ["story", "tokens", "ratio", "chunks", "rewritten", "extractive", "verbatim", "keywords kept",
               "entities kept", "LLM calls", "seconds"]
    body = [[r["story"], r["tokens"], r["ratio"], r["chunks"], r["rewritten"], r["extractive"], r["verbatim"],
             _share(r["keywords_kept"], r["keywords"]), _share(r["entities_kept"], r["entities"]), r["llm_calls"],
             r["seconds"]] for r in rows]
    print(f"\nSCOPE, ratio {ratio}, rewriting with {backend.model}, {settings.max_attempts} attempt(s) per chunk"
          + (f"; each story's first {story_words} words" if story_words else "") + "\n")
    print(table(headers, body, fmt=_fmt))
    for r in rows:
        for reason in r["fallback_reasons"]:
            print(f"  e.g. story {r['story']} fallback: {reason}")
    report["prose"] = {"ratio": ratio, "model": backend.model, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=["code", "prose", "all"], default="all")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks / stories")
    parser.add_argument("--start", type=int, default=0, help="skip the first N tasks / stories")
    parser.add_argument("--attempts", type=int, default=None,
                        help="prose: SCOPE rewrite attempts per chunk (default: ScopeSettings' 3)")
    parser.add_argument("--every", type=int, default=1, help="code: only every Nth task (a sample across files)")
    parser.add_argument("--code-ratio", type=float, default=0.3)
    parser.add_argument("--prose-ratio", type=float, default=0.5)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="tokenizer for the ratio, and SCOPE's rewriter")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this file")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads for LongCodeZip's scorer")
    parser.add_argument("--task", action="append", default=None, help="code: only this task id (repeatable)")
    parser.add_argument("--context-lines", type=int, default=None,
                        help="code: only the last N lines of each task's context")
    parser.add_argument("--signals", choices=["structure", "ami", "structure+ami"], default="structure",
                        help="code: LongCodeZip's ranking signals")
    parser.add_argument("--compress-model", default=None, metavar="PATH",
                        help="code: GGUF file LongCodeZip scores with (default: the embedded Gemma 3 270M)")
    parser.add_argument("--cache-db", type=Path, default=None,
                        help="code: a DuckDB file whose llm_calls journal caches the model's scores across runs")
    parser.add_argument("--jsonl", type=Path, default=None, help="code: append each task's row to this file as it finishes")
    parser.add_argument("--no-prompt-pass", action="store_true", help="code: skip timing one prompt pass per task")
    parser.add_argument("--no-rerun", action="store_true", help="code: skip the cached re-run")
    parser.add_argument("--story-words", type=int, default=None, help="prose: only each story's first N words")
    parser.add_argument("--quick", action="store_true",
                        help="a small sample: " + ", ".join(f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                                                   for k, v in QUICK.items()))
    args = parser.parse_args(argv)
    apply_quick(parser, args, QUICK)
    from pipelines.embeddings import offline_environment

    offline_environment()
    report: dict = {}
    if args.part in ("code", "all"):
        bench_code(args.code_ratio, args.limit, args.model, report, args.threads, args.start, args.every,
                   args.context_lines, args.task, args.signals, args.cache_db, not args.no_prompt_pass,
                   not args.no_rerun, args.jsonl, args.compress_model)
    if args.part in ("prose", "all"):
        bench_prose(args.prose_ratio, args.limit, args.model, report, args.start, args.attempts, args.story_words)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
