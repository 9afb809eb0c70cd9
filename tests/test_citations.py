"""Citations (issue 26): every sentence of every summary names the source it
rests on, traced through the tree, and marked unsupported when nothing it
was given supports it."""

from __future__ import annotations

import json
import re

import pytest
from clitools import run
from conftest import BOOKS, excerpt
from scripted import ScriptedBackend

from pipelines.citations import Citation, Locator, Source, document_text, marker, with_markers
from pipelines.runner import RunConfig, summarize_file
from pipelines.text import sentences

# Words that occur nowhere in the Doyle stories: a sentence made of them rests on nothing.
INVENTED = "Zebras juggle neon kumquats aboard Saturn."


def _first_sentence(text: str) -> str:
    return sentences(text)[0]


def copying_answer(request) -> str:
    """A chunk summary is its excerpt's first sentence; a merge copies the first sentence of
    each summary it merges and adds one invented sentence. So each sentence's origin is known."""
    content = request.messages[-1]["content"]
    excerpt_block = re.search(r"<excerpt>\n(.*?)\n</excerpt>", content, re.S)
    if excerpt_block:
        return _first_sentence(excerpt_block.group(1))
    block = re.search(r"<summaries>\n(.*?)\n</summaries>", content, re.S).group(1)
    parts = [p.strip() for p in re.split(r"Summary \d+:\n", block) if p.strip()]
    return " ".join(_first_sentence(p) for p in parts) + " " + INVENTED


@pytest.fixture(scope="module")
def story(tmp_path_factory):
    path = tmp_path_factory.mktemp("cite") / "scandal.txt"
    path.write_text(excerpt((BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8"), 900),
                    encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def cited_run(story, tmp_path_factory):
    from pipelines.citations import cite_run
    from pipelines.store import Store

    store = Store(tmp_path_factory.mktemp("cite-db") / "cite.duckdb")
    # A small window: merges of merges, so tracing goes two levels down.
    config = RunConfig(method="hierarchical", model="scripted", chunk_size=120, summary_words=60, context_window=512)
    result = summarize_file(story, config, store, backend=ScriptedBackend(copying_answer, context_window=512))
    return store, result, cite_run(store, result.run_id)


def _where(store, run_id, text: str) -> int:
    """Where a sentence starts in the document, found in the chunks (whitespace as the summary has it)."""
    document = document_text([(i, s, t) for i, s, t in store.execute(
        "SELECT idx, start_char, text FROM chunks WHERE run_id = ?", [run_id])])
    flat, offsets = [], []
    for at, ch in enumerate(document):
        if ch.isspace() and flat and flat[-1] == " ":
            continue
        flat.append(" " if ch.isspace() else ch)
        offsets.append(at)
    return offsets["".join(flat).index(text[:60])]


@pytest.mark.slow
def test_every_sentence_of_every_summary_cites_the_passage_it_came_from(cited_run):
    store, result, cited = cited_run
    nodes = store.execute("SELECT summary_id, level, kind, text, first_chunk, last_chunk FROM summaries "
                          "WHERE run_id = ?", [result.run_id])
    assert max(level for _, level, *_ in nodes) >= 2
    checked = 0
    for summary_id, level, kind, text, first, last in nodes:
        by_sentence = {}
        for c in cited[summary_id]:
            by_sentence.setdefault(c.sentence_idx, []).append(c)
        assert sorted(by_sentence) == list(range(len(sentences(text))))
        for n, sentence in enumerate(sentences(text)):
            methods = {c.method for c in by_sentence[n]}
            if sentence == INVENTED:
                assert methods == {"unsupported"} and all(c.source is None for c in by_sentence[n])
                continue
            # Copied text: its origin is known; a chunk's own sentence is aligned, a merge's is traced.
            assert methods == ({"aligned"} if level == 0 else {"traced"}), (level, sentence, methods)
            origin = _where(store, result.run_id, sentence)
            assert any(c.source.start_char <= origin < c.source.end_char for c in by_sentence[n]), (sentence, origin)
            for c in by_sentence[n]:
                assert first <= c.source.chunk_idx <= last  # it cites only what its summary was given
            checked += 1
    assert checked >= 10


@pytest.mark.slow
def test_citations_are_rows_that_sql_reads_and_that_resolve_to_the_chunks(cited_run):
    store, result, cited = cited_run
    rows = store.execute(
        "SELECT c.method, c.chunk_idx, c.start_char, c.end_char, k.start_char, k.end_char FROM citations c "
        "LEFT JOIN chunks k ON k.run_id = c.run_id AND k.idx = c.chunk_idx WHERE c.run_id = ?", [result.run_id])
    assert len(rows) == sum(len(cs) for cs in cited.values())
    for method, chunk, start, end, chunk_start, chunk_end in rows:
        if method == "unsupported":
            assert chunk is None and start is None
        else:
            assert chunk_start <= start < end <= chunk_end
    final = store.execute("SELECT count(DISTINCT sentence_idx) FROM citations c JOIN summaries s USING (summary_id) "
                          "WHERE s.is_final AND c.method <> 'unsupported' AND c.run_id = ?", [result.run_id])
    assert final[0][0] == len([s for s in sentences(result.summary) if s != INVENTED]) > 0


@pytest.mark.slow
def test_citing_again_replaces_the_runs_rows(cited_run):
    from pipelines.citations import cite_run

    store, result, cited = cited_run
    before = store.execute("SELECT count(*) FROM citations WHERE run_id = ?", [result.run_id])
    again = cite_run(store, result.run_id)
    assert again == cited
    assert store.execute("SELECT count(*) FROM citations WHERE run_id = ?", [result.run_id]) == before


@pytest.mark.slow
def test_the_cli_prints_markers_and_json_carries_them(story, tmp_path, cli_env):
    """Through the real CLI (the extractive baseline: no model), a run replayed from the store cites the same."""
    db = tmp_path / "cli.duckdb"
    shown = run([story, "--method", "extractive", "--citations", "--db", db, "--summary-words", "80",
                 "--chunk-size", "200"], cli_env)
    assert shown.returncode == 0, shown.stderr
    marked = re.findall(r" \[((?:chars|\u00a7|ch\.|unsupported)[^\]]*)\]", shown.stdout)
    assert marked and "unsupported" not in marked  # extractive sentences are the document's own
    assert "citations: " in shown.stderr
    as_json = run([story, "--method", "extractive", "--citations", "--json", "--db", db, "--summary-words", "80",
                   "--chunk-size", "200"], cli_env)
    payload = json.loads(as_json.stdout)
    assert [c["sentence"] for c in payload["citations"]] == sentences(payload["summary"])
    assert all(c["sources"] and c["sources"][0]["method"] == "aligned" for c in payload["citations"])
    assert [c["marker"][1:-1] for c in payload["citations"]] == marked


def test_the_line_range_of_code_and_the_section_of_a_chapter():
    code = "import os\n\n\ndef f(x):\n    return x\n\n\nclass A:\n    pass\n"
    locator = Locator(code, code=True)
    start = code.index("def f")
    source = locator.source(0, start, code.index("return x") + len("return x"))
    assert (source.first_line, source.last_line) == (4, 5)
    assert marker([Citation(0, "f", "aligned", 1.0, source)]) == "[ll. 4\u20135]"
    book = Locator("x" * 100, sections=[{"title": "CHAPTER III.", "start": 0}, {"title": "CHAPTER IV. A Move", "start": 50}])
    assert book.source(0, 60, 70).section == "CHAPTER IV. A Move"
    two = [Citation(0, "s", "traced", 1.0, book.source(0, 10, 20)), Citation(0, "s", "traced", 1.0, book.source(1, 60, 70))]
    assert marker(two) == "[ch. III; ch. IV]"
    assert marker([Citation(0, "s", "aligned", 1.0, Source(0, 1, 2, page=4)),
                   Citation(0, "s", "aligned", 1.0, Source(1, 3, 4, page=5))]) == "[p. 4\u20135]"
    assert marker([Citation(0, "s", "unsupported")]) == "[unsupported]"


def test_markers_follow_their_sentences_and_keep_paragraphs():
    summary = "Holmes waits. Watson writes.\n\nThe King arrives."
    cites = [Citation(0, "Holmes waits.", "aligned", 1.0, Source(0, 0, 10)),
             Citation(1, "Watson writes.", "unsupported"),
             Citation(2, "The King arrives.", "aligned", 1.0, Source(1, 20, 30))]
    assert with_markers(summary, cites) == ("Holmes waits. [chars 0\u201310] Watson writes. [unsupported]\n\n"
                                            "The King arrives. [chars 20\u201330]")


def test_overlapping_windows_give_the_document_back():
    text = "abcdefghij" * 5
    chunks = [(0, 0, text[0:20]), (1, 15, text[15:35]), (2, 30, text[30:50])]
    assert document_text(chunks) == text


@pytest.mark.llm
def test_a_real_model_run_cites_only_real_chunks_and_spans(story, tmp_path, cli_env):
    """The tiny embedded model writes what it writes; whatever it is, every stored citation
    resolves to a chunk of the run and a span inside it, and the final summary's sentences
    are all accounted for."""
    db = tmp_path / "real.duckdb"
    short = tmp_path / "short.txt"  # three chunks and a merge: the tree to trace, at the tiny model's speed
    short.write_text(excerpt(story.read_text(encoding="utf-8"), 380), encoding="utf-8")
    result = run([short, "--model", "llamacpp:gemma-3-270m", "--chunk-size", "160", "--summary-words", "30",
                  "--citations", "--json", "-q", "--db", db], cli_env, timeout=900)
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    from pipelines.store import Store

    store = Store(db, read_only=True)
    rows = store.execute(
        "SELECT c.method, c.chunk_idx, c.start_char, c.end_char, k.start_char, k.end_char, s.first_chunk, "
        "s.last_chunk FROM citations c JOIN summaries s USING (summary_id) "
        "LEFT JOIN chunks k ON k.run_id = c.run_id AND k.idx = c.chunk_idx WHERE c.run_id = ?", [payload["run_id"]])
    assert rows
    for method, chunk, start, end, chunk_start, chunk_end, first, last in rows:
        assert method in ("aligned", "traced", "unsupported")
        if method != "unsupported":
            assert chunk_start is not None and chunk_start <= start < end <= chunk_end
            assert first <= chunk <= last
    (summaries,) = store.execute("SELECT count(*) FROM summaries WHERE run_id = ?", [payload["run_id"]])[0]
    (cited,) = store.execute("SELECT count(DISTINCT summary_id) FROM citations WHERE run_id = ?",
                             [payload["run_id"]])[0]
    assert cited == summaries
    assert store.execute("SELECT max(level) FROM summaries WHERE run_id = ?", [payload["run_id"]])[0][0] >= 1
    assert [c["sentence"] for c in payload["citations"]] == sentences(payload["summary"])


@pytest.mark.slow
def test_a_pdf_sentence_cites_the_pages_it_is_printed_on(tmp_path, cli_env):
    """Checked against the PDF's own text layer: each cited sentence is printed on a page of its citation's range."""
    import pypdfium2

    from conftest import DATA

    pdf = DATA / "documents" / "acl" / "acl2017.pdf"
    result = run([pdf, "--method", "extractive", "--citations", "--json", "--summary-words", "120",
                  "--db", tmp_path / "pdf.duckdb"], cli_env)
    assert result.returncode == 0, result.stderr
    document = pypdfium2.PdfDocument(str(pdf))
    pages = [" ".join(document[i].get_textpage().get_text_range().split()) for i in range(len(document))]
    cited = json.loads(result.stdout)["citations"]
    assert len(cited) >= 3
    for sentence in cited:
        (source,) = sentence["sources"]
        assert re.fullmatch(r"\[p\. \d+(\u2013\d+)?\]", sentence["marker"])
        words = sentence["sentence"].split()[:5]  # its start: the reader mends hyphens and ligatures later on
        printed_on = [n for n, text in enumerate(pages, 1) if " ".join(words) in text]
        assert printed_on and any(source["page"] <= n <= source["last_page"] for n in printed_on), \
            (sentence["sentence"], source, printed_on)


@pytest.mark.slow
def test_a_summary_never_cites_a_chunk_it_was_not_given(story):
    """A chunk summary that states what another chunk says is unsupported, not cited to that
    chunk: a citation says what the step read, not where else the words occur."""
    from pipelines.citations import SummaryNode, cite_summaries
    from pipelines.retrieval import SourceIndex, passages_from_chunks

    text = story.read_text(encoding="utf-8")
    third = len(text) // 3
    chunks = [(0, 0, text[:third]), (1, third, text[third:2 * third]), (2, 2 * third, text[2 * third:])]
    index = SourceIndex(passages_from_chunks(chunks))
    elsewhere = sentences(text[2 * third:])[3]
    own = sentences(text[:third])[2]
    nodes = [SummaryNode("a", 0, 0, "chunk", f"{own} {elsewhere}", 0, 0),
             SummaryNode("c", 0, 2, "chunk", elsewhere, 2, 2)]
    cited = cite_summaries(nodes, index, Locator(text))
    assert [(c.method, c.source and c.source.chunk_idx) for c in cited["a"]] == [("aligned", 0), ("unsupported", None)]
    assert [(c.method, c.source.chunk_idx) for c in cited["c"]] == [("aligned", 2)]


def citing_answer(request) -> str:
    """A grounded merge copies each summary's first sentence and names, after it, the prompt's
    passage that holds it (when one does); and three sentences a careless model might write: one
    naming forty passages, one naming a passage the prompt never gave, and one naming none."""
    from pipelines.summarize.passage_ids import given

    content = request.messages[-1]["content"]
    if "<passages>" not in content:
        return copying_answer(request)
    passages = given(re.search(r"<passages>\n(.*?)\n</passages>", content, re.S).group(1))
    block = re.search(r"<summaries>\n(.*?)\n</summaries>", content, re.S).group(1)
    out = []
    for part in (p.strip() for p in re.split(r"Summary \d+:\n", block) if p.strip()):
        sentence = _first_sentence(part)
        holding = [k for k, text in passages.items() if sentence[:60] in text]
        out.append(f"{sentence} [P{holding[0]}]" if holding else sentence)
    careless = ["Holmes said so. [" + ", ".join(f"P{k}" for k in range(1, 41)) + "]", f"{INVENTED} [P99]"]
    return " ".join(careless + out + ["The story goes on."])


@pytest.mark.slow
def test_the_model_cites_the_passages_of_its_prompt_and_bad_ids_are_dropped_and_counted(story, tmp_path):
    from pipelines.citations import cite_run
    from pipelines.store import Store
    from pipelines.summarize.passage_ids import MAX_IDS

    store = Store(tmp_path / "model.duckdb")
    config = RunConfig(method="hierarchical", model="scripted", chunk_size=120, summary_words=200,
                       context_window=2048, grounded=True)
    result = summarize_file(story, config, store, backend=ScriptedBackend(citing_answer, context_window=2048))
    merges = store.execute("SELECT summary_id, text, first_chunk, last_chunk FROM summaries "
                           "WHERE run_id = ? AND kind = 'merge' AND NOT degraded", [result.run_id])
    assert merges and not any("[P" in text for _, text, _, _ in merges)  # the summaries keep no ids
    cited = cite_run(store, result.run_id)
    named = 0
    for summary_id, text, first, last in merges:
        by_sentence = {}
        for c in cited[summary_id]:
            by_sentence.setdefault(c.sentence_idx, []).append(c)
        for n, sentence in enumerate(sentences(text)):
            rows = by_sentence[n]
            if sentence == INVENTED:  # its one id was never given: dropped, counted, and nothing else supports it
                assert rows[0].dropped == 1 and [c.method for c in rows] == ["unsupported"]
            elif sentence == "Holmes said so.":  # forty ids: at most MAX_IDS kept, the rest counted
                assert [c.method for c in rows] == ["model"] * len(rows) and len(rows) <= MAX_IDS
                assert rows[0].dropped == 40 - len(rows)
            elif sentence == "The story goes on.":  # none named: aligned, traced or unsupported, never "model"
                assert all(c.method != "model" for c in rows)
            else:  # copied: named by the model when a passage of its prompt held it, else traced
                assert {c.method for c in rows} in ({"model"}, {"traced"}), rows
                origin = _where(store, result.run_id, sentence)
                assert any(c.source.start_char <= origin < c.source.end_char for c in rows), sentence
                assert all(first <= c.source.chunk_idx <= last for c in rows)
                named += rows[0].method == "model"
    assert named >= 3
    rows = store.execute("SELECT method, count(*), sum(dropped) FROM citations WHERE run_id = ? GROUP BY 1",
                         [result.run_id])
    assert {method for method, _, _ in rows} >= {"model", "aligned"}


@pytest.mark.slow
def test_the_report_shows_each_sentences_marker_and_its_passages(cited_run):
    """In the HTML report each sentence of the final summary carries its marker, and its note (shown
    on hover or focus) quotes the passages it cites: the document's own text."""
    import lxml.html

    from pipelines.report import build_report

    store, result, cited = cited_run
    page = lxml.html.fromstring(build_report(store, [result.run_id]))
    spans = page.find_class("summary")[0].find_class("sentence")
    document = " ".join(document_text(store.execute(
        "SELECT idx, start_char, text FROM chunks WHERE run_id = ?", [result.run_id])).split())
    assert len(spans) == len(sentences(result.summary))
    for span, sentence in zip(spans, sentences(result.summary)):
        (sup,) = span.find_class("cite")
        quotes = [q.text_content().rstrip(" …") for q in span.xpath(".//b[contains(@class, 'source')]/following-sibling::q[1]")]
        if sentence == INVENTED:
            assert sup.text_content() == "[unsupported]" and quotes == []
        else:
            assert sup.text_content().startswith("[") and quotes
            assert all(" ".join(q.split()) in document for q in quotes)


@pytest.mark.slow
def test_a_corpus_cites_every_run_it_makes(tmp_path, story, cli_env, prefect_harness):
    """summarize corpus --citations (the evaluate-corpus flow): every run it stores is cited, through
    the one run orchestration every face uses."""
    from prefect.settings import PREFECT_API_URL

    from pipelines.store import Store

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "scandal.txt").write_text(story.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "league.txt").write_text(excerpt((BOOKS / "doyle_red_headed_league.txt").read_text(encoding="utf-8"),
                                               600), encoding="utf-8")
    db = tmp_path / "corpus.duckdb"
    done = run(["corpus", folder, "--method", "extractive", "--summary-words", "60", "--citations", "--db", db],
               {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value()})
    assert done.returncode == 0, done.stderr
    store = Store(db, read_only=True)
    rows = store.execute("SELECT r.run_id, count(c.run_id), count(c.chunk_idx) FROM runs r "
                         "LEFT JOIN citations c USING (run_id) GROUP BY 1")
    assert len(rows) == 2 and all(cited > 0 and located == cited for _, cited, located in rows), rows
