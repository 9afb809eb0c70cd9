"""Commands over the store: `runs`, `show`, `sql`, `check`, `db-path`, `snapshots` read it; `vacuum`
compacts it; `db copy` moves a store between a DuckDB file and a lake."""

from __future__ import annotations

import click

from pipelines.cli.common import DbTarget, UserError, at_option, db_option, open_store
from pipelines.paths import default_db


@click.command("runs")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@at_option
@db_option
def runs_command(limit, fmt, at, db_path) -> None:
    """List the most recent runs (of a lake as of --at)."""
    from pipelines.sql import run_readonly_query, render

    columns, rows = run_readonly_query(
        open_store(db_path, read_only=True, at=at),
        "SELECT r.run_id, strftime(r.started_at, '%Y-%m-%d %H:%M') AS started, "
        "coalesce(nullif(d.title, ''), r.params->>'item', regexp_extract(r.document_path, '[^/]*$')) AS document, "
        # (a failed baseline run stored before issue 27 has no model: its configuration names it)
        "r.method, coalesce(r.model, r.params->>'configuration') AS model, r.status, r.n_chunks AS chunks, "
        "r.llm_calls AS calls, r.cache_hits AS cached, "
        "r.input_tokens + r.output_tokens AS tokens, "
        "CASE WHEN coalesce(r.input_tokens, 0) = 0 THEN NULL "
        "ELSE round(100.0 * coalesce(r.cached_input_tokens, 0) / r.input_tokens, 1) END AS \"cached input %\", "
        "round(r.cost_usd, 4) AS cost_usd, "
        "CASE WHEN r.compression IS NULL THEN '' ELSE r.compression || ' saved ' || "
        "(r.tokens_before_compression - r.tokens_after_compression) END AS compression, "
        "round(r.seconds, 1) AS seconds, r.pid, r.host "
        "FROM runs r LEFT JOIN (SELECT doc_id, any_value(title) AS title FROM documents GROUP BY doc_id) d USING (doc_id) "
        f"ORDER BY r.started_at DESC LIMIT {int(limit)}",
    )
    click.echo(render(columns[:-2], [_interrupted(columns, row)[:-2] for row in rows], fmt))


def _interrupted(columns: list[str], row: tuple) -> tuple:
    """A `running` run whose process on this host is gone shows as interrupted
    (the next run on the store records it so)."""
    import socket

    from pipelines.runner import alive

    values = dict(zip(columns, row))
    if values["status"] == "running" and values["host"] == socket.gethostname() and not alive(values["pid"]):
        values["status"] = "interrupted"
    return tuple(values.values())


@click.command("show")
@click.argument("run_id")
@click.option("--all", "show_all", is_flag=True, help="Every summary of the run (all levels and steps), not only the final one.")
@db_option
def show_command(run_id, show_all, db_path) -> None:
    """Print a run's final summary (or all of its summaries); a run that failed, its reason."""
    from pipelines.sql import run_readonly_query

    store = open_store(db_path, read_only=True)
    _, runs = run_readonly_query(
        store, "SELECT run_id, status, error, degraded_summaries, n_summaries FROM runs WHERE run_id LIKE ? || '%' "
        "ORDER BY started_at DESC", [run_id])
    where = "" if show_all else " AND is_final"
    _, rows = run_readonly_query(
        store,
        f"SELECT level, idx, kind, n_words, degraded, note, text FROM summaries WHERE run_id LIKE ? || '%'{where} "
        "ORDER BY created_at, level, idx",
        [run_id],
    )
    if not rows:
        if len(runs) == 1 and runs[0][1] != "ok":
            full_id, status, error = runs[0][:3]
            raise UserError(f"run {full_id} {status}: {error or 'no reason was recorded'}")
        raise UserError(f"no summaries for run {run_id!r} in {store.path}")
    for level, idx, kind, n_words, degraded, note, text in rows:
        if show_all:
            click.echo(f"--- level {level} #{idx} {kind}, {n_words} words{f' (degraded: {note})' if degraded else ''}")
        click.echo(text)
    if len(runs) == 1 and runs[0][1] == "degraded":
        full_id, _, _, degraded, total = runs[0]
        click.echo(f"warning: run {full_id} is degraded: {degraded} of its {total} summaries are "
                   f"(`summarize show {full_id[:8]} --all` gives each one's reason)", err=True)


@click.command("sql")
@click.argument("query")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--unsafe", is_flag=True,
              help="Allow writes, ATTACH, COPY, extensions and reading files (off by default: the query runs read-only and sandboxed).")
@at_option
@db_option
def sql_command(query, fmt, unsafe, at, db_path) -> None:
    """Run a SQL QUERY over the store and print the result (read-only unless --unsafe; a lake as of --at)."""
    from pipelines.sql import render, run_query, run_readonly_query

    if unsafe and at:
        raise UserError("--at reads a snapshot, which cannot be written: drop --unsafe")
    if unsafe:
        columns, rows = run_query(open_store(db_path), query)
    else:
        columns, rows = run_readonly_query(open_store(db_path, read_only=True, at=at), query)
    click.echo(render(columns, rows, fmt))


@click.command("check")
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


@click.command("db-path")
@db_option
def db_path_command(db_path) -> None:
    """Print the DuckDB file (or the lake) commands use."""
    click.echo(str(db_path or default_db()))


@click.command("vacuum")
@click.option("--no-compact", is_flag=True,
              help="Only drop what no run references and CHECKPOINT; do not rewrite the file to shrink it.")
@db_option
def vacuum_command(no_compact, db_path) -> None:
    """Drop what no run references and give the space back.

    Drops the chunks, summaries, compressed chunks, replays and failed calls of
    runs that are gone (deleted from `runs`) and every stored text no row names
    any more; keeps every paid answer (a later run replays it). Then CHECKPOINT,
    and where DuckDB left free blocks inside the file, a compacting copy that
    replaces it (the file stays locked meanwhile)."""
    from pipelines.store import vacuum

    store = open_store(db_path)
    if not store.path.exists():
        raise UserError(f"no database at {store.path}")
    result = vacuum(store, compact=not no_compact)
    how = "files merged" if store.lake is not None else "compacted" if result["swapped"] else "checkpointed"
    click.echo(f"{store.path}: {_mb(result['before'])} -> {_mb(result['after'])} ({how})")
    for label, count in result["dropped"].items():
        if count:
            click.echo(f"dropped {count} {label}")


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB"


@click.command("snapshots")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@db_option
def snapshots_command(limit, fmt, db_path) -> None:
    """List a lake's snapshots, newest first: when, who, the command and the runs each commit wrote.

    Any of them can be read as of: summarize sql --at ID (or a timestamp), runs --at, report --at."""
    from pipelines.sql import render, run_readonly_query

    store = open_store(db_path, read_only=True)
    if store.lake is None:
        raise UserError(f"{store.path} is a DuckDB file, which keeps no snapshots (a lake does: summarize db copy)")
    columns, rows = run_readonly_query(
        store,
        "SELECT snapshot_id AS snapshot, strftime(snapshot_time AT TIME ZONE 'UTC', '%Y-%m-%d %H:%M:%S') AS utc, "
        "author, commit_message AS command, "
        "array_to_string(CAST(json_extract_string(commit_extra_info, '$.runs[*]') AS VARCHAR[]), ' ') AS runs, "
        "array_to_string(CAST(json_extract_string(commit_extra_info, '$.tables[*]') AS VARCHAR[]), ' ') AS wrote "
        f"FROM lake.snapshots() ORDER BY snapshot_id DESC LIMIT {int(limit)}",
    )
    click.echo(render(columns, rows, fmt))


@click.group("db")
def db_group() -> None:
    """The store as a whole: copy it between a DuckDB file and a lake."""


@db_group.command("copy")
@click.argument("source", type=DbTarget())
@click.argument("target", type=DbTarget())
@click.option("--data-path", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Where a new lake TARGET keeps its Parquet files.")
def db_copy_command(source, target, data_path) -> None:
    """Copy every table of SOURCE into TARGET (a DuckDB file into a lake, or back).

    TARGET must hold no rows yet; counts are compared table by table after the copy."""
    from pipelines.store import Store, copy_store

    counts = copy_store(Store(source, read_only=True), Store(target, data_path=data_path))
    for table, count in counts.items():
        click.echo(f"{table}: {count}")
    click.echo(f"copied {sum(counts.values())} rows in {len(counts)} tables into {Store(target).path}", err=True)
