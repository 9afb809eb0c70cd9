"""`summarize compress FILE`: the compressors on their own, as a prompt compressor.

Prints the compressed text alone on stdout; the statistics go to stderr (or,
with --stats-json PATH, to a JSON file with every chunk's report). SCOPE's
LLM calls are journaled in the store's `llm_calls` table like any other
call, so a second run with the same settings replays them.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from pipelines.cli.common import UserError, db_option
from pipelines.defaults import DEFAULT_MODEL


@click.command("compress")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--query", "-Q", default="", help="What the compressed text will be used for (focuses what is kept).")
@click.option("--ratio", "-r", type=click.FloatRange(min=0.01, max=1.0), default=0.5, show_default=True,
              help="Share of the tokens to keep.")
@click.option("--method", type=click.Choice(["auto", "scope", "longcodezip"]), default="auto", show_default=True,
              help="auto: LongCodeZip for code, SCOPE for prose (fenced code blocks in prose go to LongCodeZip).")
@click.option("--model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC",
              help="Model whose tokenizer counts the ratio and that SCOPE rewrites with "
                   "(llamacpp, llamacpp:/path.gguf, openai:MODEL, anthropic:MODEL).")
@click.option("--base-url", default=None, metavar="URL", help="An OpenAI-compatible server for openai: specs.")
@click.option("--compress-model", "--scorer-model", "compress_model", default=None, metavar="SPEC",
              help="Also rank code by this model's AMI (fused with the structure signal): llamacpp (the embedded "
                   "Qwen2.5-Coder-1.5B-Instruct) or llamacpp:/path.gguf. Without it LongCodeZip needs no model.")
@click.option("--kind", type=click.Choice(["book", "paper", "code"]), default=None, help="Override the detected document kind.")
@click.option("--stats-json", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the full report (every chunk) to this JSON file.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="SCOPE rewrites in flight at once (useful with API backends).")
@click.option("-q", "--quiet", is_flag=True, help="No statistics or notices on stderr.")
@db_option
def compress_command(file, query, ratio, method, model, base_url, compress_model, kind, stats_json, concurrency, quiet,
                     db_path) -> None:
    """Compress FILE to about RATIO of its tokens and print the result."""
    from pipelines.compress import compress_document, resolve_method
    from pipelines.documents import load_document
    from pipelines.llm import is_tiny_model, resolve
    from pipelines.llm.recording import RecordingLLM
    from pipelines.store import DuckDBJournal, Store

    if not file.exists():
        raise UserError(f"{file}: no such file")
    document = load_document(file, kind=kind)
    chosen = resolve_method(method, document.kind)
    backend = resolve(model, base_url=base_url)
    if not quiet and chosen == "scope" and is_tiny_model(model):
        click.echo("note: SCOPE rewrites with Gemma 3 270M, a tiny base model: most chunks will fall "
                   "back to extractive compression. Leave out --model for the embedded instruct model.", err=True)
    llm = RecordingLLM(backend, DuckDBJournal(Store(db_path)))
    from pipelines.llm.logprobs import scorer_path

    path = scorer_path(compress_model)  # a bad spec fails before anything is loaded
    if chosen == "longcodezip":
        # Straight to LongCodeZip, so that its scores are journaled in llm_calls
        # (a second run, or another ratio, scores nothing again).
        from pipelines.compress.longcodezip import compress_code
        from pipelines.llm.logprobs import default_scorer

        from pipelines.compress.chunk_compression import longcodezip_settings

        result = compress_code(document.text, ratio, query, scorer=default_scorer(path) if compress_model else None,
                               count_tokens=llm.count_tokens, language=document.language or "python",
                               settings=longcodezip_settings(compress_model), journal=llm.journal)
    else:
        scorer = None
        if path is not None:
            from pipelines.llm.logprobs import default_scorer

            scorer = default_scorer(path)
        result = compress_document(document, method=method, ratio=ratio, query=query, llm=llm, scorer=scorer,
                                   step="compress", concurrency=concurrency)
    click.echo(result.text, nl=not result.text.endswith("\n"))
    if stats_json is not None:
        stats_json.write_text(json.dumps(result.as_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
    if not quiet:
        click.echo(result.summary_line(), err=True)
        for chunk in result.fallbacks:
            click.echo(f"  chunk {chunk.idx} fell back to extraction: {chunk.fallback_reason}", err=True)
