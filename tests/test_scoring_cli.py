"""The scoring commands and the store: `score`, `eval squality`, the
`scores` table and the `scores_wide` view, and lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from conftest import DATA, ROOT
from scoring_helpers import make_run

SQUALITY = DATA / "squality" / "dev_subset.jsonl"


def plot_answers(row: int = 0) -> list[str]:
    data = json.loads(SQUALITY.read_text(encoding="utf-8").splitlines()[row])
    return [r["response_text"] for r in data["questions"][0]["responses"]]


def invoke(*args):
    from pipelines.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


def reference_rouge(prediction: str, references: list[str]) -> dict:
    """Google's rouge-score (the reference implementation, not longsum's fast path): the best and the mean
    F over the references. rougeLsum gets the sentences on lines, as longsum records it does
    (config sentence_split); the other types ignore line breaks."""
    from rouge_score import rouge_scorer

    from scoring.rouge import prepare

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"], use_stemmer=True)
    per_ref = [scorer.score(prepare(r), prepare(prediction)) for r in references]
    return {t: (max(x[t].fmeasure for x in per_ref), sum(x[t].fmeasure for x in per_ref) / len(per_ref))
            for t in ("rouge1", "rouge2", "rougeL", "rougeLsum")}


def test_score_command_writes_long_rows_and_the_wide_view(tmp_path, store):
    answers = plot_answers()
    run_id = make_run(store, answers[0])
    refs = []
    for i, text in enumerate(answers[1:]):
        path = tmp_path / f"ref{i}.txt"
        path.write_text(text, encoding="utf-8")
        refs += ["--reference", path]
    out = invoke("score", run_id[:10], *refs, "--score", "rouge", "--db", store.path)
    assert out.exit_code == 0, out.output
    assert "rougeLsum" in out.output and "mean" in out.output

    expected = reference_rouge(answers[0], answers[1:])
    rows = store.execute(
        "SELECT metric, variant, aggregate, reference_id, value, config->>'implementation', summary_id "
        "FROM scores WHERE run_id = ?", [run_id])
    assert len(rows) == 4 * 3 * (3 + 2)  # 4 ROUGE types x P/R/F x (3 references + max + mean)
    assert {r[6] for r in rows} == {store.execute("SELECT summary_id FROM summaries WHERE run_id = ?", [run_id])[0][0]}
    per_ref = [r for r in rows if r[3] is not None]
    assert {r[3].split(":")[0] for r in per_ref} == {"ref0.txt", "ref1.txt", "ref2.txt"}
    assert all(r[5] == "longsum-fast" for r in rows)
    ((rouge1_f, rougeLsum_f, rouge2_mean, bert),) = store.execute(
        "SELECT rouge1_f, rougeLsum_f, rouge2_f_mean, bertscore_f1 FROM scores_wide WHERE run_id = ?", [run_id])
    assert rouge1_f == pytest.approx(expected["rouge1"][0], abs=1e-12)
    assert rougeLsum_f == pytest.approx(expected["rougeLsum"][0], abs=1e-12)
    assert rouge2_mean == pytest.approx(expected["rouge2"][1], abs=1e-12)
    assert 0.2 < rouge1_f < 0.8  # four people's summaries of one story overlap, far from identical
    assert bert is None

    # The view is queryable through `summarize sql`, the public read-only interface.
    out = invoke("sql", "SELECT run_id, round(rouge1_f, 4) AS r1 FROM scores_wide", "--db", store.path)
    assert out.exit_code == 0 and run_id in out.output


@pytest.mark.slow
def test_score_with_bertscore_records_model_layer_and_hash(tmp_path, store):
    answers = plot_answers(1)
    run_id = make_run(store, answers[0])
    ref = tmp_path / "ref.txt"
    ref.write_text(answers[1], encoding="utf-8")
    out = invoke("score", run_id, "--reference", ref, "--score", "bertscore", "--json", "--db", store.path)
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert {r["metric"] for r in rows} == {"bertscore"}
    config = json.loads(store.execute("SELECT any_value(config) FROM scores WHERE run_id = ?", [run_id])[0][0])
    assert config["model"] == "all-MiniLM-L6-v2" and config["layer"] == 6 and "_L6_no-idf_" in config["hash"]
    assert config["windows"] >= 1
    ((f1, model),) = store.execute("SELECT bertscore_f1, bertscore_model FROM scores_wide WHERE run_id = ?", [run_id])
    assert 0.5 < f1 < 1.0 and model == "all-MiniLM-L6-v2"


def test_score_errors_are_one_line(tmp_path, store):
    run_id = make_run(store, "A short summary. It has two sentences.")
    missing = invoke("score", run_id, "--score", "rouge", "--db", store.path)
    assert missing.exit_code == 1 and "need at least one reference" in missing.output
    unknown = invoke("score", run_id, "--score", "meteor", "--db", store.path)
    assert unknown.exit_code == 1 and "unknown metric 'meteor'" in unknown.output
    nothing = invoke("score", "feedbeef", "--score", "booookscore", "--db", store.path)
    assert nothing.exit_code == 1 and "no final summary" in nothing.output
    assert "Traceback" not in missing.output + unknown.output + nothing.output


@pytest.mark.slow
def test_eval_squality_command_prints_a_table(store):
    out = invoke("eval", "squality", SQUALITY, "--limit", "1", "--method", "extractive", "--score", "rouge",
                 "--summary-words", "120", "-q", "--db", store.path)
    assert out.exit_code == 0, out.output
    header, _, row = out.output.splitlines()[:3]
    assert header.split()[:5] == ["configuration", "runs", "ok", "degraded", "failed"]
    assert "rougeLsum" in header.split() and "bertscore_f1" not in header.split()
    assert row.startswith("extractive (baseline)") and row.split()[2:6] == ["1", "1", "0", "0"]


def test_eval_squality_rejects_a_file_that_is_not_squality(tmp_path, store):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"document": "x"}\n')
    out = invoke("eval", "squality", bad, "--db", store.path)
    assert out.exit_code == 1 and "not a SQuALITY row" in out.output


def test_help_does_not_import_the_heavy_libraries():
    code = (
        "import sys\n"
        "from pipelines.cli import cli\n"
        "for args in (['--help'], ['score', '--help'], ['eval', 'squality', '--help'], ['import-booookscore', '--help']):\n"
        "    try:\n"
        "        cli.main(args=args, prog_name='summarize', standalone_mode=False)\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = ('torch', 'bert_score', 'rouge_score', 'llama_cpp', 'nltk', 'transformers', 'rapidfuzz')\n"
        "print('HEAVY', sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout
    assert "import-booookscore" in out.stdout and "--reference" in out.stdout


def test_booookscore_rows_and_annotations_land_in_the_store(store):
    from pipelines.llm.recording import MemoryJournal, RecordingLLM
    from scoring import score_run
    from scripted import ScriptedBackend

    def judge(request):
        sentence = request.messages[-1]["content"]
        if "League" in sentence:
            return "Types: entity omission\nQuestions: What is the League?"
        if "office" in sentence:
            return "no idea"  # never parses: unparseable, not clean
        return "Types: none\nQuestions: none"

    summary = ("Jabez Wilson brings Holmes a strange story. He joined the League for the money. "
               "The office was closed one day. Holmes solves the case.")
    run_id = make_run(store, summary)
    llm = RecordingLLM(ScriptedBackend(judge), MemoryJournal(), run_id=run_id)
    rows = score_run(store, run_id, "booookscore", llm=llm, booookscore_max_attempts=2)
    values = {r["variant"]: r["value"] for r in rows}
    assert values == {"score": pytest.approx(2 / 3), "lower": 0.5, "sentences": 4, "flagged": 1, "unparseable": 1}
    annotations = store.execute(
        "SELECT sentence_num, status, flagged, types, attempts FROM booookscore_annotations WHERE run_id = ? "
        "ORDER BY sentence_num", [run_id])
    assert [(a[1], a[2]) for a in annotations] == [("ok", False), ("ok", True), ("unparseable", None), ("ok", False)]
    assert json.loads(annotations[1][3]) == ["entity omission"] and annotations[2][4] == 2
    ((score, lower, model),) = store.execute(
        "SELECT booookscore, booookscore_lower, booookscore_model FROM scores_wide WHERE run_id = ?", [run_id])
    assert score == pytest.approx(2 / 3) and lower == 0.5 and model == "scripted:scripted"
