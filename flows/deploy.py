"""Deployments of longsum's flows, with schedules, served by this process.

    prefect server start --host 127.0.0.1                     # once, in another terminal
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    summarize serve books/ --cron "0 2 * * *" --db nightly.duckdb

or, equivalently, `python -m flows.deploy books/ --cron "0 2 * * *"`. This
creates two deployments on the server and runs their flow runs in this
process until it is stopped:

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
):
    from flows.corpus import evaluate_corpus
    from flows.summarize_flow import summarize_document

    if (cron is None) == (interval is None):
        raise ValueError("give exactly one of a cron schedule or an interval")
    db = str(Path(db).expanduser().resolve()) if db else None
    parameters = {
        "source": str(Path(source).expanduser().resolve()), "configs": configs, "metrics": metrics, "db": db,
        "dask_address": dask_address, "limit": limit, "export_dir": export_dir, "concurrency": concurrency,
        "batch": batch or None, "max_cost": max_cost,
    }
    schedule = {"cron": cron} if cron else {"interval": interval}
    # One evaluation at a time: a run that outlasts its interval delays the next instead of piling up.
    corpus = evaluate_corpus.to_deployment(
        name=name, parameters={k: v for k, v in parameters.items() if v is not None}, tags=["longsum"],
        concurrency_limit=1, **schedule,
    )
    single = summarize_document.to_deployment(name="on-demand", parameters={"db": db} if db else {}, tags=["longsum"])
    return [corpus, single]


def serve_deployments(deployments) -> None:
    from prefect import serve

    if not os.environ.get("PREFECT_API_URL"):
        print("note: PREFECT_API_URL is not set; schedules need a running server "
              "(prefect server start --host 127.0.0.1, then export PREFECT_API_URL=http://127.0.0.1:4200/api)")
    serve(*deployments)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve longsum's deployments with a schedule.")
    parser.add_argument("source", help="folder of documents or a SQuALITY .jsonl file")
    parser.add_argument("--cron", help='cron schedule, e.g. "0 2 * * *" (nightly at 02:00)')
    parser.add_argument("--interval", type=float, help="run every N seconds instead of a cron schedule")
    parser.add_argument("--configs", help="JSON list of configurations, e.g. '[{\"method\": \"incremental\"}]'")
    parser.add_argument("--metrics", help="comma-separated: rouge,bertscore,booookscore")
    parser.add_argument("--db", help="DuckDB file")
    parser.add_argument("--dask-address", help="tcp://host:port of an existing Dask scheduler")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--export-dir", help="also write each batch as Parquet files here")
    parser.add_argument("--batch", action="store_true", help="send the LLM requests through the providers' batch APIs")
    parser.add_argument("--max-cost", type=float, help="USD budget of each evaluation")
    args = parser.parse_args(argv)
    serve_deployments(build_deployments(
        args.source, cron=args.cron, interval=args.interval,
        configs=json.loads(args.configs) if args.configs else None,
        metrics=args.metrics.split(",") if args.metrics else None, db=args.db,
        dask_address=args.dask_address, limit=args.limit, export_dir=args.export_dir, batch=args.batch,
        max_cost=args.max_cost,
    ))


if __name__ == "__main__":
    main()
