"""The `evaluate_corpus` flow: documents x configurations, the experiment
design of the BooookScore paper, fanned out across the task runner.

The harness's driver (`pipelines.evaluate.evaluate`) runs it, as it runs
`summarize eval`; this flow supplies the launcher that makes each document x
configuration one task (`evaluate_document_task`). At most `concurrency` run
at once and a finished one frees its slot for the next at once, so a Dask
cluster with N workers works on N documents at once; API calls of all of
them stay within the global limit. A document is read, and its earlier
calls fetched, only when its task is about to start. Each result is in the
store the moment its task finishes, and a killed flow run is resumed by the
next one over the same source and configurations. A document that cannot
be read or summarized is recorded as failed with its reason; the others
complete.
"""

from __future__ import annotations

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from concurrent.futures import Future
from pathlib import Path

from flows.limits import configured_limit, held_slots
from flows.redacting import flow
from flows.runners import task_runner_for
from flows.secrets import password_from_secret
from flows.tasks import evaluate_document_task
from pipelines.corpus import CorpusItem, load_corpus
from pipelines.evaluate import Outcome, evaluate, failures, load_item, summary_table
from pipelines.defaults import DEFAULT_MODEL
from pipelines.llm import is_tiny_model, parse_spec
from pipelines.runner import RunConfig
from pipelines.store import Store, add_run_tables, document_calls, export_parquet

DEFAULT_CONFIGS = ({"method": "hierarchical"}, {"method": "incremental"}, {"method": "extractive"})
CONFIG_KEYS = {
    "method", "model", "chunk_size", "summary_words", "compress", "compress_ratio", "compress_query", "base_url",
    "context_window", "concurrency", "chunker", "overlap", "timeout_s", "max_retries", "grounded", "citations",
}


def run_configs(configs: list[dict] | None) -> list[RunConfig]:
    out = []
    for config in configs or DEFAULT_CONFIGS:
        unknown = set(config) - CONFIG_KEYS
        if unknown:
            raise ValueError(f"unknown configuration keys {sorted(unknown)}; use {sorted(CONFIG_KEYS)}")
        run_config = RunConfig(**config)
        run_config.validate()
        out.append(run_config)
    return out


@flow(name="evaluate-corpus", flow_run_name="evaluate {source}", log_prints=True)
def evaluate_corpus(
    source: str,
    configs: list[dict] | None = None,
    metrics: list[str] | None = None,
    limit: int | None = None,
    db: str | None = None,
    dask_address: str | None = None,
    concurrency: int = 4,
    export_dir: str | None = None,
    batch: bool = False,
    max_cost: float | None = None,
    report: str | None = None,
    judge_model: str | None = None,
    judge_concurrency: int = 1,
    db_password_secret: str | None = None,
) -> list[dict]:
    """Summarize every document with every configuration, `concurrency`
    documents at a time; score, tabulate, attach the table.

    `batch`: every LLM request goes out through the provider's batch API
    (half price, answers within 24 h). `max_cost`: refuse to start when the
    preflight's upper bound exceeds it, stop when the recorded cost reaches
    it. Both run the corpus in this flow's process (see pipelines.batch_eval:
    a provider batch spans documents, a budget is one running total); the
    flow only waits while a batch is out, holding no task worker.

    `report`: where the HTML report goes (default: beside the database,
    `longsum-report-ID.html`); the flow run links to it. `judge_model`:
    the LLM judging BooookScore and faithfulness (default: the embedded
    instruct model), `judge_concurrency` of its calls in flight.
    `db_password_secret`: the Prefect Secret block holding a lake's catalog
    password (the flow's process, which writes the lake, reads it)."""
    items = load_corpus(source, limit)
    password_from_secret(db_password_secret)
    store = Store(db)
    options = judge_options(judge_model, judge_concurrency)
    if batch or max_cost is not None:
        from pipelines.batch_eval import evaluate_in_process
        from pipelines.plan import estimate_corpus, refuse_over_budget

        chosen = run_configs(configs)
        if max_cost is not None:
            refuse_over_budget(estimate_corpus(items, chosen, batch=batch)[1], max_cost)
        # Synchronous calls made in this process occupy the global limit like tasks do (a batch waits instead).
        api = set() if batch else {parse_spec(c.model)[0] for c in chosen if c.method != "extractive"}
        with held_slots(api, concurrency * max(c.concurrency for c in chosen)) as held:
            outcomes = evaluate_in_process(items, chosen, store, batch=batch, max_cost=max_cost, options=options,
                                           metrics=list(metrics) if metrics is not None else ["rouge"],
                                           concurrency=concurrency, source=_source_key(source), max_in_flight=held)
        return _report(store, items, configs, outcomes, export_dir, report)
    wanted = list(metrics) if metrics is not None else ["rouge"]
    with task_runner_for(dask_address, concurrency) as runner:
        launcher = PrefectLauncher(runner, store, wanted, options, in_process=dask_address is None)
        outcomes = evaluate(items, run_configs(configs), store, metrics=wanted, concurrency=concurrency,
                            launcher=launcher, source=_source_key(source))
    return _report(store, items, configs, outcomes, export_dir, report)


def judge_options(judge_model: str | None, judge_concurrency: int = 1):
    """The scorers' options for a flow's judge (the user's choice, stored with every judged score)."""
    from scoring import ScoringOptions

    chosen = judge_model or DEFAULT_MODEL
    if is_tiny_model(chosen):
        get_run_logger().warning("BooookScore and faithfulness are judged by %s, a tiny base model that "
                                 "cannot judge", chosen)
    return ScoringOptions(judge_model=chosen, booookscore_concurrency=judge_concurrency,
                          faithfulness_concurrency=judge_concurrency)


def _source_key(source: str) -> str:
    return str(Path(source).expanduser().resolve())


def _report(store: Store, items, configs, outcomes: list[Outcome], export_dir: str | None,
            report: str | None) -> list[dict]:
    from pipelines.report import write_report

    corpus = outcomes[0].corpus
    columns, rows = summary_table(store, outcomes)
    table = [dict(zip(columns, row)) for row in rows]
    problems = failures(outcomes)
    described = f"{len(items)} documents x {len(configs or DEFAULT_CONFIGS)} configurations"
    create_table_artifact(key="longsum-corpus", table=table, description=described)
    path = write_report(store, [o.run_id for o in outcomes],
                        report or store.path.with_name(f"longsum-report-{corpus}.html"),
                        title=f"longsum corpus evaluation {corpus}")
    create_link_artifact(key="longsum-report", link=path.resolve().as_uri(), link_text=path.name,
                         description=f"HTML report of corpus evaluation {corpus}: {described}")
    create_markdown_artifact(key="longsum-corpus-summary", markdown=_markdown(corpus, path, columns, rows),
                             description=f"corpus evaluation {corpus}")
    if problems:
        create_markdown_artifact(key="longsum-corpus-failures",
                                 markdown="### Failed\n\n" + "\n".join(f"* {p}" for p in problems))
    logger = get_run_logger()
    logger.info("corpus evaluation %s: report %s (summarize report --corpus %s)", corpus, path, corpus)
    for row in table:
        logger.info("%s", row)
    for problem in problems:
        logger.warning("failed: %s", problem)
    if export_dir:
        folder = export_parquet(store, [o.run_id for o in outcomes], export_dir)
        logger.info("exported this evaluation's runs to %s", folder)
    return table


def _markdown(corpus: str, path, columns: list[str], rows: list[tuple]) -> str:
    def cell(value) -> str:
        return "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = [f"### Corpus evaluation `{corpus}`", "", f"Report: [{path.name}]({path.resolve().as_uri()})", "",
             "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class PrefectLauncher:
    """Each document x configuration as `evaluate_document_task` on `runner`.

    `in_process`: the runner's threads share this process, so a task writes
    the flow's store as it goes. Otherwise (Dask) a task gets the document's
    text and earlier calls as data, and its rows are written here when it
    finishes."""

    def __init__(self, runner, store: Store, metrics: list[str], options, *, in_process: bool):
        self.runner, self.store, self.metrics, self.options, self.in_process = runner, store, metrics, options, in_process
        self._limits: dict[str | None, str | None] = {}
        self._last: tuple[tuple, CorpusItem | Outcome] | None = None  # its other configurations come next

    def start(self, item: CorpusItem, config: RunConfig, corpus: str):
        loaded = self._read(item, config, corpus)
        if isinstance(loaded, Outcome):
            unreadable: Future = Future()
            unreadable.set_result((loaded, None))
            return unreadable
        backend = parse_spec(config.model)[0] if config.method != "extractive" else None
        if backend not in self._limits:
            self._limits[backend] = configured_limit(backend) if backend in ("openai", "anthropic") else None
        # A lake is reachable from every worker: a task writes it as it goes (and replays from its journal),
        # wherever it runs. A file is this machine's: a Dask task gets the calls to replay and hands its rows back.
        direct = self.in_process or self.store.lake is not None
        replay = None if direct else document_calls(self.store, loaded.document.doc_id)
        return self.runner.submit(evaluate_document_task, dict(
            item=loaded, config=config, metrics=self.metrics, options=self.options, corpus=corpus, replay=replay,
            limit=self._limits[backend], db=str(self.store.path) if direct else None))

    def _read(self, item: CorpusItem, config: RunConfig, corpus: str) -> CorpusItem | Outcome:
        """The document, read once for its configurations in a row (the worker cannot see this machine's files)."""
        key = (item.name, item.path, config.kind)
        if self._last is None or self._last[0] != key or isinstance(self._last[1], Outcome):
            self._last = (key, load_item(item, config, self.store, corpus))
        return self._last[1]

    def finish(self, item: CorpusItem, config: RunConfig, corpus: str, future) -> Outcome:
        outcome, tables = future.result()
        if tables:
            add_run_tables(self.store, tables)
        return outcome
