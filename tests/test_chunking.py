import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.chunking import chunk_text, fixed_window_chunks
from pipelines.documents import load_document
from pipelines.llm.tokenizers import count_cl100k

BOOK_NAMES = ["austen_persuasion", "austen_prideprejudice", "doyle_red_headed_league", "doyle_scandal_in_bohemia"]


@pytest.fixture(scope="module")
def documents(books):
    return {name: load_document(books / f"{name}.txt") for name in BOOK_NAMES}


def _check(text, chunks, budget, count):
    assert "".join(c.text for c in chunks) == text  # lossless
    for c in chunks:
        assert c.text == text[c.start:c.end]
        assert count(c.text) == c.n_tokens <= budget
    for left, right in zip(chunks, chunks[1:]):
        assert left.end == right.start
        # never inside a word: a boundary has whitespace on at least one side
        assert text[left.end - 1].isspace() or text[right.start].isspace()


@pytest.mark.parametrize("name", BOOK_NAMES)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(budget=st.integers(min_value=40, max_value=4096))
def test_chunks_are_lossless_and_within_budget_on_real_novels(documents, name, budget):
    text = documents[name].text  # the whole novel, not a slice
    _check(text, chunk_text(text, budget, count_cl100k), budget, count_cl100k)


@pytest.mark.parametrize("name", BOOK_NAMES)
def test_whole_novels_chunk_losslessly_with_chapter_boundaries(documents, name):
    doc = documents[name]
    titles = {s.start: s.title for s in doc.sections}
    chunks = chunk_text(doc.text, 2048, count_cl100k, doc.boundaries, titles)
    _check(doc.text, chunks, 2048, count_cl100k)
    if len(doc.sections) > 10:
        # chunks prefer to end where a chapter starts
        starts = set(doc.boundaries)
        ending_at_chapter = sum(1 for c in chunks[:-1] if c.end in starts)
        assert ending_at_chapter >= len(doc.sections) // 2


def test_real_tokenizer_budget(documents, gemma):
    text = documents["doyle_scandal_in_bohemia"].text
    chunks = chunk_text(text, 512, gemma.count_tokens)
    _check(text, chunks, 512, gemma.count_tokens)


def test_overlong_paragraph_splits_at_sentences_then_clauses_then_words():
    sentences = " ".join(f"Sentence number {i} is here, with a clause; and another." for i in range(40))
    chunks = chunk_text(sentences, 30, count_cl100k)
    _check(sentences, chunks, 30, count_cl100k)
    assert all(re.search(r"[.;,]\s*$", c.text) for c in chunks[:-1])
    one_sentence = "word " * 500
    chunks = chunk_text(one_sentence, 50, count_cl100k)
    _check(one_sentence, chunks, 50, count_cl100k)


def test_unbroken_run_is_cut_by_characters_as_a_last_resort():
    text = "x" * 20_000 + " tail."
    chunks = chunk_text(text, 100, count_cl100k)
    assert "".join(c.text for c in chunks) == text
    assert all(c.n_tokens <= 100 for c in chunks)


def test_section_boundaries_are_preferred():
    body = "Some words in a paragraph here.\n\n" * 30
    text = "Chapter 1\n\n" + body + "Chapter 2\n\n" + body
    boundary = text.index("Chapter 2")
    chunks = chunk_text(text, 400, count_cl100k, boundaries=[boundary], section_titles={0: "Chapter 1", boundary: "Chapter 2"})
    assert any(c.end == boundary for c in chunks)
    assert chunks[-1].section == "Chapter 2"


def test_fixed_windows_overlap_and_stay_within_budget(documents):
    text = documents["doyle_red_headed_league"].text[:30_000]
    windows = fixed_window_chunks(text, 300, count_cl100k, overlap=50)
    assert all(w.n_tokens <= 300 for w in windows)
    assert windows[0].start == 0 and windows[-1].end == len(text)
    for a, b in zip(windows, windows[1:]):
        assert b.start < a.end  # overlapping
        assert count_cl100k(text[b.start:a.end]) <= 60
    no_overlap = fixed_window_chunks(text, 300, count_cl100k)
    assert "".join(w.text for w in no_overlap) == text


# --- documents read from PDF, EPUB and HTML (issue 12) ---------------------------------

EXTRACTED = ["two_column.pdf", "scandal_epub3.epub", "scandal_epub2.epub", "article.html"]


@pytest.fixture(scope="module")
def extracted():
    from conftest import DATA

    return {name: load_document(DATA / "documents" / name) for name in EXTRACTED}


@settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(EXTRACTED), budget=st.integers(min_value=40, max_value=2048), fixed=st.booleans())
def test_chunks_of_extracted_documents_are_lossless(extracted, name, budget, fixed):
    doc = extracted[name]
    if fixed:
        windows = fixed_window_chunks(doc.text, budget, count_cl100k)
        assert "".join(w.text for w in windows) == doc.text
        return
    titles = {s.start: s.title for s in doc.sections}
    chunks = chunk_text(doc.text, budget, count_cl100k, doc.boundaries, titles)
    _check(doc.text, chunks, budget, count_cl100k)
    # a section start that falls on a chunk boundary names the chunk
    for chunk in chunks:
        if chunk.start in titles:
            assert chunk.section == titles[chunk.start]


class Counted:
    """A tokenizer that costs a request per text (a server's /tokenize): one token
    per UTF-8 byte, far from the local estimate on non-Latin text."""

    def __init__(self):
        self.texts = []

    def __call__(self, text: str) -> int:
        self.texts.append(text)
        return len(text.encode("utf-8"))


@pytest.mark.parametrize("budget", [1000, 4000])
def test_a_costly_counter_counts_the_chunks_not_the_paragraphs(books, budget):
    """With a CostlyCounter, chunking packs by the calibrated local estimate and
    counts exactly only what it makes: the chunks stay lossless, exactly
    counted and within budget, even where the estimate is far off (Chinese
    and Arabic paragraphs between English ones: a paragraph packed alone can
    still overflow, and is then split by exact counts)."""
    from pathlib import Path

    from pipelines.chunking import CostlyCounter

    nonlatin = Path(__file__).parent / "data" / "nonlatin"
    english = (books / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")[:20_000]
    text = "\n\n".join([english[:10_000], (nonlatin / "apt_chinese.txt").read_text(encoding="utf-8"),
                        english[10_000:], (nonlatin / "apt_arabic.txt").read_text(encoding="utf-8")])
    exact = Counted()
    chunks = chunk_text(text, budget, CostlyCounter(exact, count_cl100k))
    assert "".join(c.text for c in chunks) == text
    assert all(c.n_tokens == len(c.text.encode("utf-8")) <= budget for c in chunks)
    paragraphs = len(re.split(r"\n\s*\n", text))
    assert len(exact.texts) <= 1 + 2 * len(chunks) < paragraphs / 2, (len(exact.texts), len(chunks), paragraphs)
