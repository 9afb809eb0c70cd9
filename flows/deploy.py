"""Deployments of longsum's flows, with schedules, served by this process.

    prefect server start --host 127.0.0.1                     # once, in another terminal
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    summarize serve books/ --cron "0 2 * * *" --db nightly.duckdb

or `python -m flows.deploy books/ --cron "0 2 * * *"`, a shorter option list
over the same code (`serving`, then `serve_deployments`). This creates two
deployments on the server and runs their flow runs in this process until it
is stopped:

* `evaluate-corpus/nightly-evaluation`: the corpus flow over the folder (or
  SQuALITY .jsonl) on the cron schedule (or every `--interval` seconds);
* `summarize-document/on-demand`: one document, started by hand, e.g.
  `prefect deployment run summarize-document/on-demand -p path=book.txt`.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def build_deployments(
    source: str,
    *,
    cron: str | None = None,
    interval: float | None = None,
    configs: list[dict] | None = None,
    metrics: list[str] | None = None,
    db: str | None = None,
    dask_address: str | None = None,
    limit: int | None = None,
    export_dir: str | None = None,
    concurrency: int | None = None,
    name: str = "nightly-evaluation",
    batch: bool = False,
    max_cost: float | None = None,
    judge_model: str | None = None,
    judge_concurrency: int = 1,
    db_password_secret: str | None = None,
):
    from flows.evaluate_flow import evaluate_corpus
    from flows.summarize_flow import summarize_document_flow

    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of a cron schedule or an interval")
    if db and not str(db).startswith("ducklake:"):  # a lake's spec is not a path
        db = str(Path(db).expanduser().resolve())
    parameters = {
        "source": str(Path(source).expanduser().resolve()), "configs": configs, "metrics": metrics, "db": db,
        "dask_address": dask_address, "limit": limit, "export_dir": export_dir, "concurrency": concurrency,
        "batch": batch or None, "max_cost": max_cost, "judge_model": judge_model,
        "judge_concurrency": judge_concurrency, "db_password_secret": db_password_secret,
    }
    refuse_credentials(parameters)
    schedule = {"cron": cron} if cron else {"interval": interval}
    # One evaluation at a time: a run that outlasts its interval delays the next instead of piling up.
    corpus = evaluate_corpus.to_deployment(
        name=name, parameters={k: v for k, v in parameters.items() if v is not None}, tags=["longsum"],
        concurrency_limit=1, **schedule,
    )
    store = {"db": db, "db_password_secret": db_password_secret}
    single = summarize_document_flow.to_deployment(
        name="on-demand", parameters={k: v for k, v in store.items() if v is not None}, tags=["longsum"])
    return [corpus, single]


class CredentialsInParameters(ValueError):
    """A deployment parameter carries a credential (its text is not repeated here)."""


def refuse_credentials(parameters) -> None:
    """A deployment's parameters are stored in Prefect as given (only a flow
    run's are scrubbed, see flows.redacting): a value that carries a key (a
    URL's user:password, an api-key query, a key's shape) is refused, every
    deployment this module builds, whichever face asked for it."""
    from flows.redacting import scrubbed

    for name, value in parameters.items():
        if scrubbed(value) != value:
            raise CredentialsInParameters(
                f"the deployment parameter {name!r} carries credentials, and Prefect stores a deployment's "
                f"parameters as given; pass the key in OPENAI_API_KEY (or ANTHROPIC_API_KEY) instead")


def serve_policy(source: str, configs: list[dict] | None = None, db: str | None = None,
                 dask_address: str | None = None, read_roots=(), base_urls=(), write_dir: str | None = None):
    """What the served flow runs may read, call and write (flows.guard): SOURCE
    and `read_roots`; the endpoints of the configurations and `base_urls`; the
    database's folder, or `write_dir`."""
    from flows.guard import ServePolicy, endpoint_url
    from pipelines.defaults import DEFAULT_MODEL
    from pipelines.llm import parse_spec
    from pipelines.lake import Lake, is_lake
    from pipelines.paths import default_db, default_db_path

    urls, models = list(base_urls), []
    for config in configs or []:
        spec = config.get("model") or DEFAULT_MODEL
        backend, name = parse_spec(spec)
        if backend == "llamacpp":
            models.append(spec)
        if config.get("base_url") or backend != "llamacpp":
            urls.append(endpoint_url(backend, config.get("base_url")))
    target = str(db) if db else str(default_db())  # runs without `db` write the default, maybe a lake
    lake = Lake.parse(target).spec if is_lake(target) else None
    folder = write_dir or Path(target if not lake else default_db_path()).expanduser().resolve().parent
    return ServePolicy.build([source, *read_roots], urls, folder, dask_address, models, lakes=[lake] if lake else [])


def serving(source: str, configs: list[dict] | None = None, *, db: str | None = None,
            dask_address: str | None = None, read_roots=(), allowed_urls=(), write_dir: str | None = None,
            **options):
    """What `summarize serve` serves: the deployments of SOURCE (`build_deployments`,
    given `options`) and the policy their runs are held to (`serve_policy`),
    checked against each other. A ValueError, one line without a credential,
    when they cannot be served."""
    if db and str(db).startswith("ducklake:"):  # no password in a deployment's parameters
        from pipelines.lake import Lake

        db = str(Lake.parse(str(db)).spec)
    deployments = build_deployments(source, configs=configs, db=db, dask_address=dask_address, **options)
    policy = serve_policy(source, configs, db, dask_address, read_roots, allowed_urls, write_dir)
    check_deployments(deployments, policy)
    return deployments, policy


def check_deployments(deployments, policy) -> None:
    """The deployments' own parameters must keep to the policy, or every run would be refused."""
    for deployment in deployments:
        policy.check(deployment.name, deployment.parameters or {})


def serve_deployments(deployments, policy=None) -> None:
    """Serve until stopped; the flow runs are held to `policy` (flows.guard)."""
    from prefect import serve

    if policy is not None:
        policy.install()
        print("flow runs of these deployments:\n  " + "\n  ".join(policy.describe()))

    if not os.environ.get("PREFECT_API_URL"):
        print("note: PREFECT_API_URL is not set; schedules need a running server "
              "(prefect server start --host 127.0.0.1, then export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    serve(*deployments)


def main(argv: list[str] | None = None) -> None:
    """`python -m flows.deploy`: a few of `summarize serve`'s options, parsed
    here, then served by the same code."""
    parser = argparse.ArgumentParser(description="Serve longsum's deployments with a schedule.")
    parser.add_argument("source", help="folder of documents or a SQuALITY .jsonl file")
    parser.add_argument("--cron", help='cron schedule, e.g. "0 2 * * *" (nightly at 02:00)')
    parser.add_argument("--interval", type=float, help="run every N seconds instead of a cron schedule")
    parser.add_argument("--configs", help="JSON list of configurations, e.g. '[{\"method\": \"incremental\"}]'")
    parser.add_argument("--metrics", help="comma-separated: rouge,bertscore,booookscore")
    parser.add_argument("--db", help="DuckDB file, or a lake: ducklake:postgres:<conninfo> (password from PGPASSWORD "
                        "or a service file, never in the conninfo)")
    parser.add_argument("--db-password-secret", help="Prefect Secret block holding the lake's catalog password")
    parser.add_argument("--dask-address", help="tcp://host:port of an existing Dask scheduler")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--export-dir", help="also export each evaluation's runs as Parquet files here")
    parser.add_argument("--batch", action="store_true", help="send the LLM requests through the providers' batch APIs")
    parser.add_argument("--max-cost", type=float, help="USD budget of each evaluation")
    parser.add_argument("--read-root", action="append", default=[],
                        help="another folder flow runs may read documents from (besides SOURCE)")
    parser.add_argument("--allow-base-url", action="append", default=[],
                        help="another base URL flow runs may call (besides their configurations')")
    parser.add_argument("--write-dir", help="the folder flow runs may write into (default: the database's)")
    from pipelines.secrets import redacted_stderr

    with redacted_stderr():  # argparse's usage errors and every message after, as the CLI's
        args = parser.parse_args(argv)
        try:
            deployments, policy = serving(
                args.source, json.loads(args.configs) if args.configs else None, db=args.db,
                dask_address=args.dask_address, read_roots=args.read_root, allowed_urls=args.allow_base_url,
                write_dir=args.write_dir, cron=args.cron, interval=args.interval,
                metrics=args.metrics.split(",") if args.metrics else None, limit=args.limit,
                export_dir=args.export_dir, batch=args.batch, max_cost=args.max_cost,
                db_password_secret=args.db_password_secret,
            )
        except ValueError as exc:
            parser.error(str(exc))
        serve_deployments(deployments, policy)


if __name__ == "__main__":
    main()
