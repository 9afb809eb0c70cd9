"""`summarize FILE` (the default command `run`): summarize one document in-process."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import (
    EXIT_DEGRADED,
    UserError,
    db_option,
    open_store,
    scoring_options,
    strict_from_environment,
    write_atomically,
)
from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_MODEL, DEFAULT_SUMMARY_WORDS


@click.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["hierarchical", "incremental", "extractive"]), default="hierarchical",
              show_default=True, help="Hierarchical merging, incremental updating, or the no-LLM extractive baseline.")
@click.option("--model", "model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC",
              help="llamacpp (the embedded Qwen2.5-Coder-1.5B-Instruct), llamacpp:gemma-3-270m (tiny, fast, cannot "
                   "summarize), llamacpp:/path.gguf, openai:MODEL or anthropic:MODEL.")
@click.option("--base-url", default=None, metavar="URL", help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp) for openai: specs.")
@click.option("--context-window", type=click.IntRange(min=512), default=None, help="Override the model's context size in tokens.")
@click.option("--chunk-size", type=click.IntRange(min=64), default=DEFAULT_CHUNK_TOKENS, show_default=True, help="Chunk budget in the model's tokens.")
@click.option("--chunker", type=click.Choice(["structured", "fixed"]), default="structured", show_default=True,
              help="Paragraph/section-aware chunks, or fixed windows (see --overlap).")
@click.option("--overlap", type=click.IntRange(min=0), default=0, help="Token overlap between fixed windows.")
@click.option("--summary-words", type=click.IntRange(min=10), default=DEFAULT_SUMMARY_WORDS, show_default=True,
              help="Word budget of the final summary.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Chunk summaries in flight at once (API backends; a local model answers one at a time).")
@click.option("--kind", type=click.Choice(["book", "paper", "code"]), default=None, help="Override the detected document kind.")
@click.option("--password", default=None, metavar="TEXT",
              help="Password of an encrypted PDF (or set LONGSUM_PDF_PASSWORD); never stored.")
@click.option("--compress", type=click.Choice(["none", "scope", "longcodezip", "auto"]), default="none", show_default=True,
              help="Compress each chunk before summarizing: SCOPE for prose, LongCodeZip for code, auto picks.")
@click.option("--compress-ratio", type=click.FloatRange(min=0.05, max=1.0), default=0.5, show_default=True,
              help="Share of each chunk's tokens the compressor keeps.")
@click.option("--compress-query", default="", metavar="TEXT",
              help="What the summary should focus on: the compressors keep what matters to it.")
@click.option("--compress-model", default=None, metavar="SPEC",
              help="Also rank code by this model's AMI (fused with the structure signal): llamacpp (the embedded "
                   "Qwen2.5-Coder-1.5B-Instruct, a code model: the paper's setting) or llamacpp:/path.gguf. "
                   "Without it LongCodeZip needs no model.")
@click.option("--grounded", is_flag=True,
              help="Each merge (hierarchical) or update (incremental) also reads the source passages most "
                   "relevant to the summaries it rewrites (they share its token budget) and may cite them.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=None, help="API backends: seconds per request (default 120).")
@click.option("--retries", "max_retries", type=click.IntRange(min=0), default=None, help="API backends: retries with jittered backoff on connection resets, timeouts, 408/409/429 and 5xx (default 6; see pipelines/llm/http.py).")
@click.option("--reference", "references", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A reference summary file to score against (repeat for several).")
@click.option("--score", "score_spec", default=None, metavar="METRICS",
              help="Score the run: comma-separated rouge, bertscore, booookscore, faithfulness, coverage "
                   "(default with --reference: rouge,bertscore).")
@scoring_options
@click.option("--dry-run", is_flag=True, help="Print the plan and the cost preflight (calls, tokens, USD); call no LLM.")
@click.option("--max-cost", type=click.FloatRange(min=0), default=None, metavar="USD",
              help="Refuse to start when the estimate's upper bound exceeds USD; stop (status failed, reason "
                   "budget, resumable) when the recorded cost reaches it.")
@click.option("--citations", is_flag=True,
              help="Cite the source of every sentence of every summary (table citations) and print a marker such "
                   "as [ch. III] or [ll. 12-40] after each sentence of the summary; with --json, a list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (run_id, summary, usage) instead of the summary.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the summary to this file.")
@click.option("-q", "--quiet", is_flag=True,
              help="No progress bar or notices on stderr (a degraded run still says so, in one line).")
@click.option("--strict/--no-strict", default=None,
              help=f"A degraded run exits with status {EXIT_DEGRADED}, not 0 (default: $LONGSUM_STRICT, e.g. 1).")
@db_option
def run_command(file, method, model, base_url, context_window, chunk_size, chunker, overlap, summary_words,
                concurrency, kind, password, compress, compress_ratio, compress_query, compress_model, grounded, timeout_s, max_retries, references, score_spec,
                dry_run, max_cost, citations, as_json, output, quiet, strict, db_path, **scoring_values) -> None:
    """Summarize FILE (a book, a paper or a source file)."""
    from pipelines.progress import RunProgress
    from pipelines.runner import RunConfig, make_backend, summarize_file

    config = RunConfig(
        method=method, model=model, base_url=base_url, context_window=context_window, chunk_size=chunk_size,
        chunker=chunker, overlap=overlap, summary_words=summary_words, concurrency=concurrency, kind=kind,
        timeout_s=timeout_s, max_retries=max_retries, compress=compress, compress_ratio=compress_ratio,
        compress_query=compress_query, compress_model=compress_model, grounded=grounded, citations=citations,
    )
    config.validate()
    if not file.exists():
        raise UserError(f"{file}: no such file")
    if dry_run or max_cost is not None:
        from pipelines.plan import dry_run_command, estimate_file, refuse_over_budget

        plan, estimate = estimate_file(file, config)
        if dry_run:
            if as_json:
                import json

                click.echo(json.dumps({"chunks": len(plan.chunks), "estimate": estimate.as_dict()}))
            else:
                click.echo("\n".join([plan.describe(), *estimate.lines()]))
            return
        try:
            refuse_over_budget(estimate, max_cost, dry_run=dry_run_command(file, config), base_url=base_url)
        except ValueError as exc:
            raise UserError(str(exc)) from None
    score = None
    if references or score_spec:
        from pipelines.cli.scoring import prepare_scoring

        score = prepare_scoring(references, score_spec, **scoring_values)
    store = open_store(db_path)
    from pipelines.llm import is_tiny_model

    if not quiet and method != "extractive" and is_tiny_model(model):
        from pipelines.llm.llamacpp import TINY_MODEL_NOTICE

        click.echo(f"note: {TINY_MODEL_NOTICE}", err=True)
    backend = make_backend(config)
    if max_cost is not None and backend is not None:
        from pipelines.budget import Budget, BudgetedBackend

        backend = BudgetedBackend(backend, Budget(max_cost))
    from pipelines.budget import BudgetExceeded

    from pipelines.retrieval import EvidenceError

    try:
        with RunProgress(enabled=not quiet, label=file.name) as progress:
            result = summarize_file(file, config, store, backend=backend, progress=progress.callbacks,
                                    on_call=progress.on_call, password=password)
    except BudgetExceeded as exc:
        raise UserError(f"{exc} (the run is marked failed with reason 'budget'; see `summarize runs`)") from None
    except EvidenceError as exc:  # the run is stored; only its citations could not be made
        raise UserError(f"the run is stored, but its citations could not be made: {exc}") from None
    shown, cited = result.summary, None
    if citations:
        from pipelines.citations import final_citations, with_markers

        cited = final_citations(store, result.run_id)
        shown = with_markers(result.summary, cited)
    if output is not None:
        write_atomically(output, shown + "\n")
    scores = score(store, result.run_id) if score else []
    if as_json:
        import json

        payload = result.as_json()
        if score:
            payload["scores"] = scores
        if cited is not None:
            from pipelines.citations import as_json as citations_json

            payload["citations"] = citations_json(cited)
        click.echo(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        click.echo(shown)
    if score and not as_json:
        from pipelines.sql import render
        from scoring import summary_table

        click.echo(render(*summary_table(scores)), err=True)
    if not quiet:
        if cited is not None:
            click.echo(citation_line(cited), err=True)
        if compress != "none":
            ((before, after),) = store.execute(
                "SELECT tokens_before_compression, tokens_after_compression FROM runs WHERE run_id = ?", [result.run_id])
            click.echo(f"compression ({compress}): {before} -> {after} chunk tokens "
                       f"(ratio {after / max(1, before):.2f})", err=True)
        u = result.usage
        click.echo(
            f"run {result.run_id} {result.status}: {result.n_chunks} chunks, {u.calls} LLM calls "
            f"({u.cache_hits} cached), {u.input_tokens}+{u.output_tokens} tokens, {result.seconds:.1f} s; db {store.path}",
            err=True,
        )
    failed = [r for r in result.records if r.degraded and r.kept]
    if failed:
        # Even with -q: a degraded run never passes for a clean one. Final step first: its reason
        # is the one the printed summary carries.
        first = max(failed, key=lambda r: (r.is_final, -r.level, -r.idx))
        step = f"{first.kind}:{first.idx}" if first.level == 0 else f"{first.kind}:{first.level}.{first.idx}"
        click.echo(f"warning: {result.model} gave no valid summary in {len(failed)} of {len(result.records)} steps "
                   f"(the run is {result.status}); {step}: {first.note}", err=True)
    if result.status != "ok" and (strict if strict is not None else strict_from_environment()):
        click.get_current_context().exit(EXIT_DEGRADED)


def citation_line(cited: list) -> str:
    methods: dict[int, set] = {}
    for c in cited:
        methods.setdefault(c.sentence_idx, set()).add(c.method)
    supported = sum(1 for m in methods.values() if m != {"unsupported"})
    kinds = ", ".join(f"{k} {sum(1 for m in methods.values() if k in m)}" for k in ("model", "traced", "aligned"))
    return (f"citations: {supported} of {len(methods)} sentences of the summary cite their source ({kinds}); "
            f"every summary's are in the table citations")
