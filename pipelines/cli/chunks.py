"""`summarize chunks FILE`: plan a run without any LLM call: its chunks, and
the cost preflight (calls, tokens and USD bounds) of each method."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL, DEFAULT_SUMMARY_WORDS


@click.command("chunks")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC",
              help="Whose tokenizer counts the tokens, and whose prices the estimate uses.")
@click.option("--base-url", default=None, metavar="URL", help="An OpenAI-compatible server for openai: specs.")
@click.option("--context-window", type=click.IntRange(min=512), default=None)
@click.option("--method", "methods", multiple=True, type=click.Choice(["hierarchical", "incremental"]),
              default=("hierarchical", "incremental"), show_default=True, help="Estimate these methods (repeat).")
@click.option("--chunk-size", type=click.IntRange(min=64), default=DEFAULT_CHUNK_TOKENS, show_default=True)
@click.option("--chunker", type=click.Choice(["structured", "fixed"]), default="structured", show_default=True)
@click.option("--overlap", type=click.IntRange(min=0), default=0)
@click.option("--summary-words", type=click.IntRange(min=10), default=DEFAULT_SUMMARY_WORDS, show_default=True)
@click.option("--kind", type=click.Choice(["book", "paper", "code"]), default=None)
@click.option("--batch", is_flag=True, help="Price the calls at the providers' batch prices (half).")
@click.option("--list", "list_chunks", is_flag=True, help="One line per chunk (index, tokens, section, first words).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: the chunks' totals and each method's estimate.")
def chunks_command(file, model, base_url, context_window, methods, chunk_size, chunker, overlap, summary_words, kind,
                   batch, list_chunks, as_json) -> None:
    """Plan a run without any LLM call: how FILE chunks, and what each method would cost."""
    from pipelines.cli.common import UserError
    from pipelines.plan import estimate_document, estimate_file
    from pipelines.runner import RunConfig

    if not file.exists():
        raise UserError(f"{file}: no such file")
    estimates = []
    plan = None
    for method in methods:
        config = RunConfig(method=method, model=model, base_url=base_url, context_window=context_window,
                           chunk_size=chunk_size, chunker=chunker, overlap=overlap, summary_words=summary_words,
                           kind=kind)
        if plan is None:
            plan, estimate = estimate_file(file, config, batch=batch)
        else:  # the methods chunk alike: the file is read and chunked once
            estimate = estimate_document(plan.document, config, batch=batch, chunks=plan.chunks)
        estimates.append(estimate)
    if as_json:
        import json

        click.echo(json.dumps({"chunks": len(plan.chunks), "tokens": sum(c.n_tokens for c in plan.chunks),
                               "tokenizer": plan.tokenizer, "estimates": [e.as_dict() for e in estimates]}))
        return
    click.echo(plan.describe())
    if list_chunks:
        click.echo("")
        for line in plan.chunk_lines():
            click.echo(line)
    for estimate in estimates:
        click.echo("")
        for line in estimate.lines():
            click.echo(line)
