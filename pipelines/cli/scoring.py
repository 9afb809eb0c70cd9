"""The scoring commands of `summarize` (registered by importing this module).

    summarize score RUN_ID --reference REF.txt [--reference ...] --score rouge,bertscore,booookscore
    summarize eval squality dev.jsonl [--limit N] [--method hierarchical] [--model SPEC]
    summarize import-booookscore FILE --label NAME

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
        booookscore_concurrency=kwargs["judge_concurrency"],
    )


JUDGE_NOTICE = (
    "note: BooookScore is judged by the embedded Gemma 3 270M base model, which exercises the checker offline "
    "but cannot judge coherence well; pass --judge-model openai:MODEL or anthropic:MODEL for real judgements"
)


def _judge_notice(metrics, options) -> None:
    if "booookscore" in metrics and options.judge_model.strip().lower() == DEFAULT_MODEL:
        click.echo(JUDGE_NOTICE, err=True)


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
        _judge_notice(metrics, options)
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

    return (ScoringError, CheckerError)


@click.command("score")
@click.argument("run_id")
@click.option("--reference", "references", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A reference summary file (repeat for several; ROUGE and BERTScore need at least one).")
@click.option("--score", "score_spec", default=None, metavar="METRICS",
              help="Comma-separated: rouge, bertscore, booookscore (default: rouge,bertscore with references, "
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
    _judge_notice(metrics, options)
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
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No per-story progress on stderr.")
@scoring_options
@db_option
def eval_squality_command(path, limit, methods, model, base_url, score_spec, summary_words, chunk_size, fmt, quiet,
                          db_path, **kwargs) -> None:
    """Summarize SQuALITY stories (a .jsonl file) with each method and print mean scores
    against the plot question's four reference answers."""
    from pipelines.sql import render
    from pipelines.store import Store
    from scoring import parse_metrics
    from scoring.squality import evaluate

    try:
        metrics = parse_metrics(score_spec)
        options = options_from(label=f"squality:{path.name}", **kwargs)
        if not quiet:
            _judge_notice(metrics, options)
        store = Store(db_path)
        result = evaluate(
            path, store, methods=list(methods) or ["hierarchical"], model=model, base_url=base_url, limit=limit,
            metrics=metrics, summary_words=summary_words, chunk_size=chunk_size, options=options,
            on_event=None if quiet else (lambda message: click.echo(message, err=True)),
        )
    except _scoring_errors() as exc:
        raise UserError(str(exc)) from None
    click.echo(render(result.columns, result.rows, fmt))
    for failure in result.failures:
        click.echo(f"summarize: warning: {failure}", err=True)


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
