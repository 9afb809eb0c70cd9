"""The `summarize` command.

    summarize FILE [options]          summarize a book, paper or source file
    summarize runs                    list runs
    summarize show RUN_ID             print a run's summaries
    summarize sql "SELECT ..."        read-only SQL over the store

Heavy libraries (llama.cpp, torch, prefect, the SDKs) are imported only by
the commands that use them, so `--help` and `sql` start quickly. Errors the
user can fix are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click
from click_default_group import DefaultGroup

from pipelines.defaults import DEFAULT_CHUNK_TOKENS, DEFAULT_SUMMARY_WORDS
from pipelines.paths import default_db_path

EXIT_USER_ERROR = 1
EXIT_INTERRUPTED = 130


class UserError(click.ClickException):
    """Printed as one line: 'summarize: error: ...'."""

    def show(self, file=None) -> None:
        click.echo(f"summarize: error: {self.format_message()}", err=True)


def _user_errors() -> tuple[type[BaseException], ...]:
    from pipelines.documents import DocumentError
    from pipelines.llm.base import LLMError
    from pipelines.store import StoreError
    from prompts import PromptError

    return (DocumentError, LLMError, StoreError, PromptError, ValueError, OSError)


def open_store(db_path: Path | None, read_only: bool = False):
    from pipelines.store import Store

    return Store(db_path, read_only=read_only)


def scoring_options(function):
    """Options that tune the scorers; shared by `run`, `score` and `eval squality`."""
    options = [
        click.option("--rouge-tokenizer", type=click.Choice(["rouge-score", "unicode"]), default="rouge-score",
                     show_default=True,
                     help="rouge-score's ASCII tokenizer (warns when it drops non-ASCII letters), or a "
                          "Unicode tokenizer that counts them (identical on ASCII text)."),
        click.option("--bertscore-model", default=None, metavar="NAME|DIR",
                     help="BERTScore model (a local directory or a cached hub name); default: the packaged "
                          "all-MiniLM-L6-v2."),
        click.option("--bertscore-layer", type=click.IntRange(min=0), default=None,
                     help="Layer whose embeddings BERTScore uses (default 6 for all-MiniLM-L6-v2)."),
        click.option("--judge-model", default="llamacpp", show_default=True, metavar="SPEC",
                     help="LLM that annotates sentences for BooookScore (same specs as --model)."),
        click.option("--judge-base-url", default=None, metavar="URL",
                     help="OpenAI-compatible server for an openai: judge."),
        click.option("--judge-concurrency", type=click.IntRange(min=1), default=1, show_default=True,
                     help="BooookScore checker calls in flight at once (API judges)."),
        click.option("--booookscore-prompt", type=click.Choice(["v1", "v2"]), default="v1", show_default=True,
                     help="v1: one call per sentence; v2: batches of sentences answered as JSON."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def db_option(function):
    return click.option(
        "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
        help=f"DuckDB file (default: $LONGSUM_DB or {default_db_path()}).",
    )(function)


# Commands defined in other packages, imported only when used, so that
# `summarize --help` and `summarize sql` start fast: name -> (module, short help).
LAZY_COMMANDS = {
    "compress": ("pipelines.compress.cli", "Compress FILE to about RATIO of its tokens and print the result."),
    "corpus": ("flows.cli", "Run the evaluate-corpus flow once over a folder or a SQuALITY file."),
    "eval": ("scoring.cli", "Evaluate methods on a benchmark data set."),
    "import-booookscore": ("scoring.cli", "Import BooookScore annotations in the format released with the paper and print the score."),
    "score": ("scoring.cli", "Score an earlier run's final summary and store the scores."),
    "serve": ("flows.cli", "Serve the flows as Prefect deployments with a schedule."),
}


class LazyGroup(DefaultGroup):
    """A DefaultGroup whose LAZY_COMMANDS register themselves on first use."""

    def list_commands(self, ctx) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name not in self.commands and name in LAZY_COMMANDS:
            import importlib

            importlib.import_module(LAZY_COMMANDS[name][0])  # its decorators register the command on `cli`
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter) -> None:
        from click.utils import make_default_short_help

        names = [name for name in self.list_commands(ctx) if name not in self.commands or not self.commands[name].hidden]
        # The same one-line limit click gives the commands it has loaded.
        limit = formatter.width - 6 - max(map(len, names), default=0)
        rows = []
        for name in names:
            if name in self.commands:
                label = name + ("*" if name == self.default_cmd_name else "")
                rows.append((label, self.commands[name].get_short_help_str(limit)))
            else:
                rows.append((name, make_default_short_help(LAZY_COMMANDS[name][1], limit)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, default="run", default_if_no_args=False,
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="longsum")
def cli() -> None:
    """Summarize long documents with LLMs and keep every step in DuckDB.

    \b
    summarize book.txt                         hierarchical merging, embedded model
    summarize book.txt --method incremental --model openai:gpt-4o-mini
    summarize runs                             the runs in the database
    summarize sql "SELECT method, avg(seconds) FROM runs GROUP BY 1"
    """


@cli.command("run")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--method", type=click.Choice(["hierarchical", "incremental", "extractive"]), default="hierarchical",
              show_default=True, help="Hierarchical merging, incremental updating, or the no-LLM extractive baseline.")
@click.option("--model", "model", default="llamacpp", show_default=True, metavar="SPEC",
              help="llamacpp (embedded Gemma 3 270M), llamacpp:/path.gguf, openai:MODEL or anthropic:MODEL.")
@click.option("--base-url", default=None, metavar="URL", help="An OpenAI-compatible server (vLLM, Ollama, llama.cpp) for openai: specs.")
@click.option("--context-window", type=click.IntRange(min=512), default=None, help="Override the model's context size in tokens.")
@click.option("--chunk-size", type=click.IntRange(min=64), default=DEFAULT_CHUNK_TOKENS, show_default=True, help="Chunk budget in the model's tokens.")
@click.option("--chunker", type=click.Choice(["structured", "fixed"]), default="structured", show_default=True,
              help="Paragraph/section-aware chunks, or fixed windows (see --overlap).")
@click.option("--overlap", type=click.IntRange(min=0), default=0, help="Token overlap between fixed windows.")
@click.option("--summary-words", type=click.IntRange(min=10), default=DEFAULT_SUMMARY_WORDS, show_default=True,
              help="Word budget of the final summary.")
@click.option("--concurrency", type=click.IntRange(min=1), default=1, show_default=True,
              help="Chunk summaries in flight at once (useful with API backends).")
@click.option("--kind", type=click.Choice(["book", "paper", "code"]), default=None, help="Override the detected document kind.")
@click.option("--compress", type=click.Choice(["none", "scope", "longcodezip", "auto"]), default="none", show_default=True,
              help="Compress each chunk before summarizing: SCOPE for prose, LongCodeZip for code, auto picks.")
@click.option("--compress-ratio", type=click.FloatRange(min=0.05, max=1.0), default=0.5, show_default=True,
              help="Share of each chunk's tokens the compressor keeps.")
@click.option("--compress-query", default="", metavar="TEXT",
              help="What the summary should focus on: the compressors keep what matters to it.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0.1), default=None, help="API backends: seconds per request (default 120).")
@click.option("--retries", "max_retries", type=click.IntRange(min=0), default=None, help="API backends: retries with backoff on 429/5xx/connection errors (default 4).")
@click.option("--reference", "references", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A reference summary file to score against (repeat for several).")
@click.option("--score", "score_spec", default=None, metavar="METRICS",
              help="Score the run: comma-separated rouge, bertscore, booookscore (default with --reference: rouge,bertscore).")
@scoring_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (run_id, summary, usage) instead of the summary.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Also write the summary to this file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or notices on stderr.")
@db_option
def run_command(file, method, model, base_url, context_window, chunk_size, chunker, overlap, summary_words,
                concurrency, kind, compress, compress_ratio, compress_query, timeout_s, max_retries, references, score_spec, as_json,
                output, quiet, db_path, **scoring_values) -> None:
    """Summarize FILE (a book, a paper or a source file)."""
    from pipelines.progress import RunProgress
    from pipelines.runner import RunConfig, make_backend, summarize_file

    config = RunConfig(
        method=method, model=model, base_url=base_url, context_window=context_window, chunk_size=chunk_size,
        chunker=chunker, overlap=overlap, summary_words=summary_words, concurrency=concurrency, kind=kind,
        timeout_s=timeout_s, max_retries=max_retries, compress=compress, compress_ratio=compress_ratio,
        compress_query=compress_query,
    )
    config.validate()
    if not file.exists():
        raise UserError(f"{file}: no such file")
    score = None
    if references or score_spec:
        from scoring.cli import prepare_scoring

        score = prepare_scoring(references, score_spec, **scoring_values)
    store = open_store(db_path)
    if not quiet and method != "extractive" and model.strip().lower() == "llamacpp":
        from pipelines.llm.llamacpp import DEFAULT_MODEL_NOTICE

        click.echo(f"note: {DEFAULT_MODEL_NOTICE}", err=True)
    backend = make_backend(config)
    with RunProgress(enabled=not quiet, label=file.name) as progress:
        result = summarize_file(file, config, store, backend=backend, progress=progress.callbacks,
                                on_call=progress.on_call)
    if output is not None:
        _write_atomically(output, result.summary + "\n")
    scores = score(store, result.run_id) if score else []
    if as_json:
        import json

        payload = result.as_json()
        if score:
            payload["scores"] = scores
        click.echo(json.dumps(payload, ensure_ascii=False, default=str))
    else:
        click.echo(result.summary)
    if score and not as_json:
        from pipelines.sql import render
        from scoring import summary_table

        click.echo(render(*summary_table(scores)), err=True)
    if not quiet:
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


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


@cli.command("runs")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@db_option
def runs_command(limit, fmt, db_path) -> None:
    """List the most recent runs."""
    from pipelines.sql import run_readonly_query, render

    columns, rows = run_readonly_query(
        open_store(db_path, read_only=True),
        "SELECT r.run_id, strftime(r.started_at, '%Y-%m-%d %H:%M') AS started, d.title AS document, r.method, "
        "r.model, r.status, r.n_chunks AS chunks, r.llm_calls AS calls, r.cache_hits AS cached, "
        "r.input_tokens + r.output_tokens AS tokens, "
        "CASE WHEN r.compression IS NULL THEN '' ELSE r.compression || ' saved ' || "
        "(r.tokens_before_compression - r.tokens_after_compression) END AS compression, "
        "round(r.seconds, 1) AS seconds "
        f"FROM runs r LEFT JOIN documents d USING (doc_id) ORDER BY r.started_at DESC LIMIT {int(limit)}",
    )
    click.echo(render(columns, rows, fmt))


@cli.command("show")
@click.argument("run_id")
@click.option("--all", "show_all", is_flag=True, help="Every summary of the run (all levels and steps), not only the final one.")
@db_option
def show_command(run_id, show_all, db_path) -> None:
    """Print a run's final summary (or all of its summaries)."""
    from pipelines.sql import run_readonly_query

    store = open_store(db_path, read_only=True)
    where = "" if show_all else " AND is_final"
    _, rows = run_readonly_query(
        store,
        f"SELECT level, idx, kind, n_words, degraded, text FROM summaries WHERE run_id LIKE ? || '%'{where} "
        "ORDER BY created_at, level, idx",
        [run_id],
    )
    if not rows:
        raise UserError(f"no summaries for run {run_id!r} in {store.path}")
    for level, idx, kind, n_words, degraded, text in rows:
        if show_all:
            click.echo(f"--- level {level} #{idx} {kind}, {n_words} words{' (degraded)' if degraded else ''}")
        click.echo(text)


@cli.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--unsafe", is_flag=True,
              help="Allow writes, ATTACH, COPY, extensions and reading files (off by default: the query runs read-only and sandboxed).")
@db_option
def sql_command(query, fmt, unsafe, db_path) -> None:
    """Run a SQL QUERY over the store and print the result (read-only unless --unsafe)."""
    from pipelines.sql import render, run_query, run_readonly_query

    if unsafe:
        columns, rows = run_query(open_store(db_path), query)
    else:
        columns, rows = run_readonly_query(open_store(db_path, read_only=True), query)
    click.echo(render(columns, rows, fmt))


@cli.command("check")
@db_option
def check_command(db_path) -> None:
    """Check the store's consistency; exit status 1 when a problem is found."""
    from pipelines.integrity import verify

    store = open_store(db_path, read_only=True)
    problems = verify(store)
    for problem in problems:
        click.echo(f"problem: {problem}")
    if problems:
        raise UserError(f"{len(problems)} consistency problem(s) in {store.path}")
    click.echo(f"{store.path}: consistent")


@cli.command("chunks")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--model", default="llamacpp", show_default=True, metavar="SPEC", help="Whose tokenizer counts the tokens.")
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


@cli.command("db-path")
@db_option
def db_path_command(db_path) -> None:
    """Print the path of the DuckDB file commands use."""
    click.echo(str(db_path or default_db_path()))


class Terminated(BaseException):
    """SIGTERM, raised where the program is so that a run in progress is
    marked failed ("terminated") instead of left looking alive."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning known failures into one-line errors."""
    import signal

    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="summarize", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("summarize: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        click.echo("summarize: interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        click.echo("summarize: terminated", err=True)
        sys.exit(143)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        from pipelines.secrets import redact

        if isinstance(exc, _user_errors()):
            click.echo(f"summarize: error: {redact(str(exc))}", err=True)
            sys.exit(EXIT_USER_ERROR)
        if os.environ.get("LONGSUM_DEBUG"):
            raise
        click.echo(
            f"summarize: internal error: {type(exc).__name__}: {redact(str(exc))} (set LONGSUM_DEBUG=1 for a traceback)",
            err=True,
        )
        sys.exit(70)



if __name__ == "__main__":
    # Run as `python -m pipelines.cli`: the command modules registered their
    # commands on the imported module, not on this __main__ copy.
    from pipelines import cli as _imported

    _imported.main()
