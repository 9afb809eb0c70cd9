"""Judges are the user's choice: the corpus command and flow take one, store it
beside every judged score, and say so when it is the tiny base model."""

import pytest

from clitools import run
from textdata import excerpt

pytestmark = [pytest.mark.slow, pytest.mark.llm]


def test_corpus_judges_with_the_model_it_is_given(tmp_path, books, cli_env, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    from pipelines.store import Store

    text = (books / "doyle_scandal_in_bohemia.txt").read_text(encoding="utf-8")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "opening.txt").write_text(excerpt(text, 400), encoding="utf-8")
    db = tmp_path / "judged.duckdb"
    # The default judge is the instruct model here, so a judge taken from the default would show.
    env = {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value(), "LONGSUM_MODEL": "llamacpp"}
    done = run(["corpus", tmp_path / "corpus", "--method", "extractive", "--summary-words", "40",
                "--metrics", "booookscore", "--judge-model", "llamacpp:gemma", "--db", db], env, timeout=900)
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stderr.splitlines() if line.startswith("note:") and "BooookScore" in line]
    assert len(notes) == 1 and "tiny base model" in notes[0]
    judges = Store(db, read_only=True).execute(
        "SELECT DISTINCT config->>'model' FROM scores WHERE metric = 'booookscore'")
    assert judges == [("llamacpp:gemma-3-270m",)]
