"""The `summarize` command: the CLI face of longsum.

    summarize FILE [options]          summarize a book, paper or source file
    summarize runs                    list runs
    summarize show RUN_ID             print a run's summaries
    summarize sql "SELECT ..."        read-only SQL over the store

click lives only in this package, one module per command group. Heavy
libraries (llama.cpp, torch, prefect, the SDKs) are imported inside the
commands that use them, so `--help` and `sql` start quickly. Errors the user
can fix are one line on stderr and exit status 1, never a traceback.
"""

from __future__ import annotations

import os
import sys

import click
from click_default_group import DefaultGroup

from pipelines.cli import chunks, compress, corpus, limits, report, run, scoring, serve, store, text
from pipelines.cli.common import EXIT_INTERRUPTED, EXIT_USER_ERROR, user_errors


@click.group(cls=DefaultGroup, default="run", default_if_no_args=False,
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


for command in (
    run.run_command, store.runs_command, store.show_command, store.sql_command, store.check_command,
    store.db_path_command, store.vacuum_command, chunks.chunks_command, compress.compress_command, scoring.score_command,
    scoring.eval_group, scoring.import_booookscore_command, scoring.import_fables_command, corpus.corpus_command,
    serve.serve_command, limits.limits_command, text.text_command, report.report_command, store.snapshots_command,
    store.db_group,
):
    cli.add_command(command)


class Terminated(BaseException):
    """SIGTERM, raised where the program is so that a run in progress is
    marked failed ("terminated") instead of left looking alive."""


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the CLI, turning known failures into one-line errors.

    Every message leaves through one place: stderr, redacted as a whole
    (`pipelines.secrets.redacted_stderr`), so a credential in a URL never
    reaches an error, a usage message, a warning or a traceback."""
    import signal

    from pipelines.secrets import redacted_stderr

    signal.signal(signal.SIGTERM, _terminate)
    with redacted_stderr():
        code = _run(argv)
    sys.exit(code)


def _run(argv: list[str] | None) -> int:
    """The CLI's exit status; every message it prints goes to (redacted) stderr."""
    try:
        # Not standalone: click returns the code of a ctx.exit(n) instead of exiting.
        code = cli.main(args=argv, prog_name="summarize", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("summarize: interrupted", err=True)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        click.echo("summarize: interrupted", err=True)
        return EXIT_INTERRUPTED
    except Terminated:
        click.echo("summarize: terminated", err=True)
        return 143
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # noqa: BLE001 - the one place that turns errors into exit codes
        if isinstance(exc, user_errors()):
            click.echo(f"summarize: error: {exc}", err=True)
            return EXIT_USER_ERROR
        if os.environ.get("LONGSUM_DEBUG"):
            import traceback

            traceback.print_exc()  # through the redacting stderr
            return 70
        click.echo(
            f"summarize: internal error: {type(exc).__name__}: {exc} (set LONGSUM_DEBUG=1 for a traceback)",
            err=True,
        )
        return 70
    return code if isinstance(code, int) else 0
