"""`summarize chunks FILE`: plan a run without any LLM call."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL


@click.command("chunks")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC", help="Whose tokenizer counts the tokens.")
@click.option("--chunk-size", type=click.IntRange(min=64), default=DEFAULT_CHUNK_TOKENS, show_default=True)
@click.option("--chunker", type=click.Choice(["structured", "fixed"]), default="structured", show_default=True)
@click.option("--overlap", type=click.IntRange(min=0), default=0)
@click.option("--kind", type=click.Choice(["book", "paper", "code"]), default=None)
@click.option("--list", "list_chunks", is_flag=True, help="One line per chunk (index, tokens, section, first words).")
def chunks_command(file, model, chunk_size, chunker, overlap, kind, list_chunks) -> None:
    """Plan a run without any LLM call: how FILE chunks, and what each method would need."""
    from pipelines.plan import plan_file

    plan = plan_file(file, model=model, chunk_size=chunk_size, chunker=chunker, overlap=overlap, kind=kind)
    if list_chunks:
        for line in plan.chunk_lines():
            click.echo(line)
    click.echo(plan.describe())
