"""ROUGE: the fast path gives rouge-score's numbers exactly, on real texts."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import BOOKS, DATA
from scoring.rouge import (
    ROUGE_TYPES,
    FastRouge,
    NonAsciiWarning,
    RougeScorer,
    UnicodeTokenizer,
    lcs_length,
    non_ascii_share,
    prepare,
    reference_scorer,
    union_lcs_hits,
)

SQUALITY = DATA / "squality" / "dev_subset.jsonl"


def plot_answers() -> list[list[str]]:
    stories = []
    for line in SQUALITY.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        plot = row["questions"][0]
        assert plot["question_text"] == "What is the plot of the story?"
        stories.append([r["response_text"] for r in plot["responses"]])
    return stories


def assert_same(ours, theirs, context=""):
    for rouge_type in ROUGE_TYPES:
        a, b = ours[rouge_type], theirs[rouge_type]
        for x, y in ((a.precision, b.precision), (a.recall, b.recall), (a.fmeasure, b.fmeasure)):
            assert abs(x - y) <= 1e-9, f"{context} {rouge_type}: {x} != {y}"


def test_parity_with_rouge_score_on_squality_summaries():
    """Each story's first plot answer scored against the other three, by both."""
    reference = reference_scorer()
    ours = RougeScorer()
    for n, answers in enumerate(plot_answers()):
        prediction, references = answers[0], answers[1:]
        result = ours.score_one(prediction, references)
        prepared = [prepare(r) for r in references]
        for ref, per_reference in zip(prepared, result.per_reference):
            assert_same(per_reference, reference.score(ref, prepare(prediction)), f"story {n}")
        if n == 0:  # max over references is rouge-score's score_multi
            assert_same(result.max, reference.score_multi(prepared, prepare(prediction)), "score_multi")
        for rouge_type in ROUGE_TYPES:
            values = [s[rouge_type].fmeasure for s in result.per_reference]
            assert result.mean[rouge_type].fmeasure == pytest.approx(sum(values) / len(values), abs=1e-12)
            assert result.max[rouge_type].fmeasure == max(values)


def test_parity_on_long_book_excerpts_with_many_sentences():
    words = (BOOKS / "doyle_red_headed_league.txt").read_text(encoding="utf-8").split()
    a = prepare(" ".join(words[1000:1900]))
    b = prepare(" ".join(words[4000:4800]))
    assert a.count("\n") > 20 and b.count("\n") > 20
    assert_same(FastRouge().score(a, b), reference_scorer().score(a, b), "book excerpts")


def test_rougelsum_sees_sentences_even_without_newlines():
    summary = "Holmes took the case. Watson wrote it down. The banker was relieved."
    reference = "Watson wrote it down. Holmes took the case at once. The banker paid."
    assert prepare(summary) == "Holmes took the case.\nWatson wrote it down.\nThe banker was relieved."
    result = RougeScorer().score_one(summary, [reference]).max
    # One line each, rouge-score would silently report rougeL for rougeLsum.
    assert result["rougeLsum"].fmeasure > result["rougeL"].fmeasure
    plain = reference_scorer().score(reference, summary)
    assert plain["rougeLsum"].fmeasure == plain["rougeL"].fmeasure


token_sentences = st.lists(st.lists(st.integers(0, 5), max_size=8), min_size=1, max_size=5)


@settings(max_examples=400, deadline=None)
@given(token_sentences, token_sentences)
def test_union_lcs_matches_rouge_score_tie_breaking(ref, can):
    from rouge_score import rouge_scorer

    expected = rouge_scorer._summary_level_lcs(ref, can)
    m, n = sum(map(len, ref)), sum(map(len, can))
    hits = union_lcs_hits(ref, can)
    if m and n:
        assert hits / n == expected.precision and hits / m == expected.recall
    else:
        assert hits == 0 and expected.fmeasure == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 6), max_size=30), st.lists(st.integers(0, 6), max_size=30))
def test_lcs_length_matches_the_dynamic_programme(a, b):
    from rouge_score import rouge_scorer

    expected = rouge_scorer._lcs_table(a, b)[-1][-1] if a and b else 0
    assert lcs_length(a, b) == expected


def test_non_ascii_is_detected_and_warned_about():
    greek = "Ο Σέρλοκ Χολμς έλυσε την υπόθεση. Ο Γουότσον την έγραψε."
    assert non_ascii_share(greek) > 0.9
    assert non_ascii_share("Holmes solved the case.") == 0
    with pytest.warns(NonAsciiWarning):
        result = RougeScorer().score_one(greek, [greek])
    assert result.max["rouge1"].fmeasure == 0  # what rouge-score silently reports
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonAsciiWarning)
        counted = RougeScorer(tokenizer="unicode").score_one(greek, [greek])
    assert counted.max["rouge1"].fmeasure == 1.0
    assert counted.max["rougeLsum"].fmeasure == 1.0


def test_unicode_tokenizer_equals_rouge_score_on_ascii_and_folds_accents():
    from rouge_score import tokenizers

    text = (BOOKS / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")[:20000]
    ascii_text = text.encode("ascii", "ignore").decode()
    assert UnicodeTokenizer().tokenize(ascii_text) == tokenizers.DefaultTokenizer(use_stemmer=True).tokenize(ascii_text)
    assert UnicodeTokenizer().tokenize("Café naïve") == ["cafe", "naiv"]
    assert UnicodeTokenizer().tokenize("福尔摩斯") == ["福", "尔", "摩", "斯"]


def test_unicode_tokenizer_parity_through_rouge_score():
    text = "Zoë met Renée at the café. They talked about Dvořák until noon."
    other = "Renée and Zoë talked about Dvořák. The café closed at noon."
    ours = FastRouge(tokenizer="unicode").score(prepare(other), prepare(text))
    theirs = reference_scorer(tokenizer="unicode").score(prepare(other), prepare(text))
    assert_same(ours, theirs, "unicode")
    # rouge-score's tokenizer breaks such words into fragments ("dvo", "k"); ours keeps them whole.
    from rouge_score import tokenizers

    assert "dvorak" in UnicodeTokenizer().tokenize(text)
    assert "k" in tokenizers.DefaultTokenizer(use_stemmer=True).tokenize(text)


def test_empty_texts_score_zero_like_rouge_score():
    fast, slow = FastRouge(), reference_scorer()
    for a, b in (("", "Some words here."), ("Some words here.", ""), ("...", "!!!")):
        assert_same(fast.score(a, b), slow.score(a, b), repr((a, b)))


def test_unknown_rouge_type_and_missing_references_are_errors():
    with pytest.raises(ValueError, match="rouge3"):
        FastRouge(["rouge3"])
    with pytest.raises(ValueError, match="reference"):
        RougeScorer().score_one("text", [])
