"""FABLES: the released annotations imported with the paper's per-model
figures, a small fixture through every table, and the judge meta-evaluation
(agreement arithmetic, a scripted judge, the CLI against an API judge)."""

from __future__ import annotations

import hashlib
import json
import lzma
import re
import zipfile

import pytest
from click.testing import CliRunner

from conftest import DATA, SHARED_DATA
from pipelines.llm.recording import MemoryJournal, RecordingLLM
from scoring.fables import agreement, evaluate_judge, load_release, sample
from scripted import ScriptedBackend

RELEASE = DATA / "fables" / "FABLES.json.xz"
PAPER = {"CLAUDE-3-OPUS": ("594", "89.1"), "GPT-4": ("682", "78.2"), "GPT-4-TURBO": ("563", "77.6"),
         "GPT-3.5-TURBO": ("604", "71.5"), "MIXTRAL": ("715", "68.7")}

FIXTURE = {
    "canary": "test",
    "FABLES": {
        "Book A": {
            "M1": {"summary": "A summary of A by M1.", "general_comment": "Good overall.", "claims": {
                "0": {"claim": "Anna leaves home.", "label": "Yes", "evidence": ["Anna packed and left."], "reason": [""]},
                "1": {"claim": "Anna has a brother.", "label": "No", "evidence": ["Anna was an only child."],
                      "reason": ["She has no siblings."]},
                "2": {"claim": "The book is moving.", "label": "Inapplicable", "evidence": [""], "reason": ["Opinion."]},
            }},
            "M2": {"summary": "A summary of A by M2.", "general_comment": "", "claims": {
                "0": {"claim": "Anna leaves home in spring.", "label": "PartialSupport",
                      "evidence": ["Anna packed and left.", "It was autumn."], "reason": ["Wrong season.", ""]},
            }},
        },
        "Book B": {
            "M1": {"summary": "A summary of B by M1.", "general_comment": "Short.", "claims": {
                "1": {"claim": "Ben is a sailor.", "label": "Yes", "evidence": ["Ben had sailed for years."], "reason": []},
                "0": {"claim": "Ben lives by the sea.", "label": "Yes", "evidence": ["His house faced the sea."],
                      "reason": [""]},
            }},
        },
    },
}


def write_fixture(tmp_path, data=FIXTURE, name="fables.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# -- the release --------------------------------------------------------------------------


def test_import_reproduces_the_papers_per_model_figures(tmp_path):
    from pipelines.cli import cli
    from pipelines.store import Store

    db = tmp_path / "fables.duckdb"
    for _ in range(2):  # re-importing a set replaces it
        out = CliRunner().invoke(cli, ["import-fables", str(RELEASE), "--db", str(db)])
        assert out.exit_code == 0, out.output
        for model, (claims, yes) in PAPER.items():
            assert re.search(rf"^{re.escape(model)}\s+26\s+{claims}\s+{re.escape(yes)}\s", out.output, re.M), model
        assert "3158 claims imported" in out.output
    store = Store(db)
    ((claims, labels),) = store.execute("SELECT count(*), count(DISTINCT label) FROM claims WHERE source = 'import'")
    assert claims == 3158 and labels == 4
    rows = dict(store.execute("SELECT run_id, round(100 * faithfulness_yes, 1) FROM scores_wide "
                              "WHERE run_id LIKE 'import:fables:%'"))
    assert rows == {f"import:fables:{m}": float(y) for m, (_, y) in PAPER.items()}
    ((books, comments),) = store.execute("SELECT count(DISTINCT book), count(general_comment) FROM claim_summaries")
    assert books == 26 and comments == 130


def test_the_test_copy_is_the_shared_release_unchanged():
    shared = SHARED_DATA / "fables" / "FABLES.json"
    if not shared.exists():
        pytest.skip("../shared/data is not here")
    copy = lzma.decompress(RELEASE.read_bytes())
    assert hashlib.sha256(copy).hexdigest() == hashlib.sha256(shared.read_bytes()).hexdigest()


# -- the fixture, through every table ---------------------------------------------------------


def test_import_writes_claims_evidence_reasons_and_comments(tmp_path, store):
    from scoring.fables import import_fables

    path = write_fixture(tmp_path)
    shares = import_fables(store, path, "mini")
    by_model = {s.model: s for s in shares}
    assert by_model["M1"].claims == 5 and by_model["M1"].summaries == 2
    assert by_model["M1"].share("Yes") == pytest.approx(3 / 5) and by_model["M2"].share("Yes") == 0
    rows = store.execute(
        "SELECT summary_id, claim_num, claim, label, evidence, reason, judge_model FROM claims "
        "WHERE run_id = 'import:mini:M1' ORDER BY summary_id, claim_num")
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("Book A", 1, "Yes"), ("Book A", 2, "No"), ("Book A", 3, "Inapplicable"), ("Book B", 1, "Yes"), ("Book B", 2, "Yes")]
    assert rows[3][2] == "Ben lives by the sea."  # claims keep the release's numbering, not the file's order
    assert json.loads(rows[1][4]) == ["Anna was an only child."] and json.loads(rows[1][5]) == ["She has no siblings."]
    assert json.loads(rows[2][4]) == [] and rows[0][6] == "human"
    comments = dict(store.execute("SELECT run_id || '/' || summary_id, general_comment FROM claim_summaries"))
    assert comments == {"import:mini:M1/Book A": "Good overall.", "import:mini:M2/Book A": None,
                        "import:mini:M1/Book B": "Short."}
    (wide,) = store.execute("SELECT faithfulness_yes, faithfulness_supported, faithfulness_claims FROM scores_wide "
                            "WHERE run_id = 'import:mini:M1'")
    assert wide == (pytest.approx(0.6), pytest.approx(0.6), 5)

    smaller = json.loads(json.dumps(FIXTURE))
    del smaller["FABLES"]["Book B"]
    import_fables(store, write_fixture(tmp_path, smaller, "smaller.json"), "mini")
    assert store.execute("SELECT count(*) FROM claims WHERE set_label = 'mini'") == [(4,)]


def test_the_released_zip_is_read_as_is(tmp_path):
    archive = tmp_path / "FABLES.json.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("FABLES.json", json.dumps(FIXTURE))
    assert sum(len(s.claims) for s in load_release(archive)) == 6


@pytest.mark.parametrize("content, message", [
    ('["not", "fables"]', "expected the FABLES release format"),
    ('{"FABLES": {"Book": {"M": {"summary": "x"}}}}', "has no claims object"),
    ('{"FABLES": {"Book": {"M": {"claims": {"0": {"claim": "x", "label": "Maybe"}}}}}}', "unknown label"),
    ("{not json", "not JSON"),
])
def test_import_rejects_other_formats_in_one_line(tmp_path, content, message):
    from pipelines.cli import cli

    bad = tmp_path / "bad.json"
    bad.write_text(content)
    out = CliRunner().invoke(cli, ["import-fables", str(bad), "--db", str(tmp_path / "x.duckdb")])
    assert out.exit_code == 1 and message in out.output and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1


# -- judge meta-evaluation -------------------------------------------------------------------


def test_agreement_arithmetic():
    pairs = ([("Yes", "Yes")] * 6 + [("Yes", "No")] * 2 + [("No", "No")] * 1 + [("No", "Yes")] * 1
             + [("PartialSupport", "Yes")] * 2 + [("Inapplicable", None)] * 1)
    a = agreement(pairs)
    assert a.n == 13 and a.unparseable == 1
    assert a.accuracy == pytest.approx(7 / 13)
    assert a.balanced_accuracy == pytest.approx((6 / 8 + 1 / 2 + 0 + 0) / 4)
    assert a.no_precision == pytest.approx(1 / 3) and a.no_recall == pytest.approx(1 / 2)
    assert agreement([("Yes", "Yes")]).no_precision is None


def quoting_judge(request):
    """Says No when the passages contain 'only child' or 'autumn', Yes when there is a passage, else Inapplicable."""
    content = request.messages[-1]["content"]
    if "only child" in content or "autumn" in content:
        return 'Label: No\nEvidence: "only child"'
    if "(no passage)" in content:
        return "Label: Inapplicable\nEvidence: none"
    return "Label: Yes\nEvidence: none"


def test_a_judge_is_scored_against_the_human_labels_and_stored(tmp_path, store):
    summaries = load_release(write_fixture(tmp_path))
    backend = ScriptedBackend(quoting_judge, context_window=8192)
    llm = RecordingLLM(backend, MemoryJournal())
    result = evaluate_judge(store, summaries, llm, run_id="eval:test")
    a = result.agreement
    # humans: Yes x3, No, Inapplicable, PartialSupport; judge: Yes x3, No, Inapplicable, No
    assert a.n == 6 and a.accuracy == pytest.approx(5 / 6)
    assert a.balanced_accuracy == pytest.approx((1 + 1 + 1 + 0) / 4)
    assert a.no_precision == pytest.approx(1 / 2) and a.no_recall == 1.0
    prompts_seen = [r.messages[-1]["content"] for r in backend.requests]
    assert any("Anna was an only child." in p for p in prompts_seen)
    assert not any("She has no siblings" in p for p in prompts_seen)  # the readers' reasons would give it away
    scores = dict(store.execute("SELECT variant, value FROM scores WHERE run_id = 'eval:test' AND metric = 'fables_judge'"))
    assert scores["accuracy"] == pytest.approx(5 / 6) and scores["claims"] == 6
    rows = store.execute("SELECT reference_label, label FROM claims WHERE run_id = 'eval:test' AND source = 'eval'")
    assert sorted(rows) == sorted((c.reference_label, c.label) for c in result.claims)


def test_limit_takes_a_fixed_sample_across_books_and_models():
    summaries = load_release(RELEASE)
    first = [(s.book, s.model, c.claim_num) for s, c in sample(summaries, 40)]
    assert first == [(s.book, s.model, c.claim_num) for s, c in sample(list(reversed(summaries)), 40)]
    assert len({b for b, _, _ in first}) > 10 and len({m for _, m, _ in first}) == 5


@pytest.mark.slow
def test_cli_eval_fables_against_an_api_judge_from_the_imported_set(tmp_path, monkeypatch, fake_openai):
    from pipelines.cli import cli
    from pipelines.store import Store

    fake_openai.answer = lambda messages: quoting_judge(type("R", (), {"messages": messages})())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    fake_openai.delay = 0.3  # long enough for calls to overlap even on a loaded machine
    db = tmp_path / "e.duckdb"
    runner = CliRunner()
    out = runner.invoke(cli, ["eval", "fables", "--judge-model", "openai:fake", "--db", str(db)])
    assert out.exit_code == 1 and "import-fables" in out.output
    assert runner.invoke(cli, ["import-fables", str(write_fixture(tmp_path)), "--db", str(db)]).exit_code == 0
    out = runner.invoke(cli, ["eval", "fables", "--judge-model", "openai:fake", "--judge-base-url", fake_openai.base_url,
                              "--judge-concurrency", "3", "--limit", "5", "--format", "json", "--db", str(db)])
    assert out.exit_code == 0, out.output
    (report,) = json.loads(out.stdout)
    assert report["judge"] == "openai:fake" and report["claims"] == 5 and report["unparseable"] == 0
    assert fake_openai.max_in_flight > 1
    store = Store(db)
    ((run_id, n),) = store.execute("SELECT run_id, count(*) FROM claims WHERE source = 'eval' GROUP BY run_id")
    assert n == 5 and run_id.startswith("eval:fables:")
    ((accuracy,),) = store.execute("SELECT value FROM scores WHERE run_id = ? AND variant = 'accuracy'", [run_id])
    assert accuracy == report["accuracy"]
    hashes = {h for (h,) in store.execute("SELECT request_hash FROM llm_calls WHERE status = 'ok'")}
    assert {h for (h,) in store.execute("SELECT judge_request_hash FROM claims WHERE run_id = ?", [run_id])} <= hashes
    check = runner.invoke(cli, ["check", "--db", str(db)])
    assert check.exit_code == 0, check.output


@pytest.mark.llm
def test_eval_fables_through_the_embedded_model(gemma, store):
    """The real llama.cpp path end to end: released claims judged against the
    readers' evidence quotes, every verdict stored beside its human label, and
    the stored agreement computed from exactly those pairs (the 270M model's
    labels are not judgements; what is tested is the machinery)."""
    summaries = load_release(RELEASE)
    journal = MemoryJournal()
    result = evaluate_judge(store, summaries, RecordingLLM(gemma, journal), limit=4, max_attempts=2,
                            run_id="eval:gemma")
    rows = store.execute("SELECT reference_label, label, claim FROM claims WHERE run_id = 'eval:gemma' "
                         "AND source = 'eval' ORDER BY claim_num")
    picked = sample(summaries, 4)
    assert [(h, c) for h, _, c in rows] == [(released.label, released.claim) for _, released in picked]
    assert any(label is not None for _, label, _ in rows), rows  # verdicts parsed from the real model
    scores = dict(store.execute("SELECT variant, value FROM scores WHERE run_id = 'eval:gemma'"))
    assert scores["claims"] == 4 and scores["accuracy"] == pytest.approx(sum(h == j for h, j, _ in rows) / 4)
    assert scores["unparseable"] == sum(j is None for _, j, _ in rows) == result.agreement.unparseable
    # each judge prompt held the annotators' evidence for its claim
    prompts = "\n".join(json.loads(r.request)["messages"][-1]["content"] for r in journal.records)
    quoted = [released for _, released in picked if released.evidence]
    assert quoted and all(any(quote[:60] in prompts for quote in released.evidence) for released in quoted)
