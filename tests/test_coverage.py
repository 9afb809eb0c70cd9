"""Coverage profile: summary sentences aligned to the document's deciles with
the real packaged MiniLM embeddings and BM25, stored and queryable by SQL."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from conftest import BOOKS
from scoring.coverage import profile
from pipelines.retrieval import SourceIndex, passages_from_chunks
from scoring_helpers import make_run
from pipelines.text import sentences

TEXT = (BOOKS / "doyle_red_headed_league.txt").read_text(encoding="utf-8")


def chunks_of(text: str, n: int = 8):
    size = len(text) // n
    cuts = [0] + [text.index("\n\n", i * size) + 2 for i in range(1, n)] + [len(text)]
    return [(i, cuts[i], text[cuts[i]:cuts[i + 1]]) for i in range(n)]


@pytest.fixture(scope="module")
def index():
    return SourceIndex(passages_from_chunks(chunks_of(TEXT)))


def sentence_at(share: float) -> str:
    """A real sentence of the story near `share` of its length (long enough to be distinctive)."""
    at = int(len(TEXT) * share)
    for candidate in sentences(TEXT[at:at + 3000]):
        if 14 <= len(candidate.split()) <= 40:
            return candidate
    raise AssertionError("no sentence found")


@pytest.mark.slow
def test_each_sentence_is_aligned_to_the_decile_it_comes_from(index):
    picks = [0.05, 0.33, 0.62, 0.95]
    summary = " ".join(sentence_at(p) for p in picks)
    result = profile(summary, index)
    assert [a.sentence_num for a in result.alignments] == [1, 2, 3, 4]
    assert all(a.grounded for a in result.alignments)
    assert [a.decile for a in result.alignments] == [0, 3, 6, 9]
    for a in result.alignments:
        assert TEXT[a.start:a.end].split() and a.chunk_idx == next(i for i, s, t in chunks_of(TEXT) if s <= a.start < s + len(t))
    values = dict(result.values())
    assert values["deciles"] == pytest.approx(0.4) and values["end_share"] == pytest.approx(0.25)
    assert values["grounded"] == 1.0 and values["sentences"] == 4


def test_an_end_heavy_summary_shows_its_bias(index):
    summary = " ".join(sentence_at(p) for p in (0.91, 0.96, 0.99, 0.5))
    values = dict(profile(summary, index).values())
    assert values["end_share"] == pytest.approx(0.75) and values["deciles"] == pytest.approx(0.2)
    assert values["mean_position"] > 0.8


def test_generic_sentences_are_not_pinned_to_a_page(index):
    result = profile("The quarterly earnings of the airline rose by four percent.", index)
    (alignment,) = result.alignments
    assert not alignment.grounded
    values = dict(result.values())
    assert values["grounded"] == 0 and values["deciles"] == 0 and values["end_share"] is None


@pytest.mark.slow
def test_score_run_stores_the_profile_for_sql(tmp_path):
    from pipelines.cli import cli
    from pipelines.store import Store

    db = tmp_path / "c.duckdb"
    store = Store(db)
    summary = " ".join(sentence_at(p) for p in (0.05, 0.95))
    run_id = make_run(store, summary)
    store.insert_rows("chunks", [{"run_id": run_id, "idx": i, "start_char": s, "end_char": s + len(t),
                                  "n_tokens": len(t.split()), "section": None, "text": t} for i, s, t in chunks_of(TEXT)])
    out = CliRunner().invoke(cli, ["score", run_id, "--score", "coverage", "--db", str(db)])
    assert out.exit_code == 0, out.output
    assert "coverage" in out.output and "end_share" in out.output
    rows = store.execute("SELECT sentence_num, decile, grounded FROM coverage WHERE run_id = ? ORDER BY 1", [run_id])
    assert rows == [(1, 0, True), (2, 9, True)]
    (wide,) = store.execute("SELECT coverage_deciles, coverage_end_share, coverage_grounded FROM scores_wide "
                            "WHERE run_id = ?", [run_id])
    assert wide == (pytest.approx(0.2), pytest.approx(0.5), 1.0)


def test_runs_of_one_document_are_scored_against_one_index(tmp_path, index_builds):
    """Every method's run of a document cuts the same passages from the same chunks: scoring
    them embeds the passages once (an index of a novel's passages costs about 30 s)."""
    from pipelines.store import Store
    from scoring import ScoreJob, score_runs

    store = Store(tmp_path / "c.duckdb")
    summaries = {"hierarchical": sentence_at(0.05), "incremental": sentence_at(0.95)}
    runs = {method: make_run(store, summary, method) for method, summary in summaries.items()}
    for run_id in runs.values():
        store.insert_rows("chunks", [{"run_id": run_id, "idx": i, "start_char": a, "end_char": a + len(t),
                                      "n_tokens": len(t.split()), "section": None, "text": t}
                                     for i, a, t in chunks_of(TEXT)])
    score_runs(store, [ScoreJob(run_id) for run_id in runs.values()], ["coverage"])
    deciles = dict(store.execute("SELECT run_id, decile FROM coverage"))
    assert deciles == {runs["hierarchical"]: 0, runs["incremental"]: 9}
    assert len(index_builds) == 1 and index_builds[0] > 1, index_builds


@pytest.mark.slow
def test_a_cited_run_scored_for_coverage_indexes_its_passages_once(tmp_path, index_builds):
    from pipelines.cli import cli
    from pipelines.store import Store

    book = tmp_path / "league.txt"
    book.write_text(TEXT, encoding="utf-8")
    db = tmp_path / "run.duckdb"
    out = CliRunner().invoke(cli, [str(book), "--method", "extractive", "--citations", "--score", "coverage",
                                   "--db", str(db)])
    assert out.exit_code == 0, out.output
    store = Store(db)
    assert store.execute("SELECT count(*) > 0 FROM citations") == [(True,)]
    assert store.execute("SELECT count(*) > 0 FROM coverage") == [(True,)]
    assert len(index_builds) == 1, index_builds


@pytest.mark.slow
def test_summarize_file_with_score_coverage_profiles_the_run(tmp_path):
    from pipelines.cli import cli
    from pipelines.store import Store

    book = tmp_path / "league.txt"
    book.write_text(TEXT, encoding="utf-8")
    db = tmp_path / "run.duckdb"
    out = CliRunner().invoke(cli, [str(book), "--method", "extractive", "--score", "coverage", "--db", str(db)])
    assert out.exit_code == 0, out.output
    store = Store(db)
    ((run_id, n_sentences),) = store.execute("SELECT run_id, count(*) FROM coverage GROUP BY run_id")
    (final,) = store.execute("SELECT text FROM summaries WHERE run_id = ? AND is_final", [run_id])
    assert n_sentences == len(sentences(final[0]))
    # the extractive baseline copies sentences from the book: each one is found where it is
    rows = store.execute("SELECT sentence, start_char, end_char, grounded FROM coverage WHERE run_id = ?", [run_id])
    found = sum(1 for sentence, a, b, grounded in rows if grounded and " ".join(sentence.split()[:6]) in " ".join(TEXT[a:b].split()))
    assert found >= 0.8 * len(rows)
    ((deciles,),) = store.execute("SELECT coverage_deciles FROM scores_wide WHERE run_id = ?", [run_id])
    assert deciles >= 0.5


def test_a_sentence_is_pinned_to_the_passage_with_its_names_not_to_a_look_alike():
    """Rank fusion ties a look-alike (same wording, higher cosine) with the passage that holds the
    sentence's names and number; the profile, like a citation, must take the latter."""
    import numpy as np

    look_alike = "Evander Moth had counted 311 casks of cider on the quay at Hollowmere before the storm broke."
    holder = "Barnaby Quillfeather had counted 739 walnut chess sets on the quay at Gallowfen that spring."
    other = "Anne walked to Uppercross with her sister in the rain."
    texts = [look_alike, holder, other]
    chunks, at = [], 0
    for i, text in enumerate(texts):
        chunks.append((i, at, text))
        at += len(text) + 1
    axes = {look_alike: [0.9, 0.436, 0], holder: [0.6, -0.8, 0], other: [0.1, 0, 0.995]}

    def embed(batch):  # the summary sentence (any text not above) is the first axis
        return np.asarray([axes.get(t, [1, 0, 0]) for t in batch], np.float32)

    index = SourceIndex(passages_from_chunks(chunks), embed=embed)
    sentence = "Barnaby Quillfeather counted 739 walnut chess sets on the quay at Gallowfen."
    (fused,) = index.search([sentence], k=1)
    assert index.passages[fused[0].passage].text == look_alike  # the trap: fusion alone picks the look-alike
    (alignment,) = profile(sentence, index).alignments
    assert alignment.grounded and alignment.chunk_idx == 1 and alignment.start == chunks[1][1]


def test_a_sentence_copied_word_for_word_is_grounded_whatever_its_cosine():
    """A long passage dilutes a copied sentence's embedding below the support threshold (0.15 here,
    as a planted fact in a passage of dialogue measured); the passage holds it, so it is grounded.
    A sentence that only shares words with the passage stays ungrounded at that cosine."""
    import numpy as np

    copied = "Every spring Perpetua Lusk shipped 543 brass telescopes down the river to Brackenfold."
    passage = ('"Well, really!" he cried, and then he choked and laughed again. "What is it?" '
               f'"I can\'t imagine. {copied} I suppose that you have been watching the house."')
    other = "Anne walked to Uppercross with her sister in the rain."
    chunks = [(0, 0, passage), (1, len(passage) + 1, other)]

    def embed(batch):  # every summary sentence sits at cosine 0.15 from the passage
        return np.asarray([[1, 0] if t in (passage, other) else [0.15, 0.989] for t in batch], np.float32)

    index = SourceIndex(passages_from_chunks(chunks), embed=embed)
    (alignment,) = profile(copied.replace("543", "543 "), index).alignments  # spacing aside, word for word
    assert alignment.grounded and alignment.chunk_idx == 0 and alignment.similarity < 0.25
    (paraphrase,) = profile("Perpetua Lusk shipped telescopes to Brackenfold every spring.", index).alignments
    assert not paraphrase.grounded
