"""Does llama.cpp's multi-sequence batching pay on these cores? Aggregate
prefill and generation tokens per second when N independent sequences (a
level's chunk summaries) share one context and each decode call advances
all of them by one token.

Each sequence gets its own prompt (consecutive parts of A Scandal in
Bohemia, `--prompt-tokens` each), evaluated one after another in batches of
512 tokens, as a run evaluates its steps' prompts today; then `--gen-tokens`
greedy tokens are generated for all N at once (one llama_batch of N tokens,
seq ids 0..N-1, a unified KV cache). N = 1 is today's one-at-a-time
generation. What N sequences cost one at a time is N times the N = 1 row;
the table's last column compares that with doing them together.

    python bench/bench_batching.py [--model qwen2.5-coder-1.5b-instruct] [--prompt-tokens 1024] [--gen-tokens 64] [--sequences 1 2 4 6]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from benchlib import book, table  # noqa: E402

from pipelines.llm.llamacpp import load_llama, model_file  # noqa: E402

BATCH = 512


def context_for(llama, n_ctx: int, sequences: int):
    """A second context on the loaded model's weights, with room for `sequences` sequences."""
    import llama_cpp
    from llama_cpp import _internals as internals

    params = llama_cpp.llama_context_default_params()
    params.n_ctx = n_ctx
    params.n_batch = params.n_ubatch = BATCH
    params.n_seq_max = sequences
    params.kv_unified = True
    params.n_threads = params.n_threads_batch = len(os.sched_getaffinity(0))
    return internals.LlamaContext(model=llama._model, params=params, verbose=False)


def measure(llama, prompts: list[list[int]], gen_tokens: int) -> tuple[float, float]:
    """(prefill t/s, aggregate generation t/s) for these prompts, generated together."""
    import llama_cpp
    import numpy as np

    n = len(prompts)
    ctx = context_for(llama, n * (len(prompts[0]) + gen_tokens + 8), n)
    batch = llama_cpp.llama_batch_init(BATCH, 0, n)
    vocab = llama.n_vocab()
    try:
        def decode(items):  # items: (token, position, sequence, wants logits)
            batch.n_tokens = len(items)
            for i, (token, pos, seq, logits) in enumerate(items):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, pos, 1
                batch.seq_id[i][0], batch.logits[i] = seq, logits
            if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")

        def greedy(i: int) -> int:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx.ctx, i), shape=(vocab,))
            return int(row.argmax())

        started = time.perf_counter()
        last = []
        for seq, tokens in enumerate(prompts):
            for at in range(0, len(tokens), BATCH):
                part = tokens[at:at + BATCH]
                decode([(t, at + k, seq, at + k == len(tokens) - 1) for k, t in enumerate(part)])
            last.append(greedy(len(part) - 1))
        prefill = sum(map(len, prompts)) / (time.perf_counter() - started)
        started = time.perf_counter()
        positions = [len(p) for p in prompts]
        for _ in range(gen_tokens):
            decode([(last[s], positions[s], s, True) for s in range(n)])
            last = [greedy(s) for s in range(n)]
            positions = [p + 1 for p in positions]
        generation = n * gen_tokens / (time.perf_counter() - started)
    finally:
        llama_cpp.llama_batch_free(batch)
        ctx.close()
    return prefill, generation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct", help="an embedded model or a GGUF path")
    parser.add_argument("--prompt-tokens", type=int, default=1024)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--sequences", type=int, nargs="+", default=[1, 2, 4, 6])
    args = parser.parse_args()
    path, _ = model_file(args.model)
    llama, _ = load_llama(path, n_ctx=512)
    text = book("doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=False)
    rows, single = [], None
    for n in args.sequences:
        prompts = [tokens[k * args.prompt_tokens:(k + 1) * args.prompt_tokens] for k in range(n)]
        if any(len(p) < args.prompt_tokens for p in prompts):
            raise SystemExit(f"the story has too few tokens for {n} prompts of {args.prompt_tokens}")
        prefill, generation = measure(llama, prompts, args.gen_tokens)
        single = single if single is not None else generation
        alone = n * args.prompt_tokens / prefill + n * args.gen_tokens / single
        together = n * args.prompt_tokens / prefill + n * args.gen_tokens / generation
        rows.append([n, f"{prefill:.1f}", f"{generation:.1f}", f"{generation / single:.2f}x",
                     f"{alone:.1f}", f"{together:.1f}", f"{together / alone:.2f}x"])
    print(f"{path.name}: {args.prompt_tokens} prompt tokens and {args.gen_tokens} generated per sequence, "
          f"{len(os.sched_getaffinity(0))} threads\n")
    print(table(["sequences", "prefill t/s", "generation t/s (all)", "generation vs one", "s one at a time",
                 "s together", "together / one at a time"], rows))


if __name__ == "__main__":
    main()
