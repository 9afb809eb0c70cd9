"""A degraded run (issue 27 items 1 and 2): its output still covers the whole
document, and it never looks like success. A stand-in model that copies the
prompt back (as the embedded Gemma 270M does) makes every attempt invalid."""

import json
import re
from pathlib import Path

import pytest
from clitools import run
from scripted import ScriptedBackend

from pipelines.text import sentences

ACL = Path(__file__).parent / "data" / "documents" / "acl" / "acl2017.pdf"
SCANDAL = Path(__file__).parent / "data" / "books" / "doyle_scandal_in_bohemia.txt"


def copies_the_prompt(request):
    return "\n\n".join(m["content"] for m in request.messages)


def positions(summary: str, text: str) -> list[float]:
    """Where each sentence of summary lies in text (relative character position)."""
    found = []
    for sentence in sentences(summary):
        match = re.search(r"\s+".join(map(re.escape, sentence.split())), text)
        assert match, f"not from the document: {sentence!r}"
        found.append(match.start() / len(text))
    return found


@pytest.mark.parametrize("method", ["hierarchical", "incremental"])
def test_a_degraded_run_draws_from_the_whole_document(tmp_path, store, method):
    """Before: every salvage kept its input's leading sentences, so the final summary was the
    paper's first pages (deciles 0, 1 and 4 of 10; sections 3.7 to Appendix B missing)."""
    from pipelines.documents import load_document
    from pipelines.runner import RunConfig, summarize_file

    document = load_document(ACL)
    result = summarize_file(ACL, RunConfig(method=method, chunk_size=600, summary_words=250), store,
                            backend=ScriptedBackend(copies_the_prompt, context_window=4096))
    assert result.status == "degraded" and result.n_chunks >= 5
    where = positions(result.summary, document.text)
    deciles = {min(9, int(10 * p)) for p in where}
    assert len(deciles) >= 6 and max(where) >= 0.7, sorted(deciles)
    final = next(r for r in result.records if r.is_final)
    assert final.degraded and "degenerate answer" in final.note and "extractive selection" in final.note
    assert final.n_tokens <= final.token_limit
    ((status,),) = store.execute("SELECT status FROM runs WHERE run_id = ?", [result.run_id])
    assert status == "degraded"


# -- the command line ---------------------------------------------------------------


@pytest.fixture()
def echo_server():
    from fake_openai_server import FakeOpenAIServer

    with FakeOpenAIServer(answer=lambda messages: "\n\n".join(m["content"] for m in messages)) as server:
        yield server


@pytest.mark.slow
def test_quiet_still_says_degraded_and_strict_makes_it_an_error(tmp_path, cli_env, echo_server):
    db = tmp_path / "degraded.duckdb"
    args = [SCANDAL, "--model", "openai:echo", "--base-url", echo_server.base_url, "--chunk-size", "800",
            "--summary-words", "120", "--db", db, "-q", "--retries", "0"]
    quiet = run(args, cli_env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stdout.strip()  # the summary (an extractive salvage) is printed
    lines = quiet.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning:") and "the run is degraded" in lines[0], lines
    # a script asks for it: --strict, or LONGSUM_STRICT=1 (the answers are replayed from the journal)
    strict = run([*args, "--strict"], cli_env)
    assert strict.returncode == 3 and strict.stdout == quiet.stdout and "degraded" in strict.stderr
    assert run(args, {**cli_env, "LONGSUM_STRICT": "1"}).returncode == 3
    assert run([*args, "--no-strict"], {**cli_env, "LONGSUM_STRICT": "1"}).returncode == 0
    # show says so too
    runs = json.loads(run(["runs", "--db", db, "--format", "json"], cli_env).stdout)
    shown = run(["show", runs[0]["run_id"], "--db", db], cli_env)
    assert shown.returncode == 0 and shown.stdout == quiet.stdout and "is degraded" in shown.stderr


@pytest.mark.slow
def test_a_clean_run_under_strict_exits_zero(tmp_path, cli_env, fake_openai):
    result = run([SCANDAL, "--model", "openai:fake", "--base-url", fake_openai.base_url, "--chunk-size", "800",
                  "--summary-words", "120", "--db", tmp_path / "ok.duckdb", "-q", "--strict"], cli_env)
    assert result.returncode == 0 and result.stdout.strip() and not result.stderr.strip(), result.stderr


@pytest.mark.slow
def test_a_corpus_with_a_failed_document_says_which_and_why(tmp_path, books, cli_env, prefect_harness):
    """Exit status 4, each failed document with its reason on stdout (not only in a Prefect log
    line); `runs` names the failed run's document and model; `show` gives its reason."""
    from prefect.settings import PREFECT_API_URL

    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "scandal.txt").write_text(SCANDAL.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "cut.pdf").write_bytes(ACL.read_bytes()[:3000])  # a PDF cut short
    db = tmp_path / "corpus.duckdb"
    env = {**cli_env, "PREFECT_API_URL": PREFECT_API_URL.value()}
    done = run(["corpus", folder, "--method", "extractive", "--summary-words", "80", "--db", db], env)
    assert done.returncode == 4, (done.returncode, done.stdout, done.stderr)
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "cut.pdf" in failed[0] and "not a readable PDF" in failed[0], done.stdout
    assert "1 of 2 runs failed" in done.stderr

    runs = json.loads(run(["runs", "--db", db, "--format", "json"], env).stdout)
    (bad,) = [r for r in runs if r["status"] == "failed"]
    assert bad["document"] == "cut.pdf" and bad["model"] == "extractive:tfidf-centroid-mmr", bad
    shown = run(["show", bad["run_id"][:8], "--db", db], env)
    assert shown.returncode == 1 and not shown.stdout
    assert "failed: cannot read" in shown.stderr and "not a readable PDF" in shown.stderr, shown.stderr
