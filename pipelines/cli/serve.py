"""`summarize serve`: the flows as Prefect deployments, served on a schedule
(the code is `flows.deploy`'s; `python -m flows.deploy` is the same)."""

from __future__ import annotations

from pathlib import Path

import click

from pipelines.cli.common import UserError, db_option, prefect_environment
from pipelines.cli.corpus import apply_options, check_batch, corpus_configs, corpus_options
from pipelines.defaults import DEFAULT_MODEL


@click.command("serve")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--cron", default=None, help='Cron schedule of the corpus evaluation, e.g. "0 2 * * *".')
@click.option("--interval", type=click.FloatRange(min=1), default=None, help="Or: run it every N seconds.")
@click.option("--api-limit", type=click.IntRange(min=1), default=None,
              help="Set the global limit of API calls in flight for the model's backend (see `summarize limits`).")
@apply_options(corpus_options)
@click.option("--read-root", "read_roots", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Another folder flow runs may read documents from (besides SOURCE); repeat for several.")
@click.option("--allow-base-url", "allowed_urls", multiple=True, metavar="URL",
              help="Another base URL flow runs may call (besides the configurations'); repeat for several.")
@click.option("--write-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The folder flow runs may write into: database, exports, reports (default: the database's).")
@click.option("--db-password-secret", default=None, metavar="BLOCK",
              help="Prefect Secret block holding the lake's catalog password: flow runs read it, their "
                   "parameters name only the block.")
@db_option
def serve_command(source, cron, interval, api_limit, methods, model, base_url, chunk_size, summary_words,
                  configs_json, metrics, limit, dask_address, concurrency, call_concurrency, export_dir, batch,
                  judge_model, judge_concurrency, max_cost, read_roots, allowed_urls, write_dir, db_password_secret,
                  citations, grounded, db_path) -> None:
    """Serve the flows as Prefect deployments with a schedule.

    SOURCE (a folder, or a SQuALITY .jsonl) is evaluated on the schedule.

    Anyone who can reach the Prefect API can start these deployments with
    parameters of their own: a flow run may read documents only under SOURCE
    (and --read-root), call only the configurations' base URLs (and
    --allow-base-url), and write only into the database's folder (or
    --write-dir); a run whose parameters leave these fails before it reads,
    sends or writes anything.

    Needs a Prefect server: `prefect server start --host 127.0.0.1` and
    PREFECT_API_URL=http://127.0.0.1:4200/api in this shell."""
    prefect_environment()
    if (cron is None) == (interval is None):
        raise UserError("give exactly one of --cron or --interval")
    configs = corpus_configs(methods, model, base_url, chunk_size, summary_words, call_concurrency, configs_json,
                             citations=citations, grounded=grounded)
    check_batch(batch, configs, dask_address)
    from flows.deploy import serve_deployments, serving

    try:
        deployments, policy = serving(
            str(source), configs, db=str(db_path) if db_path else None, dask_address=dask_address,
            read_roots=[str(r) for r in read_roots], allowed_urls=allowed_urls,
            write_dir=str(write_dir) if write_dir else None, cron=cron, interval=interval,
            metrics=metrics.split(",") if metrics else None, limit=limit, export_dir=export_dir,
            concurrency=concurrency, batch=batch, max_cost=max_cost, judge_model=judge_model,
            judge_concurrency=judge_concurrency, db_password_secret=db_password_secret,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if api_limit:
        from flows.limits import API_BACKENDS, set_limit
        from pipelines.llm import parse_spec

        for backend in sorted({parse_spec(c.get("model", DEFAULT_MODEL))[0] for c in configs
                               if c.get("method", "hierarchical") != "extractive"} & set(API_BACKENDS)):
            set_limit(backend, api_limit)
    serve_deployments(deployments, policy)
