from pipelines.text import (
    count_words,
    ends_with_sentence_end,
    sentences,
    split_clauses,
    split_paragraphs,
    split_sentences,
    split_words,
    trim_to_last_sentence,
)

SAMPLE = 'Mr. Holmes looked up. "It is odd!" said he. Then J. R. Smith left at 5 p.m. for St. Paul\'s.\n\nA new paragraph? Yes'


def test_splitters_are_lossless():
    for split in (split_paragraphs, split_sentences, split_clauses, split_words):
        assert "".join(split(SAMPLE)) == SAMPLE


def test_sentences_respect_abbreviations_initials_and_quotes():
    assert sentences(SAMPLE) == [
        "Mr. Holmes looked up.",
        '"It is odd!" said he.',
        "Then J. R. Smith left at 5 p.m. for St. Paul's.",
        "A new paragraph?",
        "Yes",
    ]


def test_trim_to_last_sentence_salvages_a_cut_answer():
    assert trim_to_last_sentence("Holmes smiled. Watson asked why and") == "Holmes smiled."
    assert trim_to_last_sentence('He said "go." Then') == 'He said "go."'
    assert trim_to_last_sentence("no sentence end at all") == ""
    assert trim_to_last_sentence("It ended with Dr.") == ""


def test_sentence_end_detection():
    assert ends_with_sentence_end("Done.")
    assert ends_with_sentence_end('He left."  ')
    assert ends_with_sentence_end("Really?)")
    assert not ends_with_sentence_end("and then")
    assert count_words(" a  b\nc ") == 3


def test_paragraphs_keep_their_blank_lines():
    assert split_paragraphs("one\n\n\ntwo\nstill two\n\nthree") == ["one\n\n\n", "two\nstill two\n\n", "three"]
