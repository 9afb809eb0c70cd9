"""The evaluation harness: one per-document function and one failure rule
for `summarize eval` and the corpus flow (whose fan-out is in test_flows)."""

import datetime as dt
from pathlib import Path

import pytest

from pipelines.corpus import CorpusError, CorpusItem, load_corpus, squality_items
from pipelines.evaluate import config_label, evaluate, failures, summary_table, with_baseline
from pipelines.runner import RunConfig
from scoring import ScoringOptions
from scripted import ScriptedBackend, echo_answer

DATA = Path(__file__).parent / "data"
SQUALITY = DATA / "squality" / "dev_subset.jsonl"


def failing_on(marker: str):
    """A backend that fails every request about the document containing `marker`."""
    def answer(request):
        if marker in request.messages[-1]["content"]:
            raise RuntimeError("the model fell over")
        return echo_answer(request)
    return answer


@pytest.mark.slow
def test_one_failure_rule_bad_documents_are_recorded_the_others_complete(store, tmp_path):
    stories = squality_items(SQUALITY, limit=2)
    marker = " ".join(stories[1].document.text.split()[10:16])  # in its first chunk only
    unreadable = tmp_path / "scan.txt"
    unreadable.write_bytes(b"%PDF-1.4 not really" + bytes(range(256)))
    items = [*stories, CorpusItem(name="scan.txt", path=str(unreadable))]
    configs = with_baseline([RunConfig(method="hierarchical", model="scripted", summary_words=80)])
    outcomes = evaluate(items, configs, store, metrics=["rouge"], backend=ScriptedBackend(failing_on(marker)),
                        options=ScoringOptions(label="harness"))
    status = {(o.document, o.configuration.split(" ")[0]): o.status for o in outcomes}
    assert status[(stories[0].name, "hierarchical")] in ("ok", "degraded")
    assert status[(stories[1].name, "hierarchical")] == "failed"  # its summaries failed
    assert status[(stories[1].name, "extractive")] == "ok"  # the baseline needs no model
    assert status[("scan.txt", "hierarchical")] == status[("scan.txt", "extractive")] == "failed"
    # Every outcome has its runs row; the failures say why.
    rows = dict(store.execute("SELECT run_id, status FROM runs"))
    assert {o.run_id: o.status for o in outcomes} == rows
    reasons = "\n".join(failures(outcomes))
    assert "the model fell over" in reasons and "cannot read" in reasons and reasons.count("\n") == 2
    # The table counts them per configuration; only finished runs are averaged.
    columns, table = summary_table(store, outcomes)
    by_label = {row[0]: dict(zip(columns, row)) for row in table}
    llm = by_label[config_label(configs[0])]
    assert (llm["runs"], llm["failed"], llm["ok"] + llm["degraded"]) == (3, 2, 1)
    assert 0 < llm["rouge1"] < 1
    assert by_label["extractive (baseline)"]["failed"] == 1
    # The scored runs were scored against their story's four plot answers.
    refs = store.execute("SELECT count(DISTINCT reference_id) FROM scores WHERE label = 'harness' "
                         "AND reference_id IS NOT NULL")
    assert refs == [(8,)]


class Overlapping(ScriptedBackend):
    """Counts the documents asking at once (each document runs in a thread of
    its own, its steps one after another). Its first call waits for a call
    from another document: one comes at once when documents run side by side,
    never when they take turns (then the wait times out) -- no timing race."""

    def __init__(self):
        super().__init__()
        import threading

        self.overlap = threading.Condition()
        self.asking: dict[int, int] = {}
        self.most = 0
        self.waited = False

    def complete(self, request):
        import threading

        me = threading.get_ident()
        with self.overlap:
            self.asking[me] = self.asking.get(me, 0) + 1
            self.most = max(self.most, len(self.asking))
            self.overlap.notify_all()
            if not self.waited:
                self.waited = True
                self.overlap.wait_for(lambda: len(self.asking) > 1, timeout=3)
        try:
            return super().complete(request)
        finally:
            with self.overlap:
                self.asking[me] -= 1
                if not self.asking[me]:
                    del self.asking[me]


@pytest.mark.slow
def test_documents_run_concurrently_with_the_same_results(store, tmp_path):
    from pipelines.store import Store

    stories = squality_items(SQUALITY, limit=3)
    configs = [RunConfig(method="hierarchical", model="scripted", summary_words=60)]
    alone = Overlapping()
    one = evaluate(stories, configs, store, backend=alone)
    other = Store(tmp_path / "other.duckdb")
    together = Overlapping()
    many = evaluate(stories, configs, other, backend=together, concurrency=3)
    finals = lambda s: sorted(t for (t,) in s.execute("SELECT final_summary FROM runs"))  # noqa: E731
    assert [o.document for o in many] == [o.document for o in one]
    assert finals(store) == finals(other) and len(finals(other)) == 3
    assert alone.most == 1  # concurrency 1: one document at a time
    assert 1 < together.most <= 3  # concurrency 3: documents side by side, never more than 3


def test_a_folder_corpus_pairs_documents_with_their_references(tmp_path):
    (tmp_path / "a.txt").write_text("A story.", encoding="utf-8")
    (tmp_path / "a.ref1.txt").write_text("A summary.", encoding="utf-8")
    (tmp_path / "b.md").write_text("# B\n\nA paper.", encoding="utf-8")
    items = load_corpus(tmp_path)
    assert [(i.name, i.references) for i in items] == [("a.txt", ("A summary.",)), ("b.md", ())]
    with pytest.raises(CorpusError, match="no documents"):
        load_corpus(_empty(tmp_path))


def test_a_folder_corpus_holds_pdf_epub_and_html_by_extension_or_content(tmp_path, store):
    import shutil

    fixtures = DATA / "documents"
    shutil.copy(fixtures / "two_column.pdf", tmp_path / "paper.pdf")
    (tmp_path / "paper.ref1.txt").write_text("A paper about reading order.", encoding="utf-8")
    shutil.copy(fixtures / "scandal_epub3.epub", tmp_path / "scandal.epub")
    shutil.copy(fixtures / "article.html", tmp_path / "article.htm")
    shutil.copy(fixtures / "two_column.pdf", tmp_path / "download")  # a PDF saved without its extension
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))  # not a document: left out
    (tmp_path / "notes.bin").write_bytes(bytes(range(256)))
    items = load_corpus(tmp_path)
    assert [(i.name, len(i.references)) for i in items] == [
        ("article.htm", 0), ("download", 0), ("paper.pdf", 1), ("scandal.epub", 0)]
    # Each is evaluated as its format: read by its reader, recorded in `documents`.
    outcomes = evaluate(items, [RunConfig(method="extractive", summary_words=40)], store)
    assert [o.status for o in outcomes] == ["ok"] * 4
    formats = store.execute("SELECT d.format, count(*) FROM runs r JOIN documents d USING (doc_id) GROUP BY 1 ORDER BY 1")
    assert formats == [("epub", 1), ("html", 1), ("pdf", 2)]


def _empty(tmp_path: Path) -> Path:
    empty = tmp_path / "empty"
    empty.mkdir()
    return empty


@pytest.mark.parametrize("url", ["https://user:secret@llm.example/v1", "https://llm.example/v1?api-key=secret"])
def test_corpus_refuses_a_base_url_with_credentials_before_prefect_sees_it(tmp_path, url):
    from click.testing import CliRunner

    from pipelines.cli import cli

    (tmp_path / "a.txt").write_text("A story.", encoding="utf-8")
    for command in (["corpus", str(tmp_path)], ["serve", str(tmp_path), "--interval", "60"]):
        out = CliRunner().invoke(cli, [*command, "--model", "openai:m", "--base-url", url])
        assert out.exit_code == 1 and "carries credentials" in out.output and "secret" not in out.output


@pytest.mark.parametrize("schedule, expected", [(["--cron", "0 2 * * *"], {"cron": "0 2 * * *"}),
                                                (["--interval", "90"], {"interval": dt.timedelta(seconds=90)})])
def test_serve_schedules_the_corpus_deployment_as_asked(tmp_path, monkeypatch, prefect_harness, schedule, expected):
    """The schedule `summarize serve` was given is the corpus deployment's (the served end-to-end runs in
    test_deployment.py wait for a schedule to fire; this is where its kind and value are checked)."""
    from click.testing import CliRunner

    import flows.deploy
    from pipelines.cli import cli

    served = []
    monkeypatch.setattr(flows.deploy, "serve_deployments", lambda deployments, policy: served.extend(deployments))
    (tmp_path / "a.txt").write_text("A story.", encoding="utf-8")
    out = CliRunner().invoke(cli, ["serve", str(tmp_path), *schedule, "--method", "extractive",
                                   "--db", str(tmp_path / "nightly.duckdb")])
    assert out.exit_code == 0, out.output
    corpus, single = served
    ((field, value),) = expected.items()
    (scheduled,) = corpus.schedules
    assert getattr(scheduled.schedule, field) == value
    assert not single.schedules  # the on-demand deployment runs when asked


def test_serve_passes_base_url_and_concurrency_to_its_deployment_and_sets_the_limit(tmp_path, monkeypatch,
                                                                                       prefect_limits):
    from click.testing import CliRunner

    import flows.deploy
    from flows.limits import read_limits
    from pipelines.cli import cli

    served = []
    monkeypatch.setattr(flows.deploy, "serve_deployments", lambda deployments, policy: served.extend(deployments))
    (tmp_path / "a.txt").write_text("A story.", encoding="utf-8")
    out = CliRunner().invoke(cli, ["serve", str(tmp_path), "--interval", "3600", "--method", "hierarchical",
                                   "--model", "openai:served", "--base-url", "http://gpu-box:8000/v1",
                                   "--concurrency", "3", "--call-concurrency", "2", "--api-limit", "5",
                                   "--db", str(tmp_path / "nightly.duckdb")])
    assert out.exit_code == 0, out.output
    corpus, single = served
    assert corpus.name == "nightly-evaluation" and single.name == "on-demand"
    assert corpus.parameters["concurrency"] == 3 and corpus.parameters["source"] == str(tmp_path.resolve())
    (config,) = corpus.parameters["configs"]
    assert (config["method"], config["model"], config["base_url"], config["concurrency"]) == (
        "hierarchical", "openai:served", "http://gpu-box:8000/v1", 2)
    assert read_limits()["openai"] == 5


def test_limits_command_sets_and_lists_the_global_limit(prefect_limits):
    from click.testing import CliRunner

    from pipelines.cli import cli

    set_out = CliRunner().invoke(cli, ["limits", "anthropic", "7"])
    assert set_out.exit_code == 0 and "anthropic: 7" in set_out.output
    listed = CliRunner().invoke(cli, ["limits"])
    assert listed.exit_code == 0 and "anthropic: 7" in listed.output
    half = CliRunner().invoke(cli, ["limits", "anthropic"])
    assert half.exit_code == 1 and "give the number of calls" in half.output
