"""BERTScore throughput on SQuALITY dev, summaries vs references.

Each plot answer is scored as a summary against the story's three other
answers: all pairs go through one loaded model in one batched call (each
distinct text embedded once, windows length-sorted into batches). Printed
beside it, on the same pairs and model: bert-score's own `score()`, which
truncates every text to 512 word pieces (how many texts that cuts, and by
how much, is printed too).

Default model: the packaged all-MiniLM-L6-v2, layer 6 (offline). Usage:

    python bench/bench_bertscore.py [--stories N] [--batch-size 16] [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from benchlib import LOCAL, SHARED, data_file, table  # noqa: E402 (puts the repository on sys.path)




def _fmt(value) -> str:
    return f"{value:,.3f}" if isinstance(value, float) else str(value)

def pairs(stories: int | None) -> tuple[list[str], list[str], str]:
    path = data_file(SHARED / "squality" / "dev.jsonl", LOCAL / "squality" / "dev_subset.jsonl")
    cands, refs, n = [], [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if stories is not None and n >= stories:
            break
        n += 1
        answers = [r["response_text"].strip() for r in json.loads(line)["questions"][0]["responses"]]
        for i, answer in enumerate(answers):
            for j, other in enumerate(answers):
                if i != j:
                    cands.append(answer)
                    refs.append(other)
    return cands, refs, f"{path.name}: {n} stories"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stories", type=int, default=None, help="only the first N stories")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-reference", action="store_true", help="do not time bert-score's own score()")
    args = parser.parse_args()

    from pipelines.embeddings import offline_environment

    offline_environment()
    import torch

    cands, refs, what = pairs(args.stories)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"BERTScore, all-MiniLM-L6-v2 layer 6, CPU ({cores} cores, torch threads {torch.get_num_threads()})")
    print(f"{what}, {len(cands)} pairs (summary vs one reference), {len(set(cands + refs))} distinct texts")

    from scoring.bertscore import BertScorer

    started = time.perf_counter()
    scorer = BertScorer(batch_size=args.batch_size)
    load_s = time.perf_counter() - started
    distinct = list(dict.fromkeys(cands + refs))
    lengths = [len(scorer._content_ids(t)) for t in distinct]
    windows = sum(scorer.windows_used(t) for t in distinct)
    capacity = scorer.window - scorer._n_special
    over = [n for n in lengths if n > capacity]

    started = time.perf_counter()
    ours = scorer.score(cands, refs)
    ours_s = time.perf_counter() - started
    rows = [["longsum (windows, whole text)", len(cands), windows, ours_s, len(cands) / ours_s]]
    diff = None
    if not args.skip_reference:
        import bert_score

        from pipelines.embeddings import packaged_model_dir

        reference = bert_score.BERTScorer(model_type=packaged_model_dir(), num_layers=6, batch_size=64)
        started = time.perf_counter()
        _, _, f1 = reference.score(cands, refs)
        ref_s = time.perf_counter() - started
        rows.append(["bert-score score() (truncates)", len(cands), len(distinct), ref_s, len(cands) / ref_s])
        diff = max(abs(a.f1 - b) for a, b in zip(ours, f1.tolist()))
    print(f"model load {load_s:.1f} s (once per process)")
    print(f"texts over the {capacity}-piece window: {len(over)} of {len(distinct)} "
          f"(longest {max(lengths)} pieces; bert-score drops {sum(n - capacity for n in over)} pieces in all)\n")
    print(table(["implementation", "pairs", "windows", "seconds", "pairs/s"], rows, fmt=_fmt))
    if diff is not None:
        print(f"\nlargest F1 difference, windowed vs truncated: {diff:.4f}")


if __name__ == "__main__":
    main()
