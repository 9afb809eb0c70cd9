"""A store with real runs to draw a report from: SQuALITY stories summarized
by both workflows and the extractive baseline, scored with ROUGE against the
human references, the coverage profile (the packaged MiniLM), and the two
LLM-judged metrics answered by a scripted judge (deterministic, varied
verdicts: the report must show errors, not only clean sentences).

Used by tests/test_report.py and bench/bench_report.py (which also makes the
README's screenshot)."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

from pipelines.corpus import squality_items
from pipelines.llm.recording import MemoryJournal, RecordingLLM
from pipelines.runner import RunConfig, summarize_document
from pipelines.store import DuckDBJournal, Store
from scoring import ScoreJob, ScoringOptions, score_runs
from scripted import ScriptedBackend, echo_answer

SQUALITY = Path(__file__).parent / "data" / "squality" / "dev_subset.jsonl"
METHODS = ("hierarchical", "incremental", "extractive")
ERROR_TYPES = ("entity omission", "causal omission", "discontinuity", "duplication")


def _tagged(content: str, tag: str) -> str:
    match = re.search(rf"<{tag}>(.*?)</{tag}>", content, re.S)
    return match.group(1).strip() if match else ""


def _pick(text: str, n: int) -> int:
    return zlib.crc32(text.encode("utf-8")) % n


def judge_answer(request) -> str:
    """Answers the BooookScore and faithfulness prompts as a capable judge would
    (in their formats), with verdicts that vary by sentence."""
    system, content = request.messages[0]["content"], request.messages[-1]["content"]
    if system.startswith("You review book summaries for coherence"):
        sentence = _tagged(content, "sentence")
        kind = _pick(sentence, 5)
        if kind < 3:
            return "Questions: none\nTypes: none"
        words = [w for w in sentence.split() if w[:1].isupper()] or ["this"]
        return f"Questions: Who or what is {words[-1].strip('.,;')}, and why does it matter here?\nTypes: {ERROR_TYPES[_pick(sentence, 4)]}"
    if system.startswith("You break"):
        sentence = _tagged(content, "sentence")
        parts = [p.strip(" .") for p in re.split(r",| and ", sentence) if len(p.split()) >= 3][:3] or [sentence]
        return "\n".join(f"- {p}." for p in parts)
    if system.startswith("You check claims"):
        claim = _tagged(content, "sentence")
        label = ("Yes", "Yes", "PartialSupport", "No")[_pick(claim, 4)]
        passage = _tagged(content, "excerpt")
        quote = " ".join(passage.split()[:12])
        return f"Label: {label}\nEvidence: \"{quote}\"" if label != "No" else "Label: No\nEvidence: none"
    return echo_answer(request)


def fill_store(store: Store, stories: int = 2, methods=METHODS, summary_words: int = 90) -> list[str]:
    """Summarize and score; returns the run ids."""
    items = squality_items(SQUALITY, stories)
    backend = ScriptedBackend(context_window=4096)
    run_ids, jobs = [], []
    for item in items:
        for method in methods:
            config = RunConfig(method=method, model="scripted", chunk_size=700, summary_words=summary_words)
            result = summarize_document(item.document, config, store,
                                        backend=None if method == "extractive" else backend)
            run_ids.append(result.run_id)
            jobs.append(ScoreJob(result.run_id, list(item.references), list(item.reference_ids)))
    score_runs(store, jobs, ["rouge", "coverage"], options=ScoringOptions(label="report"))
    judge = RecordingLLM(ScriptedBackend(judge_answer, context_window=8192), DuckDBJournal(store))
    for job in jobs:
        score_runs(store, [ScoreJob(job.run_id)], ["booookscore", "faithfulness"], llm=judge,
                   options=ScoringOptions(label="report"))
    return run_ids


def memory_llm(answer=judge_answer) -> RecordingLLM:
    return RecordingLLM(ScriptedBackend(answer, context_window=8192), MemoryJournal())
