"""`summarize corpus`: the evaluate-corpus flow, run once in this process.

Its options (`corpus_options`) are `summarize serve`'s too. Prefect is
imported only when the command runs."""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli.common import EXIT_FAILED_DOCUMENTS, UserError, db_option, prefect_environment
from pipelines.defaults import DEFAULT_MODEL


def corpus_configs(methods: tuple[str, ...], model: str, base_url: str | None, chunk_size: int | None,
             summary_words: int | None, call_concurrency: int, configs_json: str | None, *,
             citations: bool = False, grounded: bool = False) -> list[dict]:
    if configs_json:
        try:
            configs = json.loads(configs_json)
        except json.JSONDecodeError as exc:
            raise UserError(f"--configs is not valid JSON: {exc.msg}") from None
        if not isinstance(configs, list) or not all(isinstance(c, dict) for c in configs):
            raise UserError("--configs must be a JSON list of objects")
    else:
        extra = {k: v for k, v in (("chunk_size", chunk_size), ("summary_words", summary_words)) if v}
        llm = {"model": model, "concurrency": call_concurrency, **({"base_url": base_url} if base_url else {})}
        extra.update({k: True for k, on in (("citations", citations),) if on})
        configs = [{"method": m, **(llm if m != "extractive" else {}), **extra,
                    **({"grounded": True} if grounded and m in ("hierarchical", "incremental") else {})} for m in methods]
    for config in configs:
        _refuse_credentials(config.get("base_url"))
    return configs


def _refuse_credentials(url: str | None) -> None:
    """Prefect records a flow's parameters (and a deployment's) in its database
    and UI: a key inside the URL would land there, so it must come another way."""
    from pipelines.secrets import redact

    if url and redact(url) != url:
        raise UserError("the base URL carries credentials, and flows record their parameters in Prefect; "
                        "pass the key in OPENAI_API_KEY (or ANTHROPIC_API_KEY) instead")


corpus_options = [
    click.option("--method", "methods", multiple=True, default=("hierarchical", "incremental", "extractive"),
                 type=click.Choice(["hierarchical", "incremental", "extractive"]), show_default=True,
                 help="Repeat for several; every method runs on every document."),
    click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC"),
    click.option("--base-url", default=None, metavar="URL",
                 help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp) for openai: specs."),
    click.option("--chunk-size", type=click.IntRange(min=64), default=None),
    click.option("--summary-words", type=click.IntRange(min=10), default=None),
    click.option("--configs", "configs_json", default=None, help="JSON list of configurations (overrides --method/--model)."),
    click.option("--citations", is_flag=True, help="Cite the source of every summary sentence of every run (table citations)."),
    click.option("--grounded", is_flag=True, help="Hierarchical and incremental runs: each merge or update also reads the source passages it rests on."),
    click.option("--metrics", default=None, help="rouge,bertscore,booookscore (default: rouge when references exist)."),
    click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N documents."),
    click.option("--dask-address", default=None, metavar="tcp://HOST:PORT", help="Run tasks on this existing Dask cluster."),
    click.option("--concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                 help="Documents x configurations evaluated at once (tasks on the task runner)."),
    click.option("--call-concurrency", type=click.IntRange(min=1), default=4, show_default=True,
                 help="LLM calls in flight per document (API backends); all documents together stay within "
                      "the global limit set by `summarize limits`."),
    click.option("--export-dir", type=click.Path(file_okay=False), default=None, help="Also export this evaluation's runs as Parquet files here (many machines share one store through a lake: --db ducklake:...)."),
    click.option("--batch", is_flag=True,
                 help="Send the LLM requests through the provider's batch API (OpenAI Batch, Anthropic Message "
                      "Batches): half price, answers within 24 h; the corpus runs in this process."),
    click.option("--judge-model", default=None, metavar="SPEC",
                 help="LLM judging BooookScore and faithfulness (default: the embedded instruct model; "
                      "same specs as --model)."),
    click.option("--judge-concurrency", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Judge calls in flight at once per document (API judges)."),
    click.option("--max-cost", type=click.FloatRange(min=0), default=None, metavar="USD",
                 help="Refuse to start when the preflight's upper bound exceeds USD; stop (runs failed with reason "
                      "budget, resumable) when the recorded cost reaches it."),
]


def apply_options(options):
    def decorate(function):
        for option in reversed(options):
            function = option(function)
        return function
    return decorate


def check_batch(batch: bool, configs: list[dict], dask_address: str | None) -> None:
    if not batch:
        return
    from pipelines.llm import parse_spec

    for config in configs:
        if config.get("method", "hierarchical") != "extractive":
            backend = parse_spec(config.get("model", DEFAULT_MODEL))[0]
            if backend not in ("openai", "anthropic"):
                raise UserError(f"--batch needs a provider with a batch API (openai:MODEL, anthropic:MODEL), "
                                f"not {config.get('model', DEFAULT_MODEL)}")
    if dask_address:
        raise UserError("--batch runs the corpus in this process (a provider batch spans documents); "
                        "drop --dask-address")


def _preflight(source: Path, configs: list[dict], limit: int | None, batch: bool, max_cost: float | None,
               show: bool) -> None:
    """The corpus's cost preflight: printed (--dry-run), and held to --max-cost."""
    from pipelines.corpus import load_corpus
    from pipelines.plan import estimate_corpus, refuse_over_budget
    from pipelines.runner import RunConfig

    run_configs = []
    for config in configs:
        run_config = RunConfig(**config)
        run_config.validate()
        run_configs.append(run_config)
    items = load_corpus(source, limit)
    per_config, total = estimate_corpus(items, run_configs, batch=batch)
    if show:
        for estimate in per_config:
            click.echo("\n".join(estimate.lines()) + "\n")
        if total is not None and len(per_config) > 1:
            click.echo("\n".join(["total:", *total.lines()[1:]]))
    try:
        refuse_over_budget(total, max_cost)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@click.command("corpus")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@apply_options(corpus_options)
@click.option("--dry-run", is_flag=True, help="Print the corpus's plan and cost preflight; call no LLM, start no flow.")
@db_option
def corpus_command(source, methods, model, base_url, chunk_size, summary_words, configs_json, metrics, limit,
                   dask_address, concurrency, call_concurrency, export_dir, batch, judge_model, judge_concurrency,
                   max_cost, dry_run, citations, grounded, db_path) -> None:
    """Run the evaluate-corpus flow once over a folder or a SQuALITY file.

    Every document of SOURCE (a folder, or a SQuALITY .jsonl) with every configuration.
    Prints the table, then each failed document with its reason; exits with status 4
    when any document failed (the others finished)."""
    configs = corpus_configs(methods, model, base_url, chunk_size, summary_words, call_concurrency, configs_json,
                             citations=citations, grounded=grounded)
    check_batch(batch, configs, dask_address)
    if dry_run or max_cost is not None:
        _preflight(source, configs, limit, batch, max_cost, show=dry_run)
        if dry_run:
            return
    prefect_environment()
    from flows.evaluate_flow import evaluate_corpus
    from pipelines.cli.scoring import judge_notice
    from pipelines.sql import render
    from scoring import ScoringOptions, parse_metrics

    judge_notice(parse_metrics(metrics), ScoringOptions(judge_model=judge_model or DEFAULT_MODEL))

    table = evaluate_corpus(
        source=str(source), configs=configs,
        metrics=metrics.split(",") if metrics else None, limit=limit, db=str(db_path) if db_path else None,
        dask_address=dask_address, concurrency=concurrency, export_dir=export_dir, batch=batch, max_cost=max_cost,
        judge_model=judge_model, judge_concurrency=judge_concurrency,
    )
    columns = list(table[0]) if table else []
    click.echo(render(columns, [tuple(row[c] for c in columns) for row in table]))
    failed = _failures(db_path)
    for item, configuration, status, error in failed:
        click.echo(f"{'failed' if status == 'failed' else 'scoring failed'}: {configuration} · {item}: {error}")
    documents = {(item, configuration) for item, configuration, status, _ in failed if status == "failed"}
    if documents:
        total = sum(row.get("runs") or 0 for row in table)
        click.echo(f"summarize: {len(documents)} of {total} runs failed (the others finished)", err=True)
        click.get_current_context().exit(EXIT_FAILED_DOCUMENTS)


def _failures(db_path: Path | None) -> list[tuple]:
    """(document, configuration, status, reason) of each pair that failed, or whose scoring failed,
    in the corpus evaluation this process just finished (the flow ran here)."""
    import os
    import socket

    from pipelines.cli.common import open_store

    store = open_store(db_path)
    return store.execute(
        "SELECT item, configuration, status, error FROM corpus_results WHERE error IS NOT NULL AND corpus_id = "
        "(SELECT corpus_id FROM corpora WHERE pid = ? AND host = ? AND finished_at IS NOT NULL "
        "ORDER BY finished_at DESC LIMIT 1) ORDER BY item, configuration",
        [os.getpid(), socket.gethostname()])
