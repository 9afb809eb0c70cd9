"""`summarize report`: one self-contained HTML file, checked in a real
headless Chromium (Debian's package, which `make test` installs): it renders
with no console error and no network request, the sentence marks and the
tree nodes the store calls for are in the DOM, a marked sentence shows the
judges' notes, and the page is not blank."""

import json
import os
import re
import shutil
import time

import pytest
from click.testing import CliRunner
from report_runs import TINY_JUDGE, fill_store

from pipelines.llm import judge_notice_text
from pipelines.report import ReportError, build_report, count_nodes, select_runs, write_report, _tree
from pipelines.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("report") / "runs.duckdb")
    return store, fill_store(store, stories=1, tiny_judged=("extractive",))


def expected_marks(store, run_ids):
    """What the judges stored, not what the report's own code would split: per run,
    every sentence BooookScore judged (number -> its text), the flagged ones, and
    the ones with a claim label (number -> the sentence text the claims were made from)."""
    expected = {}
    for run_id in run_ids:
        final = "(SELECT summary_id FROM summaries WHERE run_id = $run AND is_final)"
        judged = dict(store.execute("SELECT DISTINCT sentence_num, sentence FROM booookscore_annotations "
                                    f"WHERE run_id = $run AND summary_id = {final}", {"run": run_id}))
        flagged = {n for (n,) in store.execute("SELECT DISTINCT sentence_num FROM booookscore_annotations "
                                               f"WHERE run_id = $run AND summary_id = {final} AND flagged",
                                               {"run": run_id})}
        labelled = dict(store.execute("SELECT DISTINCT sentence_num, sentence FROM claims WHERE run_id = $run "
                                      f"AND summary_id = {final} AND label IN ('Yes', 'No', 'PartialSupport')",
                                      {"run": run_id}))
        expected[run_id] = (judged, flagged, labelled)
    return expected


def own_text(sentence) -> str:
    """A sentence element's own text, without its note."""
    return " ".join(sentence.evaluate("e => { const c = e.cloneNode(true); c.querySelectorAll('.note')"
                                      ".forEach(n => n.remove()); return c.textContent; }").split())


def expected_best(store, run_ids) -> list[tuple[str, str]]:
    """Cells the comparison must mark best, as (score, value shown): per ranked score,
    every configuration whose mean equals the highest (from scores_wide, not by the report)."""
    from pipelines.report import SCORE_COLUMNS, UNRANKED

    columns = {c for (c,) in store.execute("SELECT column_name FROM information_schema.columns "
                                            "WHERE table_name = 'scores_wide'")}
    cells = []
    for column, name in SCORE_COLUMNS:
        if name in UNRANKED or column not in columns:
            continue
        means = [v for (v,) in store.execute(
            f"SELECT avg(w.{column}) FROM runs r LEFT JOIN scores_wide w USING (run_id) WHERE list_contains(?, r.run_id) "
            "GROUP BY r.method, r.model, r.chunk_size, coalesce(r.compression, 'none')", [list(run_ids)])
            if v is not None]
        cells += [(name, f"{v:.4f}") for v in means if v == max(means)] if means else []
    return sorted(cells)


def marked_best(page: str) -> list[tuple[str, str]]:
    """The (score, value) of every cell the report's comparison marks best."""
    import lxml.html

    table = lxml.html.fromstring(page).find_class("comparison")[0]
    rows = table.findall(".//tr")
    header = [th.text_content() for th in rows[0].findall("th")]
    return sorted((header[i], td.find_class("value")[0].text_content().strip()) for row in rows[1:]
                  for i, td in enumerate(row.findall("td")) if "best" in td.get("class", "").split())


def tree_size(store, run_ids):
    return sum(store.execute("SELECT (SELECT count(*) FROM summaries WHERE run_id = ?) + "
                             "(SELECT count(*) FROM chunks WHERE run_id = ?)", [r, r])[0][0] for r in run_ids)


@pytest.mark.slow
def test_the_tree_holds_every_summary_and_chunk_once(filled):
    store, run_ids = filled
    for run_id in run_ids:
        assert count_nodes(_tree(store, run_id)) == tree_size(store, [run_id])


@pytest.mark.slow
def test_runs_are_selected_by_id_last_document_and_corpus_run(filled, tmp_path):
    store, run_ids = filled
    assert select_runs(store, [run_ids[0][:8]]) == [run_ids[0]]
    assert select_runs(store, last=2) == run_ids[1:]
    (title,) = store.execute("SELECT title FROM documents")[0]
    assert select_runs(store, document=title) == run_ids
    from pipelines.evaluate import Outcome, tag_runs

    corpus = tag_runs(store, [Outcome("d", "c", "ok", run_ids[1], 1.0)])
    assert select_runs(store, corpus_run=corpus) == [run_ids[1]]
    with pytest.raises(ReportError, match="no run 'feedface'"):
        select_runs(store, ["feedface"])
    with pytest.raises(ReportError, match="no runs selected"):
        select_runs(store, corpus_run="nope")


@pytest.mark.slow
def test_the_command_writes_the_report_and_refuses_nothing_to_report(filled, tmp_path):
    from pipelines.cli import cli

    store, run_ids = filled
    out = tmp_path / "r.html"
    result = CliRunner().invoke(cli, ["report", "--last", "3", "-o", str(out), "--db", str(store.path)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").count('class="run"') == 3
    bad = CliRunner().invoke(cli, ["report", "--corpus", "none-such", "-o", str(tmp_path / "x.html"),
                                   "--db", str(store.path)])
    assert bad.exit_code == 1 and "no runs selected" in bad.output and not (tmp_path / "x.html").exists()


@pytest.mark.slow
def test_the_baseline_is_marked_and_the_best_scores_highlighted(filled):
    store, run_ids = filled
    page = build_report(store, run_ids)
    assert 'class="baseline"' in page and "extractive (baseline)" in page
    best = expected_best(store, run_ids)
    assert marked_best(page) == best and len({score for score, _ in best}) >= 4
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/", "")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it)")
def test_the_report_in_a_real_browser(filled, tmp_path):
    from playwright.sync_api import sync_playwright

    store, run_ids = filled
    path = write_report(store, run_ids, tmp_path / "report.html")
    expected = expected_marks(store, run_ids)
    assert all(flagged and labelled for _, flagged, labelled in expected.values())  # something to mark
    errors, requests = [], []
    started = time.perf_counter()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.as_uri())
        page.wait_for_load_state("networkidle")
        for run_id, (judged, flagged, labelled) in expected.items():
            # every sentence the judge saw, under its number and with its text; the marks on exactly
            # the sentences the judges flagged or labelled
            shown = {int(s.get_attribute("data-num")): own_text(s)
                     for s in page.locator(f"#run-{run_id} .sentence").all()}
            assert shown == judged
            marked = page.locator(f"#run-{run_id} .sentence.coherence").all()
            assert {int(s.get_attribute("data-num")) for s in marked} == flagged
            marked = page.locator(f"#run-{run_id} .sentence.unfaithful, #run-{run_id} .sentence.partial, "
                                  f"#run-{run_id} .sentence.faithful").all()
            assert {int(s.get_attribute("data-num")): own_text(s) for s in marked} == labelled
        assert page.locator("details.node").count() == tree_size(store, run_ids)
        # every chunk under the summary made from it, none beside the summaries; the extractive
        # summary over every chunk of its run
        for run_id in run_ids:
            top = page.locator(f"#run-{run_id} .tree").evaluate(TREE_TOP)
            assert top and not any(re.fullmatch(r"chunk \d+", label) for label, _ in top)
        ((extractive, chunks),) = store.execute(
            "SELECT run_id, list(idx ORDER BY idx) FROM chunks WHERE list_contains(?, run_id) AND run_id IN "
            "(SELECT run_id FROM runs WHERE method = 'extractive') GROUP BY run_id", [list(run_ids)])
        assert len(chunks) > 1
        assert page.locator(f"#run-{extractive} .tree").evaluate(TREE_TOP) == [
            ["extractive summary", [f"chunk {i}" for i in chunks]]]
        # each LLM-judged score names the judge stored with it; the tiny model's is marked not
        # trustworthy, with the CLI's line beside it (the fixture judged the extractive run by that name)
        judges = {run_id: {"BooookScore": b, "Faithful (Yes)": f, "Faithful (Yes+Partial)": f} for run_id, b, f in
                  store.execute("SELECT run_id, booookscore_model, faithfulness_model FROM scores_wide "
                                "WHERE list_contains(?, run_id)", [list(run_ids)])}
        assert {r for r, models in judges.items() if TINY_JUDGE in models.values()} == {extractive}
        for run_id, models in judges.items():
            section = page.locator(f"#run-{run_id}")
            for score, model in models.items():
                cell = section.locator(f'table.scores td[data-score="{score}"]')
                assert model and cell.locator(".judge").inner_text() == f"judge {model}"
                untrusted = cell.locator(".untrusted")
                assert untrusted.count() == (model == TINY_JUDGE) and (model != TINY_JUDGE or untrusted.is_visible())
            notice = section.locator(".notice")
            if run_id == extractive:
                assert notice.is_visible() and " ".join(notice.inner_text().split()) == (
                    f"not trustworthy {judge_notice_text(['BooookScore', 'faithfulness'])}")
                assert section.locator(".legend .untrusted").count() == 2
            else:
                assert notice.count() == 0 and section.locator(".legend .untrusted").count() == 0
        marked = page.locator("table.comparison .untrusted")
        assert marked.count() == 3 and all(m.is_visible() for m in marked.all())
        assert page.locator("table.comparison tr.baseline .untrusted").count() == 3
        assert page.locator(".chart svg").count() >= 2  # the comparison, and a coverage profile
        marked = page.locator(".sentence.coherence").first
        note = marked.locator(".note")
        assert not note.is_visible()
        marked.hover()
        assert note.is_visible() and "Coherence:" in note.inner_text()
        # a faithfulness label shows the claim, its quoted evidence and the chunk it came from, as stored
        run_id, num, sentence, label, claim, evidence, chunk_ids = store.execute(
            "SELECT run_id, sentence_num, sentence, label, claim, evidence, chunk_ids FROM claims "
            "WHERE list_contains(?, run_id) AND label IN ('Yes', 'No', 'PartialSupport') "
            "AND json_array_length(evidence) > 0 ORDER BY run_id, claim_num LIMIT 1", [list(run_ids)])[0]
        labelled_sentence = page.locator(f'#run-{run_id} .sentence[data-num="{num}"]')
        assert labelled_sentence.count() == 1 and own_text(labelled_sentence) == sentence  # the claim's own sentence
        labelled_sentence.hover()
        claim_note = labelled_sentence.locator(".note")
        shown = claim_note.inner_text()
        assert claim_note.is_visible() and f"{label}: {claim}" in shown
        assert all(quote in shown for quote in json.loads(evidence))
        assert f"chunk {', '.join(map(str, json.loads(chunk_ids)))}" in shown
        # tokens, cost and time per step: a row per kind of step, the calls the journal holds
        step_rows = page.locator("h3:has-text('Tokens, cost and time per step') + table tr:has(td)")
        kinds, calls = store.execute(
            "SELECT count(DISTINCT (run_id, regexp_extract(step, '^[a-z_]+'))), "
            "count(*) FILTER (NOT cached AND status = 'ok') FROM llm_calls WHERE list_contains(?, run_id)",
            [list(run_ids)])[0]
        assert step_rows.count() == kinds > 0
        assert sum(int(row.locator("td").nth(1).inner_text()) for row in step_rows.all()) == calls
        node = page.locator("details.node").first
        node.locator("summary").first.click()
        assert node.evaluate("n => n.open")
        shot = page.screenshot(full_page=True)
        browser.close()
    print(f"browser test: {time.perf_counter() - started:.1f} s")
    assert errors == []
    assert [u for u in requests if not u.startswith("file://")] == []  # the page fetches nothing
    assert len(requests) == 1  # the file itself: no font, script or image loaded besides
    assert not_blank(shot)


TREE_TOP = """tree => [...tree.querySelectorAll(':scope > details.node')].map(node => [
    node.querySelector(':scope > summary > b').textContent,
    [...node.querySelectorAll(':scope > details.node')].map(c => c.querySelector(':scope > summary > b').textContent)])"""


def not_blank(png: bytes) -> bool:
    """Many distinct colours in the screenshot (a blank page has one or two)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB").resize((300, 600))
    return len(set(image.getdata())) > 50


@pytest.mark.slow
def test_a_report_of_100_runs_stays_under_5_mb(filled, tmp_path):
    store, run_ids = filled
    big = Store(tmp_path / "big.duckdb")
    with big.held():
        ids = copy_runs(store, big, run_ids, 100)
    started = time.perf_counter()
    path = write_report(big, ids, tmp_path / "big.html")
    size = os.path.getsize(path)
    print(f"100 runs: {size / 1e6:.2f} MB in {time.perf_counter() - started:.1f} s")
    assert len(ids) == 100 and size < 5_000_000
    assert path.read_text(encoding="utf-8").count('class="run"') == 100


def copy_runs(source: Store, target: Store, run_ids, n: int) -> list[str]:
    """n runs in `target`, copies of the given ones under new ids (every table with a run_id)."""
    from pipelines.llm.recording import new_id
    from pipelines.store import add_run_tables, run_tables

    ids = []
    for i in range(n):
        tables = run_tables(source, run_ids[i % len(run_ids)])
        run_id = new_id()
        import pyarrow as pa

        for name, table in tables.items():
            if "run_id" in table.column_names:
                tables[name] = table.set_column(table.column_names.index("run_id"), "run_id",
                                                pa.array([run_id] * table.num_rows, pa.string()))
        add_run_tables(target, tables)
        ids.append(run_id)
    return ids


def test_a_document_is_selected_by_exact_name_stem_or_title(tmp_path):
    """`--document NAME` matches a title, a file name or a stem exactly: no LIKE
    wildcards (`a.txt` is not `data.txt`, `_` and `%` are characters)."""
    from pipelines.store import utc

    store = Store(tmp_path / "names.duckdb")
    names = {"a": "/books/a.txt", "data": "/books/data.txt", "under": "/books/my_book.txt",
             "other": "/books/myXbook.txt", "titled": "/books/x.txt"}
    store.insert_rows("documents", [{"doc_id": f"d-{k}", "path": p, "title": "Bohemia" if k == "titled" else None}
                                    for k, p in names.items()])
    store.insert_rows("runs", [{"run_id": f"run-{k}", "doc_id": f"d-{k}", "document_path": p, "status": "ok",
                                "started_at": utc(i)} for i, (k, p) in enumerate(names.items())])
    assert select_runs(store, document="a.txt") == ["run-a"]
    assert select_runs(store, document="a") == ["run-a"]
    assert select_runs(store, document="my_book.txt") == ["run-under"]
    assert select_runs(store, document="my_book") == ["run-under"]
    assert select_runs(store, document="Bohemia") == ["run-titled"]
    for wildcard in ("%", "%.txt", "_.txt", "ata.txt", "Bohem", "books/a.txt"):
        with pytest.raises(ReportError, match="no runs selected"):
            select_runs(store, document=wildcard)
    assert select_runs(store, ["run-"]) == list(f"run-{k}" for k in names)
    with pytest.raises(ReportError, match="no run '%'"):
        select_runs(store, ["%"])


# -- what a glance at the report must not get wrong (issue 27 item 7, issue 24 item 3) -------------------


@pytest.fixture(scope="module")
def hand_made(tmp_path_factory):
    from report_runs import hand_made_store

    store = Store(tmp_path_factory.mktemp("hand") / "hand.duckdb")
    return store, hand_made_store(store)


def comparison_rows(page: str) -> list[dict]:
    """The comparison table as the reader sees it: per row its cells' text by header, and its classes and tags."""
    import lxml.html

    rows = lxml.html.fromstring(page).find_class("comparison")[0].findall(".//tr")
    header = [th.text_content() for th in rows[0].findall("th")]
    table = []
    for row in rows[1:]:
        cells = row.findall("td")
        first = cells[0]
        table.append({"configuration": (first.text or "").strip(), "class": set((row.get("class") or "").split()),
                      "tags": [t.text_content() for t in first.find_class("tag")],
                      **{h: " ".join(c.text_content().split()) for h, c in zip(header[1:], cells[1:])}})
    return table


def run_section(page: str, run_id: str):
    import lxml.html

    return lxml.html.fromstring(page).get_element_by_id(f"run-{run_id}")


def test_a_failed_run_is_counted_under_its_configuration_never_as_a_second_baseline(hand_made):
    store, runs = hand_made
    rows = comparison_rows(build_report(store, list(runs)))
    # one baseline row (the failed baseline run without a model counted in it), the degraded run counted
    assert [row["configuration"] for row in rows] == [
        "extractive (baseline)", "hierarchical · openai:gpt-4o-mini · chunk 700", "incremental · ? · chunk 700"]
    baseline, hierarchical, incremental = rows
    assert (baseline["runs"], baseline["degraded"], baseline["failed"]) == ("2", "0", "1")
    assert "baseline" in baseline["class"] and baseline["tags"] == ["baseline"]
    assert (hierarchical["runs"], hierarchical["degraded"], hierarchical["failed"]) == ("3", "1", "1")
    # a configuration none of whose runs finished is shown failed, and a baseline that only failed is no baseline
    assert incremental["class"] == {"failed"} and incremental["tags"] == ["failed"]
    (alone,) = comparison_rows(build_report(store, [runs["base-failed"]]))
    assert "baseline" not in alone["class"] and alone["tags"] == ["failed"] and alone["failed"] == "1"


def test_the_judges_legend_only_for_the_judges_that_marked_the_summary(hand_made):
    store, runs = hand_made
    page = build_report(store, list(runs))

    def legend(run_id):
        """The run's legend as read, or None when it has none."""
        found = run_section(page, run_id).find_class("legend")
        return " ".join(found[0].text_content().split()) if found else None

    assert run_section(page, runs["hier-ok"]).find_class("sentence")  # a final summary, not judged
    assert legend(runs["hier-ok"]) is None
    # annotations and no claims: the coherence mark only; claims and no annotations: the faithfulness marks only
    assert "coherence error" in legend(runs["base-ok"]) and "claim" not in legend(runs["base-ok"])
    assert "unfaithful claim" in legend(runs["hier-degraded"]) and "coherence" not in legend(runs["hier-degraded"])


def test_an_llm_judged_score_names_its_judge_and_the_tiny_one_is_marked(hand_made):
    from report_runs import API_JUDGE

    store, runs = hand_made
    page = build_report(store, list(runs))

    def judged(element):
        """score name -> (its judge, marked not trustworthy) for every score cell under `element`"""
        return {td.get("data-score"): (" ".join(j.text_content() for j in td.find_class("judge")),
                                       bool(td.find_class("untrusted")))
                for td in element.iter("td") if td.get("data-score")}

    def notices(element):
        return [" ".join(p.text_content().split()) for p in element.find_class("notice")]

    tiny_note = f"not trustworthy {judge_notice_text(['faithfulness'])}"
    degraded = run_section(page, runs["hier-degraded"])
    assert judged(degraded) == {"ROUGE-1": ("", False), "Faithful (Yes)": (f"judge {TINY_JUDGE}", True),
                                "Faithful (Yes+Partial)": (f"judge {TINY_JUDGE}", True)}
    assert notices(degraded) == [tiny_note]
    assert "not trustworthy" in " ".join(degraded.find_class("legend")[0].text_content().split())
    base = run_section(page, runs["base-ok"])
    assert judged(base) == {"ROUGE-1": ("", False), "BooookScore": (f"judge {API_JUDGE}", False)}
    assert notices(base) == [] and "not trustworthy" not in base.find_class("legend")[0].text_content()
    # the comparison: each mean names the judges of its runs, and the tiny one is marked
    import lxml.html

    comparison = lxml.html.fromstring(page).find_class("comparison")[0]
    rows = comparison.findall(".//tr")[1:]
    unjudged = {"ROUGE-1": ("", False), "BooookScore": ("", False), "Faithful (Yes)": ("", False),
                "Faithful (Yes+Partial)": ("", False)}
    assert [judged(row) for row in rows] == [
        {**unjudged, "BooookScore": (f"judge {API_JUDGE}", False)},
        {**unjudged, "Faithful (Yes)": (f"judge {TINY_JUDGE}", True), "Faithful (Yes+Partial)": (f"judge {TINY_JUDGE}", True)},
        unjudged]
    assert notices(lxml.html.fromstring(page).find_class("wide")[0].getnext()) == [tiny_note]


def test_the_extractive_summary_holds_every_chunk_it_was_made_from(hand_made):
    store, runs = hand_made
    tree = _tree(store, runs["base-ok"])
    assert [(node.label, [c.label for c in node.children]) for node in tree] == [
        ("extractive summary", ["chunk 0", "chunk 1", "chunk 2"])]
