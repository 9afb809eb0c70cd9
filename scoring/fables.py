"""FABLES (Kim et al. 2024): the released faithfulness annotations, and a
judge's agreement with them.

The release (`FABLES.json`, MIT; also read from the released `.zip` or a
`.gz`/`.xz` copy) holds, for 26 books published in 2023-24, summaries by
five LLMs (hierarchical merging) broken into 3,158 claims, each labelled by
readers of the book as Yes / PartialSupport / No / Inapplicable with
evidence quotes and reasons, and a general comment per summary:

    {"canary": ..., "FABLES": {book: {model: {"summary", "general_comment",
        "claims": {"0": {"claim", "label", "evidence": [...], "reason": [...]}}}}}}

`import_fables` writes them into the store's `claims` (source `import`),
`claim_summaries` and `scores` tables, one run per model
(`import:LABEL:MODEL`, one summary per book), so the released labels sit
beside a judge's labels and are queried the same way.

`evaluate_judge` asks a judge to label released claims with the annotators'
evidence quotes as the passages (the books are not public), through the
same judge prompt and parser as the faithfulness checker, and reports
agreement with the human labels: accuracy, balanced accuracy (mean recall
over the human labels present) and precision / recall on `No`, the label
that matters most and that FABLES found LLM raters worst at.
"""

from __future__ import annotations

import gzip
import json
import lzma
import random
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from scoring.faithfulness import LABELS, Claim, FaithfulnessChecker, claim_rows

DEFAULT_LABEL = "fables"
SAMPLE_SEED = 0


class FablesError(ValueError):
    pass


@dataclass
class FablesSummary:
    book: str
    model: str
    text: str
    general_comment: str | None
    claims: list[Claim]


def read_release(path: str | Path) -> dict:
    """The release's JSON object, from .json, .json.gz, .json.xz or the released .zip."""
    path = Path(path)
    if not path.is_file():
        raise FablesError(f"{path}: no such file")
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(".json") and not n.startswith("__MACOSX")]
                if not names:
                    raise FablesError(f"{path}: no .json file in the archive")
                raw = archive.read(names[0])
        elif path.suffix == ".gz":
            raw = gzip.decompress(path.read_bytes())
        elif path.suffix == ".xz":
            raw = lzma.decompress(path.read_bytes())
        else:
            raw = path.read_bytes()
        return json.loads(raw.decode("utf-8"))
    except (zipfile.BadZipFile, OSError, lzma.LZMAError, EOFError) as exc:
        raise FablesError(f"{path}: cannot read it ({exc})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FablesError(f"{path}: not JSON ({exc})") from None


def load_release(path: str | Path) -> list[FablesSummary]:
    data = read_release(path)
    books = data.get("FABLES") if isinstance(data, dict) else None
    if not isinstance(books, dict) or not books:
        raise FablesError(f"{path}: expected the FABLES release format (an object with a 'FABLES' key of books)")
    out = []
    for book, models in books.items():
        if not isinstance(models, dict):
            raise FablesError(f"{path}: book {book!r} is not an object of models")
        for model, entry in models.items():
            if not isinstance(entry, dict) or not isinstance(entry.get("claims"), dict):
                raise FablesError(f"{path}: {book!r} / {model!r} has no claims object")
            claims = []
            for key in sorted(entry["claims"], key=_number):
                item = entry["claims"][key]
                label = item.get("label") if isinstance(item, dict) else None
                if label not in LABELS or not isinstance(item.get("claim"), str):
                    raise FablesError(f"{path}: {book!r} / {model!r} claim {key}: no claim text or an unknown label {label!r}")
                claims.append(Claim(
                    claim_num=_number(key) + 1, sentence_num=None, sentence=None, claim=item["claim"], status="imported",
                    label=label, evidence=tuple(q for q in _strings(item.get("evidence")) if q.strip()),
                    reason=tuple(r for r in _strings(item.get("reason")) if r.strip()),
                ))
            out.append(FablesSummary(str(book), str(model), str(entry.get("summary") or ""),
                                     entry.get("general_comment") or None, claims))
    if not out:
        raise FablesError(f"{path}: no summaries")
    return out


def _number(key) -> int:
    try:
        return int(key)
    except (TypeError, ValueError):
        return 10**9


def _strings(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if v is not None]


# -- import ---------------------------------------------------------------------------


@dataclass
class ModelShare:
    model: str
    run_id: str
    summaries: int
    claims: int
    counts: Counter

    def share(self, *labels: str) -> float:
        return sum(self.counts[label] for label in labels) / self.claims if self.claims else 0.0


def import_fables(store, path: str | Path, label: str | None = None) -> list[ModelShare]:
    """Write the release into the store (re-importing a label replaces it); per-model shares, best first."""
    from pipelines.store import utc
    from scoring.booookscore import file_sha256
    from scoring.faithfulness import FaithfulnessResult
    from scoring.records import config_hash, score_row, write

    summaries = load_release(path)
    label = label or DEFAULT_LABEL
    config = {"source": "fables-released-annotations", "file": Path(path).name, "sha256": file_sha256(path)}
    digest = config_hash(config)
    created = utc()
    rows, claims, summary_rows = [], [], []
    by_model: dict[str, ModelShare] = {}
    for summary in summaries:
        run_id = f"import:{label}:{summary.model}"
        result = FaithfulnessResult(summary.claims, config)
        rows += [score_row(run_id, summary.book, "faithfulness", variant, value, config, created, label=label)
                 for variant, value in result.values()]
        claims += claim_rows(run_id, summary.book, summary.claims, source="import", judge_model="human",
                             config_hash=digest, created=created, set_label=label)
        summary_rows.append({
            "run_id": run_id, "summary_id": summary.book, "set_label": label, "source": "import", "book": summary.book,
            "model": summary.model, "text": summary.text, "general_comment": summary.general_comment,
            "n_claims": len(summary.claims), "created_at": created,
        })
        share = by_model.setdefault(summary.model, ModelShare(summary.model, run_id, 0, 0, Counter()))
        share.summaries += 1
        share.claims += len(summary.claims)
        share.counts.update(c.label for c in summary.claims)
    with store.connect() as con:
        con.execute("BEGIN TRANSACTION")
        try:
            for table in ("scores", "claims", "claim_summaries"):
                con.execute(f"DELETE FROM {table} WHERE run_id LIKE ? || '%'", [f"import:{label}:"])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    write(store, rows, claims=claims)
    store.insert_rows("claim_summaries", summary_rows)
    return sorted(by_model.values(), key=lambda s: -s.share("Yes"))


# -- judge meta-evaluation ---------------------------------------------------------------


@dataclass
class Agreement:
    n: int
    unparseable: int
    accuracy: float | None
    balanced_accuracy: float | None
    no_precision: float | None
    no_recall: float | None
    confusion: dict = field(default_factory=dict)  # (human, judge or None) -> count

    def values(self) -> list[tuple[str, float | None]]:
        return [("accuracy", self.accuracy), ("balanced_accuracy", self.balanced_accuracy),
                ("no_precision", self.no_precision), ("no_recall", self.no_recall), ("claims", self.n),
                ("unparseable", self.unparseable)]


def agreement(pairs: list[tuple[str, str | None]]) -> Agreement:
    """Agreement of (human, judge) labels; an unparseable verdict (None) counts as wrong."""
    n = len(pairs)
    confusion = Counter(pairs)
    correct = sum(1 for human, judged in pairs if human == judged)
    recalls = []
    for label in LABELS:
        gold = [j for h, j in pairs if h == label]
        if gold:
            recalls.append(sum(1 for j in gold if j == label) / len(gold))
    predicted_no = sum(1 for _, j in pairs if j == "No")
    human_no = sum(1 for h, _ in pairs if h == "No")
    both_no = confusion[("No", "No")]
    return Agreement(
        n=n, unparseable=sum(1 for _, j in pairs if j is None), accuracy=correct / n if n else None,
        balanced_accuracy=sum(recalls) / len(recalls) if recalls else None,
        no_precision=both_no / predicted_no if predicted_no else None,
        no_recall=both_no / human_no if human_no else None, confusion=dict(confusion),
    )


@dataclass
class JudgeEvaluation:
    run_id: str
    judge_model: str | None
    agreement: Agreement
    claims: list[Claim]
    rows: list[dict]


def sample(summaries: list[FablesSummary], limit: int | None, seed: int = SAMPLE_SEED) -> list[tuple[FablesSummary, Claim]]:
    """Released claims in a fixed shuffled order (so a --limit spans books, models and labels)."""
    pairs = sorted(((s, c) for s in summaries for c in s.claims), key=lambda p: (p[0].book, p[0].model, p[1].claim_num))
    random.Random(seed).shuffle(pairs)
    return pairs[:limit] if limit else pairs


def evaluate_judge(store, summaries: list[FablesSummary], llm, *, limit: int | None = None, concurrency: int = 1,
                   max_attempts: int = 3, label: str = "fables-eval", source_file: str | None = None,
                   run_id: str | None = None, on_progress: Callable[[int, int], None] | None = None) -> JudgeEvaluation:
    """Label released claims with `llm` (a RecordingLLM) against the annotators'
    evidence; store the agreement under `run_id` and return it.

    The evaluation has no `runs` row (nothing was summarized), so its judge
    calls are best journaled without a run id (`summarize check` flags calls
    of unknown runs); each claim row keeps its call's request hash."""
    from pipelines.llm.recording import new_id
    from pipelines.store import utc
    from scoring.records import config_hash, score_row, write

    picked = sample(summaries, limit)
    if not picked:
        raise FablesError("no released claims to judge")
    checker = FaithfulnessChecker(llm, max_attempts=max_attempts, concurrency=concurrency, step="fables-eval")
    judged: list[Claim] = []
    for number, (summary, released) in enumerate(picked, 1):
        judged.append(Claim(
            claim_num=number, sentence_num=None, sentence=None, claim=released.claim, reference_label=released.label,
            evidence=(), reason=(), passages=[{"text": q, "book": summary.book, "model": summary.model}
                                              for q in released.evidence],
            note=f"{summary.book} / {summary.model} claim {released.claim_num - 1}",
        ))
    done = [0]

    def work(claim: Claim) -> None:
        checker.judge(claim)
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0], len(judged))

    checker._each(work, judged)
    result = agreement([(c.reference_label, c.label) for c in judged])
    run_id = run_id or f"eval:{label}:{new_id()[:12]}"
    config = {**checker.config(), "source": source_file, "limit": limit, "sample_seed": SAMPLE_SEED,
              "context": "annotators' evidence quotes"}
    created = utc()
    rows = [score_row(run_id, None, "fables_judge", variant, value, config, created, label=label)
            for variant, value in result.values()]
    write(store, rows, claims=claim_rows(run_id, None, judged, source="eval", judge_model=checker.judge_model,
                                         config_hash=config_hash(config), created=created, set_label=label))
    return JudgeEvaluation(run_id, checker.judge_model, result, judged, rows)


def released_from_store(store, label: str = DEFAULT_LABEL) -> list[FablesSummary]:
    """The claims an earlier `import-fables` wrote (so `eval fables` needs no file)."""
    with store.connect() as con:
        rows = con.execute(
            "SELECT c.run_id, c.summary_id, c.claim_num, c.claim, c.label, c.evidence, c.reason, s.model, s.text, "
            "s.general_comment FROM claims c JOIN claim_summaries s USING (run_id, summary_id) "
            "WHERE c.source = 'import' AND c.set_label = ? ORDER BY s.book, s.model, c.claim_num", [label],
        ).fetchall()
    grouped: dict[tuple, FablesSummary] = {}
    for run_id, book, num, claim, lab, evidence, reason, model, text, comment in rows:
        summary = grouped.setdefault((book, model), FablesSummary(book, model, text, comment, []))
        summary.claims.append(Claim(claim_num=num, sentence_num=None, sentence=None, claim=claim, status="imported",
                                    label=lab, evidence=tuple(json.loads(evidence or "[]")),
                                    reason=tuple(json.loads(reason or "[]"))))
    return list(grouped.values())
