"""Faithfulness checker on llama.cpp: claims per minute with the shared part
of each prompt first (KV prefix reuse) and with what varies first.

The source is a SQuALITY story (two chunks); the summary is the first
`--sentences` sentences of one of its human reference summaries. Two
orderings of the same two templates are compared:

* shared first (the shipped prompts): instructions, worked examples and, for
  claim extraction, the whole summary come first; the sentence or the
  claim and its passages come last, so llama.cpp reuses the KV cache of
  the previous call for everything but the tail;
* varying first: the same text with the varying part moved to the top of
  the system message (and a one-line pointer to it at the end), so no two
  consecutive prompts share more than a few tokens.

Each ordering runs on its own loaded copy of the model (a separate KV
cache), with a fresh in-memory journal (nothing replayed) and one attempt
per call. As in `FaithfulnessChecker.check`, every sentence is broken into
claims first, then every claim is judged; the two orderings alternate call
by call so machine load hits both alike, and both judge the same claims
(those the shipped prompt extracted). Printed: seconds per extraction and
per judge call, prompt tokens sent and reused from the KV cache, and claims
per minute (the shared claims / (extraction time + judging time)), and for
the judging alone. Usage:

    python bench/bench_faithfulness.py [--sentences 3] [--story 1] [--evidence-k 3]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import re
import time

from benchlib import LOCAL, SHARED, data_file, table  # noqa: E402 (puts the repository on sys.path)

_HEADER = re.compile(r"^### (system|user|assistant)( \(varies\))?[ \t]*$", re.MULTILINE)


def varying_first(template, pointer: str):
    """The template with its varying block moved to the top of the system message."""
    from prompts import PromptTemplate

    headers = list(_HEADER.finditer(template.text))
    blocks = []
    for here, nxt in zip(headers, headers[1:] + [None]):
        body = template.text[here.end():nxt.start() if nxt else len(template.text)].strip("\n")
        blocks.append((here.group(1), bool(here.group(2)), body))
    varying = next(body for _, varies, body in blocks if varies)
    system = next(body for role, _, body in blocks if role == "system")
    rest = [(role, body) for role, varies, body in blocks if role != "system" and not varies]
    text = f"### system\n{varying}\n\n{system}\n" + "".join(f"### {role}\n{body}\n" for role, body in rest)
    text += f"### user\n{pointer}\n"
    return PromptTemplate(name=f"{template.name}_varying_first", text=text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=3, help="summary sentences to check")
    parser.add_argument("--story", type=int, default=1, help="row of the SQuALITY file")
    parser.add_argument("--evidence-k", type=int, default=3)
    args = parser.parse_args()

    import prompts
    from pipelines.llm.base import CompletionRequest
    from pipelines.llm.llamacpp import DEFAULT_CONTEXT_WINDOW, LlamaCppBackend
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from pipelines.text import sentences
    from pipelines.retrieval import SourceIndex, passages_from_chunks
    from scoring.faithfulness import FaithfulnessChecker

    path = data_file(SHARED / "squality" / "dev.jsonl", LOCAL / "squality" / "dev_subset.jsonl")
    row = json.loads(path.read_text(encoding="utf-8").splitlines()[args.story])
    story = row["document"]
    summary = " ".join(sentences(row["questions"][0]["responses"][0]["response_text"])[: args.sentences])
    half = story.index("\n", len(story) // 2) + 1
    index = SourceIndex(passages_from_chunks([(0, 0, story[:half]), (1, half, story[half:])]))

    extract, judge = prompts.load("faithfulness_claims"), prompts.load("faithfulness_judge")
    # Two loaded copies of the model: backends share one Llama per (file, context size), and the
    # context never shrinks below the default, so the sizes must differ above it.
    modes = {
        "shared first": (LlamaCppBackend(None, context_window=DEFAULT_CONTEXT_WINDOW + 2), extract, judge),
        "varying first": (LlamaCppBackend(None, context_window=DEFAULT_CONTEXT_WINDOW + 4),
                          varying_first(extract, "Break down the sentence given at the top."),
                          varying_first(judge, "Label the claim given at the top against its passages.")),
    }
    checkers = {}
    for name, (backend, ex, ju) in modes.items():
        backend.complete(CompletionRequest(messages=({"role": "user", "content": "Hello"},), max_tokens=1))
        checkers[name] = FaithfulnessChecker(RecordingLLM(backend, MemoryJournal()), max_attempts=1,
                                             evidence_k=args.evidence_k, extract_template=ex, judge_template=ju)
    assert modes["shared first"][0]._loaded[0] is not modes["varying first"][0]._loaded[0], "one KV cache for both"
    # Claims first (as check() does: every extraction call, then every judge call), each ordering on
    # its own model copy; the calls alternate between the orderings so machine load hits both alike.
    extract_s = {name: 0.0 for name in modes}
    judge_s = {name: 0.0 for name in modes}
    extracted = {name: [] for name in modes}
    names = list(modes)
    for n, sentence in enumerate(sentences(summary), 1):
        for name in names if n % 2 else reversed(names):
            started = time.perf_counter()
            extracted[name] += checkers[name]._extract_sentence(summary, n, sentence)
            extract_s[name] += time.perf_counter() - started
    after_extract = {name: dataclasses.replace(checkers[name].llm.usage) for name in names}
    extract_calls = {name: after_extract[name].calls for name in names}
    # Both orderings judge the same claims (those of the shipped prompts), so their judge calls
    # differ only in the order of the prompt's parts.
    claims = [c for c in extracted["shared first"] if c.claim is not None]
    checkers["shared first"].retrieve(claims, index)
    copies = {name: [copy.deepcopy(c) for c in claims] for name in names}
    for n in range(len(claims)):
        for name in names if n % 2 == 0 else reversed(names):
            started = time.perf_counter()
            checkers[name].judge(copies[name][n])
            judge_s[name] += time.perf_counter() - started
    rows = []
    for name in names:
        usage = checkers[name].llm.usage
        judged = copies[name]
        labels = "/".join(str(sum(1 for c in judged if c.label == label)) for label in ("Yes", "PartialSupport", "No", "Inapplicable"))
        judge_calls = usage.calls - extract_calls[name]
        total = extract_s[name] + judge_s[name]
        rows.append([name, len(extracted[name]), round(extract_s[name] / max(1, extract_calls[name]), 1), len(judged),
                     labels, round(judge_s[name] / max(1, judge_calls), 1), usage.input_tokens, usage.cached_input_tokens,
                     round(60 * len(judged) / total, 2) if total else "-",
                     round(60 * len(judged) / judge_s[name], 2) if judge_s[name] else "-"])
    phases = []
    for name in names:
        usage, first = checkers[name].llm.usage, after_extract[name]
        for phase, calls, inp, reused, out, secs in (
            ("extract", first.calls, first.input_tokens, first.cached_input_tokens, first.output_tokens, extract_s[name]),
            ("judge", usage.calls - first.calls, usage.input_tokens - first.input_tokens,
             usage.cached_input_tokens - first.cached_input_tokens, usage.output_tokens - first.output_tokens,
             judge_s[name])):
            phases.append([name, phase, calls, inp, reused, out, round(secs, 1), round(secs / max(1, calls), 1)])
    print(f"summary: {len(sentences(summary))} sentences, {len(summary.split())} words; source {len(index.passages)} "
          f"passages; {len(claims)} claims judged by both orderings")
    print(table(["ordering", "claims extracted", "s/extract call", "claims judged", "Y/P/N/I", "s/judge call",
                 "prompt tok", "reused tok", "claims/min", "judged/min"], rows))
    print()
    print(table(["ordering", "phase", "calls", "prompt tok", "reused tok", "output tok", "seconds", "s/call"], phases))
    print("claims/min = the claims both orderings judged / (time to break every sentence into claims + time to "
          "judge them); judged/min counts the judging only; retrieval (MiniLM + BM25) is outside the timings")


if __name__ == "__main__":
    main()
