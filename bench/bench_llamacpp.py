"""This machine's ceiling for an embedded model under llama.cpp: prompt
(prefill) and generation tokens per second, measured on real text.

The prompt is the opening of A Scandal in Bohemia, evaluated once from an
empty KV cache (`--prompt-tokens` of it); generation continues it greedily
for `--gen-tokens` tokens, one token per decode as a summary is written.
Compare a run's prompt tokens / prompt t/s + output tokens / generation t/s
with its wall time to see what is left to gain.

    python bench/bench_llamacpp.py [--model qwen2.5-coder-1.5b-instruct] [--prompt-tokens 2048] [--gen-tokens 128]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from benchlib import book, table  # noqa: E402

from pipelines.llm.llamacpp import load_llama, model_file  # noqa: E402


def measure(model: str, prompt_tokens: int, gen_tokens: int, repeats: int) -> list:
    path, _ = model_file(model)
    llama, lock = load_llama(path, n_ctx=prompt_tokens + gen_tokens + 16)
    text = book("doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    tokens = llama.tokenize(text.encode("utf-8"), add_bos=True)[:prompt_tokens]
    prefill, decode = [], []
    with lock:
        for _ in range(repeats):
            llama.reset()
            llama._ctx.kv_cache_clear()
            started = time.perf_counter()
            llama.eval(tokens)
            prefill.append(len(tokens) / (time.perf_counter() - started))
            started = time.perf_counter()
            for _ in range(gen_tokens):
                token = llama.sample(temp=0.0)
                llama.eval([token])
            decode.append(gen_tokens / (time.perf_counter() - started))
    return [path.name, len(tokens), round(max(prefill), 1), round(min(prefill), 1), gen_tokens,
            round(max(decode), 1), round(min(decode), 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b-instruct", help="an embedded model or a GGUF path")
    parser.add_argument("--prompt-tokens", type=int, default=2048)
    parser.add_argument("--gen-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    row = measure(args.model, args.prompt_tokens, args.gen_tokens, args.repeats)
    print(table(["model", "prompt tokens", "prompt t/s best", "prompt t/s worst", "generated",
                 "generation t/s best", "generation t/s worst"], [row]))


if __name__ == "__main__":
    main()
