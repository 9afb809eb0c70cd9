"""BERTScore: offline with the packaged model, bert-score's numbers on short
texts, and no silent truncation on long ones."""

from __future__ import annotations

import json
import os

import pytest

from conftest import BOOKS, DATA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scorer():
    from scoring.bertscore import get_scorer

    return get_scorer()


def words_of(name: str) -> list[str]:
    return (BOOKS / name).read_text(encoding="utf-8").split()


def test_offline_default_is_the_packaged_minilm_with_its_settings_recorded(scorer):
    from bert_score.utils import get_hash

    assert os.environ.get("HF_HUB_OFFLINE") == "1" and os.environ.get("TRANSFORMERS_OFFLINE") == "1"
    config = scorer.config()
    assert config["model"] == "all-MiniLM-L6-v2" and config["layer"] == 6
    assert config["idf"] is False and config["rescale_with_baseline"] is False
    assert config["hash"] == get_hash("all-MiniLM-L6-v2", 6, False, False, False, False)
    assert config["hash"].startswith("all-MiniLM-L6-v2_L6_no-idf_version=")
    assert config["window"] == 512 and "model_package" in config


def test_same_numbers_as_bert_score_on_texts_that_fit_one_window(scorer):
    import bert_score

    from pipelines.embeddings import packaged_model_dir

    row = json.loads((DATA / "squality" / "dev_subset.jsonl").read_text(encoding="utf-8").splitlines()[0])
    answers = [" ".join(r["response_text"].split()[:150]) for r in row["questions"][0]["responses"]]
    cands = [answers[0], answers[1], "Holmes smiled."]
    refs = [answers[1], answers[2], "The detective was pleased with himself."]
    ours = scorer.score(cands, refs)
    p, r, f = bert_score.score(cands, refs, model_type=packaged_model_dir(), num_layers=6, batch_size=8)
    for mine, pp, rr, ff in zip(ours, p.tolist(), r.tolist(), f.tolist()):
        assert mine.precision == pytest.approx(pp, abs=1e-5)
        assert mine.recall == pytest.approx(rr, abs=1e-5)
        assert mine.f1 == pytest.approx(ff, abs=1e-5)


def test_long_text_is_scored_whole_not_truncated(scorer):
    import bert_score

    from pipelines.embeddings import packaged_model_dir

    words = words_of("doyle_scandal_in_bohemia.txt")
    text = " ".join(words[1000:2000])
    other = " ".join(words[1000:1600] + words[6000:6400])  # same first 600 words, a different tail
    assert scorer.windows_used(text) > 1
    same, changed = scorer.score([text, other], [text, text])
    assert same.f1 == pytest.approx(1.0, abs=1e-4)
    assert changed.f1 < 0.95 and same.f1 - changed.f1 > 0.05
    # What bert-score reports for the same pair: it only sees the first 512 word pieces.
    _, _, truncated = bert_score.score([other], [text], model_type=packaged_model_dir(), num_layers=6)
    assert float(truncated[0]) > 0.99


def test_batching_does_not_change_the_numbers(scorer):
    words = words_of("doyle_red_headed_league.txt")
    texts = [" ".join(words[i:i + n]) for i, n in ((0, 40), (500, 450), (2000, 120), (4000, 15))]
    pairs = [(texts[0], texts[1]), (texts[2], texts[3]), (texts[1], texts[2]), (texts[3], texts[0])]
    together = scorer.score([a for a, _ in pairs], [b for _, b in pairs])
    alone = [scorer.score([a], [b])[0] for a, b in pairs]
    for x, y in zip(together, alone):
        assert x.f1 == pytest.approx(y.f1, abs=1e-5) and x.precision == pytest.approx(y.precision, abs=1e-5)


def test_several_references_max_and_mean(scorer):
    from scoring.bertscore import score_against_references

    words = words_of("doyle_red_headed_league.txt")
    prediction = " ".join(words[100:160])
    refs = [" ".join(words[100:170]), " ".join(words[3000:3060]), "Nothing alike at all."]
    (result,) = score_against_references(scorer, [prediction], [refs])
    f1s = [s.f1 for s in result.per_reference]
    assert result.max.f1 == max(f1s) and result.mean.f1 == pytest.approx(sum(f1s) / 3)
    assert f1s[0] > f1s[1]


def test_an_uncached_hub_model_fails_offline_with_a_clear_error():
    from scoring.bertscore import BertScorer

    with pytest.raises(ValueError, match="offline|layer"):
        BertScorer("longsum-test/no-such-model", 3)
