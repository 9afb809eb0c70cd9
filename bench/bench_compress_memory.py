"""Peak memory of LongCodeZip's paper method on the largest stdlib task.

The paper's method asks the most of the model: every function ranked by AMI
(PPL(q) - PPL(q | function)) and the kept ones pruned by line perplexities,
which need a log-prob at every token. The peak is read from the process's
own VmHWM (llama.cpp's buffers included, which tracemalloc cannot see), and
reported above the RSS the loaded model already holds.

    python bench/bench_compress_memory.py [--task ID] [--ratio 0.3]

Needs ../shared/data (the 15 stdlib tasks); falls back to tests/data's four.
Runs for several minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from benchlib import LOCAL, SHARED, data_file, table

TASKS = Path("code") / "stdlib_funccomp" / "tasks.jsonl"


def status_bytes(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def load_task(task_id: str | None) -> dict:
    path = data_file(SHARED / TASKS, LOCAL / TASKS)
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if task_id is None:
        return max(rows, key=lambda r: len(r["context"]))
    return next(r for r in rows if r["task_id"] == task_id)


def paper_settings():
    """AMI over every function and the fine stage on, whatever this version's defaults are."""
    from pipelines.compress.longcodezip import LongCodeZipSettings

    wanted = {"signals": "ami", "fine_grained": True}
    names = {f.name for f in dataclasses.fields(LongCodeZipSettings)}
    return LongCodeZipSettings(**{k: v for k, v in wanted.items() if k in names})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default=None, help="a task_id (default: the one with the longest context)")
    parser.add_argument("--ratio", type=float, default=0.3)
    args = parser.parse_args()

    from pipelines.compress.longcodezip import LongCodeZip
    from pipelines.llm.logprobs import default_scorer

    t = load_task(args.task)
    scorer = default_scorer()
    scorer.tokenize("warm up")
    loaded = status_bytes("VmRSS")
    started = time.perf_counter()
    result = LongCodeZip(scorer, scorer.count_tokens, paper_settings()).compress(t["context"], t["query"], args.ratio)
    seconds = time.perf_counter() - started
    mib = 2**20
    peak = status_bytes("VmHWM")
    print(table(["task", "context tokens", "kept tokens", "RSS, model loaded (MiB)", "peak RSS (MiB)",
                 "peak above the model (MiB)", "seconds"],
                [[t["task_id"], result.original_tokens, result.compressed_tokens, round(loaded / mib),
                  round(peak / mib), round((peak - loaded) / mib), round(seconds, 1)]]))


if __name__ == "__main__":
    main()
