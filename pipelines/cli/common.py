"""What the command modules share: the one-line user error, the store and
scoring options, Prefect's environment, and writing an output file atomically."""

from __future__ import annotations

import os
from pathlib import Path

import click

from pipelines.defaults import DEFAULT_MODEL
from pipelines.paths import default_db_path

EXIT_USER_ERROR = 1
# A run that finished degraded, under --strict / LONGSUM_STRICT=1 (scripts tell it from success).
EXIT_DEGRADED = 3
# `summarize corpus`: some document failed (the others finished; the table and the failures are printed).
EXIT_FAILED_DOCUMENTS = 4
EXIT_INTERRUPTED = 130


class UserError(click.ClickException):
    """Printed as one line: 'summarize: error: ...'."""

    def show(self, file=None) -> None:
        click.echo(f"summarize: error: {self.format_message()}", err=True)


def user_errors() -> tuple[type[BaseException], ...]:
    from pipelines.documents import DocumentError
    from pipelines.llm.base import LLMError
    from pipelines.store import StoreError
    from prompts import PromptError

    return (DocumentError, LLMError, StoreError, PromptError, ValueError, OSError)


def strict_from_environment() -> bool:
    """LONGSUM_STRICT=1 (or true/yes/on): a degraded run is not a success."""
    return os.environ.get("LONGSUM_STRICT", "").strip().lower() in ("1", "true", "yes", "on")


def prefect_environment() -> None:
    """Before Prefect is imported: nothing phones home."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def open_store(db_path: Path | str | None, read_only: bool = False, at: str | None = None):
    from pipelines.store import Store

    return Store(db_path, read_only=read_only, at=at)


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
        click.option("--judge-model", default=DEFAULT_MODEL, show_default=True, metavar="SPEC",
                     help="LLM that annotates sentences for BooookScore (same specs as --model)."),
        click.option("--judge-base-url", default=None, metavar="URL",
                     help="OpenAI-compatible server for an openai: judge."),
        click.option("--judge-concurrency", type=click.IntRange(min=1), default=1, show_default=True,
                     help="Judge calls in flight at once, BooookScore and faithfulness (API judges)."),
        click.option("--booookscore-prompt", type=click.Choice(["v1", "v2"]), default="v1", show_default=True,
                     help="v1: one call per sentence; v2: batches of sentences answered as JSON."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


class DbTarget(click.ParamType):
    """--db: a DuckDB file (a Path), or a lake spec kept as the string it is (`ducklake:...`)."""

    name = "FILE|ducklake:..."

    def convert(self, value, param, ctx):
        if isinstance(value, (Path, str)) and str(value).startswith("ducklake:"):
            from pipelines.lake import Lake, LakeError

            try:  # a password leaves the spec here (for PGPASSWORD): never a flow parameter, row or log
                return str(Lake.parse(str(value)).spec)
            except LakeError as exc:
                raise UserError(str(exc)) from None
        path = Path(value)
        if path.is_dir():
            self.fail(f"{value} is a directory", param, ctx)
        return path


def _data_path(ctx, param, value):
    """--data-path: where a new lake puts its Parquet files; kept in LONGSUM_DATA_PATH so that the
    store (and the processes this one starts) see it."""
    if value:
        os.environ["LONGSUM_DATA_PATH"] = str(Path(value).expanduser().resolve())
    return value


def db_option(function):
    function = click.option(
        "--data-path", type=click.Path(file_okay=False), default=None, expose_value=False, callback=_data_path,
        is_eager=True, metavar="DIR",
        help="Where a new lake keeps its Parquet files (needed only when --db creates a lake; "
             "its catalog remembers it).",
    )(function)
    return click.option(
        "--db", "db_path", type=DbTarget(), default=None,
        help=f"DuckDB file, or a lake: ducklake:postgres:<libpq conninfo> (many machines) or "
             f"ducklake:sqlite:PATH (default: $LONGSUM_DB or {default_db_path()}).",
    )(function)


def at_option(function):
    return click.option(
        "--at", default=None, metavar="SNAPSHOT|TIMESTAMP",
        help="A lake as of a snapshot id or a moment (summarize snapshots lists them).",
    )(function)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
