"""`summarize report`: one self-contained HTML file of runs and their scores."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import UserError, at_option, db_option, open_store


@click.command("report")
@click.argument("run_ids", nargs=-1)
@click.option("--last", type=click.IntRange(min=1), default=None, help="The last N runs.")
@click.option("--document", default=None, metavar="NAME", help="Every run of this document: its title, file name or file stem, exactly.")
@click.option("--corpus", "corpus_run", default=None, metavar="ID", help="Every run of one corpus evaluation (its id).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("report.html"),
              show_default=True, help="Where to write the report.")
@click.option("--title", default="longsum report", show_default=True)
@at_option
@db_option
def report_command(run_ids, last, document, corpus_run, output, title, at, db_path) -> None:
    """Write an HTML report of runs (RUN_ID..., --last, --document or --corpus).

    One file that opens from disk without a network: each run's final summary
    with its sentences marked by the judges, the summary tree, cost and time
    per step, and every score per configuration."""
    from pipelines.report import ReportError, select_runs, write_report

    store = open_store(db_path, read_only=True, at=at)
    try:
        selected = select_runs(store, run_ids, last=last, document=document, corpus_run=corpus_run)
    except ReportError as exc:
        raise UserError(str(exc)) from None
    path = write_report(store, selected, output, title)
    click.echo(f"wrote {path} ({len(selected)} runs, {path.stat().st_size / 1024:.0f} KiB)", err=True)
