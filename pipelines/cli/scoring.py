"""The scoring commands of `summarize` (registered by importing this module).

    summarize score RUN_ID --reference REF.txt [--reference ...] --score rouge,bertscore,booookscore
    summarize eval squality dev.jsonl [--limit N] [--method hierarchical] [--model SPEC]
    summarize import-booookscore FILE --label NAME
    summarize score RUN_ID --score faithfulness,coverage [--judge-model SPEC --judge-concurrency N]
    summarize import-fables FABLES.json [--label NAME]
    summarize eval fables [FABLES.json] --judge-model SPEC [--limit N]

Heavy libraries are imported inside the commands, never at module level.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli.common import UserError, db_option, scoring_options
from pipelines.defaults import DEFAULT_MODEL


def options_from(label=None, **kwargs):
    from scoring import ScoringOptions

    return ScoringOptions(
        label=label, rouge_tokenizer=kwargs["rouge_tokenizer"], bertscore_model=kwargs["bertscore_model"],
        bertscore_layer=kwargs["bertscore_layer"], judge_model=kwargs["judge_model"],
        judge_base_url=kwargs["judge_base_url"], booookscore_version=kwargs["booookscore_prompt"],
        booookscore_concurrency=kwargs["judge_concurrency"], faithfulness_concurrency=kwargs["judge_concurrency"],
    )


def judge_notice(metrics, options) -> None:
    from pipelines.llm import is_tiny_model, judge_notice_text

    judged = [name for name, metric in (("BooookScore", "booookscore"), ("faithfulness", "faithfulness"))
              if metric in metrics]
    if judged and is_tiny_model(options.judge_model):
        click.echo(judge_notice_text(judged), err=True)


def read_references(paths) -> tuple[list[str], list[str]]:
    """Reference summaries from files, with their ids; one clear error for a bad file."""
    from scoring import reference_id

    texts, ids = [], []
    for ref in paths:
        ref = Path(ref)
        if not ref.is_file():
            raise UserError(f"{ref}: no such reference file")
        text = ref.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise UserError(f"{ref}: the reference is empty")
        texts.append(text)
        ids.append(reference_id(text, ref.name))
    return texts, ids


def prepare_scoring(references, score_spec: str | None, **option_values):
    """For `summarize FILE --reference ... --score ...`: check the references,
    metrics and options before the run starts, and return the function that
    scores the run once it exists."""
    from scoring import parse_metrics

    texts, ids = read_references(references)
    try:
        metrics = parse_metrics(score_spec) if score_spec else ["rouge", "bertscore"]
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    options = options_from(**option_values)

    def score(store, run_id: str) -> list[dict]:
        judge_notice(metrics, options)
        return _score_and_warn(store, run_id, metrics, texts, ids, options)

    return score


def _score_and_warn(store, run_id: str, metrics, texts, ids, options) -> list[dict]:
    """score_run, with its errors as one-line user errors and its warnings on stderr."""
    import warnings

    from scoring import score_run

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = score_run(store, run_id, metrics, texts or None, reference_ids=ids or None, **vars(options))
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    for warning in caught:
        click.echo(f"summarize: warning: {warning.message}", err=True)
    return rows


def _scoring_errors():
    from scoring import ScoringError
    from scoring.booookscore import CheckerError
    from pipelines.retrieval import EvidenceError
    from scoring.fables import FablesError
    from scoring.faithfulness import FaithfulnessError

    return (ScoringError, CheckerError, EvidenceError, FablesError, FaithfulnessError)


@click.command("score")
@click.argument("run_id")
@click.option("--reference", "references", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A reference summary file (repeat for several; ROUGE and BERTScore need at least one).")
@click.option("--score", "score_spec", default=None, metavar="METRICS",
              help="Comma-separated: rouge, bertscore, booookscore, faithfulness, coverage (default: rouge,bertscore with references, "
                   "else booookscore).")
@click.option("--json", "as_json", is_flag=True, help="Print the score rows as JSON.")
@scoring_options
@db_option
def score_command(run_id, references, score_spec, as_json, db_path, **kwargs) -> None:
    """Score an earlier run's final summary and store the scores."""
    from pipelines.sql import render
    from pipelines.store import Store
    from scoring import parse_metrics, summary_table

    texts, ids = read_references(references)
    try:
        metrics = parse_metrics(score_spec) if score_spec else (["rouge", "bertscore"] if texts else ["booookscore"])
        options = options_from(**kwargs)
        store = Store(db_path)
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    judge_notice(metrics, options)
    rows = _score_and_warn(store, run_id, metrics, texts, ids, options)
    if as_json:
        click.echo(json.dumps(rows, default=str, ensure_ascii=False))
        return
    columns, table = summary_table(rows)
    click.echo(render(columns, table))
    run = rows[0]["run_id"] if rows else run_id
    click.echo(f"scores for run {run} stored in {store.path} (table scores, view scores_wide)", err=True)


@click.group("eval")
def eval_group() -> None:
    """Evaluate methods on a benchmark data set."""


@eval_group.command("squality")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N stories.")
@click.option("--method", "methods", multiple=True, type=click.Choice(["hierarchical", "incremental", "extractive"]),
              help="Method(s) to run (repeatable; default hierarchical). The extractive baseline always runs too.")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC", help="LLM for the LLM methods.")
@click.option("--base-url", default=None, metavar="URL", help="OpenAI-compatible server for openai: specs.")
@click.option("--score", "score_spec", default="rouge,bertscore", show_default=True, metavar="METRICS",
              help="Comma-separated: rouge, bertscore, booookscore.")
@click.option("--summary-words", type=click.IntRange(min=10), default=None,
              help="Word budget of each summary (default: the summarizer's default).")
@click.option("--chunk-size", type=click.IntRange(min=64), default=None, help="Chunk budget in the model's tokens.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Stories summarized at once (useful with API backends).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No per-story progress on stderr.")
@scoring_options
@db_option
def eval_squality_command(path, limit, methods, model, base_url, score_spec, summary_words, chunk_size, concurrency,
                          fmt, quiet, db_path, **kwargs) -> None:
    """Summarize SQuALITY stories (a .jsonl file) with each method and print mean scores
    against the plot question's four reference answers."""
    from pipelines.corpus import CorpusError, squality_items
    from pipelines.evaluate import evaluate, failures, summary_table, with_baseline
    from pipelines.runner import RunConfig
    from pipelines.sql import render
    from pipelines.store import Store
    from scoring import parse_metrics

    sizes = {k: v for k, v in (("summary_words", summary_words), ("chunk_size", chunk_size)) if v}
    configs = with_baseline([RunConfig(method=m, model=model, base_url=base_url, **sizes)
                             for m in (methods or ("hierarchical",))])
    try:
        items = squality_items(path, limit)
        metrics = parse_metrics(score_spec)
        options = options_from(label=f"squality:{path.name}", **kwargs)
        if not quiet:
            judge_notice(metrics, options)
        store = Store(db_path)
        outcomes = evaluate(
            items, configs, store, metrics=metrics, options=options, concurrency=concurrency,
            source=str(path.resolve()),
            on_outcome=None if quiet else (
                lambda o: click.echo(f"{o.configuration} · {o.document}: {o.status}, {o.seconds:.1f} s", err=True)),
        )
    except (CorpusError, *_scoring_errors()) as exc:
        raise UserError(str(exc)) from None
    click.echo(render(*summary_table(store, outcomes), fmt))
    for failure in failures(outcomes):
        click.echo(f"summarize: warning: {failure}", err=True)
    corpus = outcomes[0].corpus
    if not quiet:
        click.echo(f"evaluation {corpus}: summarize report --corpus {corpus} -o report.html", err=True)


@click.command("import-booookscore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", default=None, help="Name of the imported set (default: the file name). Re-importing replaces it.")
@db_option
def import_booookscore_command(file, label, db_path) -> None:
    """Import BooookScore annotations in the format released with the paper and print the score."""
    from pipelines.store import Store
    from scoring import import_booookscore

    try:
        summary = import_booookscore(Store(db_path), file, label)
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    click.echo(
        f"{summary.label}: BooookScore {summary.percent:.2f} over {summary.n_books} summaries "
        f"({summary.n_sentences} sentences, {summary.n_flagged} flagged); run {summary.run_id}"
    )


@click.command("import-fables")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--label", default="fables", show_default=True,
              help="Name of the imported set (runs import:LABEL:MODEL). Re-importing replaces it.")
@db_option
def import_fables_command(file, label, db_path) -> None:
    """Import the FABLES faithfulness annotations (FABLES.json, or the released .zip) and print, per model,
    the share of claims the readers labelled Yes."""
    from pipelines.sql import render
    from pipelines.store import Store
    from scoring.fables import import_fables

    try:
        shares = import_fables(Store(db_path), file, label)
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    rows = [(s.model, s.summaries, s.claims, round(100 * s.share("Yes"), 1),
             round(100 * s.share("Yes", "PartialSupport"), 1), round(100 * s.share("No"), 1), s.run_id) for s in shares]
    click.echo(render(["model", "summaries", "claims", "yes %", "yes+partial %", "no %", "run"], rows))
    click.echo(f"{sum(s.claims for s in shares)} claims imported as set {label!r} (tables claims, claim_summaries, "
               f"scores)", err=True)


@eval_group.command("fables")
@click.argument("file", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--judge-model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC",
              help="The LLM whose labels are compared with the readers' (same specs as --model).")
@click.option("--judge-base-url", default=None, metavar="URL", help="OpenAI-compatible server for an openai: judge.")
@click.option("--judge-concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Judge calls in flight at once (API judges).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Judge only N claims (a fixed shuffled sample across books, models and labels).")
@click.option("--max-attempts", type=click.IntRange(min=1), default=3, show_default=True,
              help="Attempts per claim while the answer does not parse.")
@click.option("--label", default="fables", show_default=True,
              help="The imported set to read when no FILE is given (see import-fables).")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@db_option
def eval_fables_command(file, judge_model, judge_base_url, judge_concurrency, limit, max_attempts, label, fmt, quiet,
                        db_path) -> None:
    """How well a judge agrees with FABLES's human faithfulness labels.

    The judge labels released claims (from FILE, or from an earlier import-fables) with the readers' evidence
    quotes as its passages, through the faithfulness checker's prompt; prints accuracy, balanced accuracy and
    precision/recall on No, and stores them (scores, metric fables_judge) with every verdict (claims)."""
    from pipelines.llm import resolve
    from pipelines.llm.recording import RecordingLLM, new_id
    from pipelines.sql import render
    from pipelines.store import DuckDBJournal, Store
    from scoring.fables import evaluate_judge, load_release, released_from_store

    try:
        store = Store(db_path)
        summaries = load_release(file) if file else released_from_store(store, label)
        if not summaries:
            raise UserError(f"no FABLES claims imported as {label!r} in {store.path}; "
                            "run summarize import-fables FABLES.json first, or pass the file")
        from pipelines.llm import JUDGE_NOTICE, is_tiny_model

        if is_tiny_model(judge_model) and not quiet:
            click.echo(JUDGE_NOTICE.format(what="FABLES claims are"), err=True)
        llm = RecordingLLM(resolve(judge_model, base_url=judge_base_url), DuckDBJournal(store))
        every = max(1, (limit or 100) // 10)
        progress = None if quiet else (
            lambda done, total: click.echo(f"judged {done}/{total}", err=True) if done % every == 0 or done == total
            else None)
        result = evaluate_judge(store, summaries, llm, limit=limit, concurrency=judge_concurrency,
                                max_attempts=max_attempts, source_file=str(file) if file else f"store:{label}",
                                run_id=f"eval:fables:{new_id()[:12]}", on_progress=progress)
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    a = result.agreement
    rows = [(result.judge_model, a.n, a.unparseable, *(None if v is None else round(v, 4) for v in
             (a.accuracy, a.balanced_accuracy, a.no_precision, a.no_recall)))]
    click.echo(render(["judge", "claims", "unparseable", "accuracy", "balanced_accuracy", "no_precision", "no_recall"],
                      rows, fmt))
    if not quiet:
        labels = ["Yes", "PartialSupport", "No", "Inapplicable", None]
        table = [(human, *(a.confusion.get((human, j), 0) for j in labels)) for human in labels[:-1]]
        click.echo(render(["human \\ judge", "Yes", "PartialSupport", "No", "Inapplicable", "unparseable"], table),
                   err=True)
        click.echo(f"stored as run {result.run_id} (scores metric fables_judge, claims source eval)", err=True)
