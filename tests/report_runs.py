"""A store with real runs to draw a report from: SQuALITY stories summarized
by both workflows and the extractive baseline, scored with ROUGE against the
human references, the coverage profile (the packaged MiniLM), and the two
LLM-judged metrics answered by a scripted judge (deterministic, varied
verdicts: the report must show errors, not only clean sentences).

Used by tests/test_report.py and bench/bench_report.py (which also makes the
README's screenshot). `hand_made_store` writes rows directly instead: every way
a run ends and every kind of judge, in seconds."""

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


TINY_JUDGE = "llamacpp:gemma-3-270m"  # how a score judged by the embedded tiny base model records its judge
API_JUDGE = "openai:gpt-4o-mini"


class TinyNamedJudge(ScriptedBackend):
    """The scripted judge under the embedded tiny model's name: the report marks a score by the judge
    stored with it (scores.config 'model'), and storing that name needs no model."""

    backend = "llamacpp"

    def __init__(self, answer=judge_answer, context_window: int = 8192):
        super().__init__(answer, context_window, model=TINY_JUDGE.partition(":")[2])


def fill_store(store: Store, stories: int = 2, methods=METHODS, summary_words: int = 90,
               tiny_judged=()) -> list[str]:
    """Summarize and score; returns the run ids. The runs of the methods in `tiny_judged` are
    judged under the tiny model's name (TinyNamedJudge), the others under the scripted one's."""
    items = squality_items(SQUALITY, stories)
    backend = ScriptedBackend(context_window=4096)
    run_ids, jobs, tiny = [], [], []
    for item in items:
        for method in methods:
            config = RunConfig(method=method, model="scripted", chunk_size=700, summary_words=summary_words)
            result = summarize_document(item.document, config, store,
                                        backend=None if method == "extractive" else backend)
            run_ids.append(result.run_id)
            jobs.append(ScoreJob(result.run_id, list(item.references), list(item.reference_ids)))
            tiny.append(method in tiny_judged)
    score_runs(store, jobs, ["rouge", "coverage"], options=ScoringOptions(label="report"))
    journal = DuckDBJournal(store)
    judges = {False: RecordingLLM(ScriptedBackend(judge_answer, context_window=8192), journal),
              True: RecordingLLM(TinyNamedJudge(), journal)}
    for job, by_tiny in zip(jobs, tiny):
        score_runs(store, [ScoreJob(job.run_id)], ["booookscore", "faithfulness"], llm=judges[by_tiny],
                   options=ScoringOptions(label="report"))
    return run_ids


def memory_llm(answer=judge_answer) -> RecordingLLM:
    return RecordingLLM(ScriptedBackend(answer, context_window=8192), MemoryJournal())


def hand_made_store(store: Store) -> dict[str, str]:
    """Runs written row by row as the store holds them, without summarizing (seconds, not minutes):
    every way a run ends and every judge a score can have. Returns name -> run id.

    - base-ok: the extractive baseline over 3 chunks, BooookScore by an API judge (one sentence flagged)
    - base-failed: a baseline run that failed before it began, with no model (as stores before the
      evaluation harness named the baseline's model wrote it)
    - hier-ok: hierarchical, a final summary nobody judged (ROUGE only)
    - hier-degraded: hierarchical, degraded, faithfulness by the tiny model (claims)
    - hier-failed: hierarchical, failed
    - inc-failed: incremental with no model, failed (a configuration none of whose runs finished)
    """
    from pipelines.store import utc
    from pipelines.summarize.extractive import MODEL_NAME

    def run(name, method, model, status, started):
        return {"run_id": name, "doc_id": "doc", "document_path": "/books/ship.txt", "method": method,
                "model": model, "chunk_size": 700, "summary_words": 40, "status": status, "started_at": utc(started),
                "seconds": 1.0, "error": "cannot read: the file vanished" if status == "failed" else None}

    store.insert_rows("documents", [{"doc_id": "doc", "path": "/books/ship.txt", "title": "The Ship"}])
    store.insert_rows("runs", [
        run("base-ok", "extractive", MODEL_NAME, "ok", 1), run("base-failed", "extractive", None, "failed", 2),
        run("hier-ok", "hierarchical", API_JUDGE, "ok", 3), run("hier-degraded", "hierarchical", API_JUDGE, "degraded", 4),
        run("hier-failed", "hierarchical", API_JUDGE, "failed", 5), run("inc-failed", "incremental", None, "failed", 6)])
    chunks = ["The ship left port at dawn. ", "A storm broke the mast. ", "The crew swam home."]
    store.insert_rows("chunks", [{"run_id": "base-ok", "idx": i, "start_char": 0, "end_char": len(t), "n_tokens": 6,
                                  "text": t} for i, t in enumerate(chunks)])
    summary = "The ship left port. The crew swam home."

    def final(run_id, kind, last):
        return {"summary_id": f"{run_id}-final", "run_id": run_id, "level": 0 if kind == "extractive" else 1, "idx": 0,
                "kind": kind, "text": summary, "n_words": 8, "first_chunk": 0, "last_chunk": last, "is_final": True,
                "degraded": False, "salvaged": False, "attempts": 1, "created_at": utc(10)}

    store.insert_rows("summaries", [final("base-ok", "extractive", 2), final("hier-ok", "merge", 0),
                                    final("hier-degraded", "merge", 0)])
    store.insert_rows("booookscore_annotations", [
        {"run_id": "base-ok", "summary_id": "base-ok-final", "sentence_num": n, "sentence": s, "flagged": n == 2,
         "types": ["discontinuity"] if n == 2 else [], "questions": "Why swim?" if n == 2 else None,
         "config_hash": "b1", "created_at": utc(11)} for n, s in ((1, "The ship left port."), (2, "The crew swam home."))])
    store.insert_rows("claims", [{"run_id": "hier-degraded", "summary_id": "hier-degraded-final", "claim_num": 1,
                                  "sentence_num": 1, "sentence": "The ship left port.", "claim": "The ship left port.",
                                  "label": "Yes", "evidence": ["The ship left port at dawn."], "chunk_ids": [0],
                                  "judge_model": TINY_JUDGE, "config_hash": "f1", "created_at": utc(11)}])

    def score(run_id, metric, variant, value, aggregate=None, model=None):
        return {"run_id": run_id, "summary_id": f"{run_id}-final", "metric": metric, "variant": variant,
                "aggregate": aggregate, "value": value, "config": {"model": model} if model else {},
                "created_at": utc(12)}

    store.insert_rows("scores", [
        score("base-ok", "rouge1", "f", 0.20, "max"), score("hier-ok", "rouge1", "f", 0.30, "max"),
        score("hier-degraded", "rouge1", "f", 0.10, "max"),
        score("base-ok", "booookscore", "score", 0.5, model=API_JUDGE),
        score("hier-degraded", "faithfulness", "n_yes", 1, model=TINY_JUDGE),
        score("hier-degraded", "faithfulness", "n_partial", 0, model=TINY_JUDGE),
        score("hier-degraded", "faithfulness", "judged", 1, model=TINY_JUDGE)])
    return {name: name for (name,) in store.execute("SELECT run_id FROM runs ORDER BY started_at")}
