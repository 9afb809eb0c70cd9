"""BooookScore: the parser against malformed answers, the retry/unparseable
logic (scripted backend), the released annotations, and the checker end to
end through the real llama.cpp model."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import DATA
from pipelines.llm.base import LLMCallError
from pipelines.llm.recording import MemoryJournal, RecordingLLM
from scoring.booookscore import BooookScoreChecker, load_released, parse_types, parse_v1, parse_v2
from scripted import ScriptedBackend
from scoring_helpers import make_run

RELEASED = DATA / "booookscore"
SUMMARY = (
    "Jabez Wilson, a pawnbroker with flaming red hair, brings Sherlock Holmes a strange story. "
    "He was paid to copy the encyclopaedia in an office of the Red-Headed League. "
    "One morning the office was closed and the League dissolved."
)


# -- the parsers ------------------------------------------------------------------

V1_ANSWERS = [
    ("Questions: none\nTypes: none", (), None),
    ("Questions: Who is Nikeya?\nTypes: entity omission", ("entity omission",), "Who is Nikeya?"),
    ("**Questions:** Why does he go?\n**Types:** Causal Omission, discontinuity.",
     ("causal omission", "discontinuity"), "Why does he go?"),
    ("Questions: none Types: none", (), None),
    ("Types: duplication\nQuestions: Was this not said before?", ("duplication",), "Was this not said before?"),
    ("Questions: What wreck?\nTypes: event omission, causal omissionArgumentParser\n<summary>junk",
     ("event omission", "causal omission"), "What wreck?"),
    ("1. Questions: none\n2. Types: no errors", (), None),
    ("Questions: none\nTypes: none\nQuestions: Who?\nTypes: entity omission", (), None),
    ("None.", (), None),
    ("Questions: Who is the narrator?\nTypes: none", (), "Who is the narrator?"),
    ("questions: what ledger?\nerror types: Entity, grammar", ("entity omission", "language"), "what ledger?"),
    ("Types: causal omission\nQuestions: Why does he leave the", ("causal omission",), "Why does he leave the"),
    ("Types: none\nQuestions: none\n<summary>\nCaptain Strike sails.", (), None),
]
V1_BAD = [
    ("", "empty"),
    ("I think this sentence is fine and clear to any reader.", "Types"),
    ("Questions: What?\nTypes: banana", "unknown"),
    ("Questions: Who is the man in the", "Types"),
    ("Questions: none\nTypes:", "unknown"),
    ("<summary>\n<sentence>The ship sails.</sentence>", "Types"),
]


@pytest.mark.parametrize("answer, types, questions", V1_ANSWERS)
def test_v1_parser_reads_sloppy_but_meaningful_answers(answer, types, questions):
    judgement, why = parse_v1(answer)
    assert why is None and judgement is not None
    assert judgement.types == types and judgement.questions == questions
    assert judgement.flagged == bool(types or questions)


@pytest.mark.parametrize("answer, reason", V1_BAD)
def test_v1_parser_refuses_answers_without_a_verdict(answer, reason):
    judgement, why = parse_v1(answer)
    assert judgement is None and reason.lower() in why.lower()


V2_CASES = [
    ('```json\n[{"sentence": 3, "questions": null, "types": []},\n {"sentence": 4, "questions": "Why?", '
     '"types": ["causal omission"]},]\n```', {3: (), 4: ("causal omission",)}, None),
    ('[{"sentence": 3, "questions": null, "types": []}, {"sentence": 4, "questions": "Who',
     {3: ()}, "4"),
    ("[{'sentence': 3, 'questions': None, 'types': ['salience']}, {'sentence': 4, 'questions': None, 'types': []}]",
     {3: ("salience",), 4: ()}, None),
    ('{"3": {"questions": null, "types": []}, "4": {"questions": "Why?", "types": ["causal omission"]}}',
     {3: (), 4: ("causal omission",)}, None),
    ('[{"questions": null, "types": []}, {"questions": "Who is he?", "types": "entity omission"}]',
     {3: (), 4: ("entity omission",)}, None),
    ('[{"sentence": 3, "types": ["vibes"]}, {"sentence": "Sentence 4", "types": ["Duplication"]}]',
     {4: ("duplication",)}, "unknown"),
    ("Sentence 3 is fine. Sentence 4 is fine too.", {}, "no JSON"),
    ('Here you go: {"sentence": 3, "questions": "Who?", "types": ["entity omission"]} and '
     '{"sentence": 9, "types": []}', {3: ("entity omission",)}, "4"),
]


@pytest.mark.parametrize("answer, expected, problem", V2_CASES)
def test_v2_parser_salvages_what_it_can_and_names_the_rest(answer, expected, problem):
    judgements, why = parse_v2(answer, [3, 4])
    assert {n: j.types for n, j in judgements.items()} == expected
    if problem is None:
        assert why is None
    else:
        assert problem.lower() in why.lower()


def test_type_names_are_normalised_and_unknown_ones_kept_apart():
    parsed = parse_types("Entity Omission; repetition & contradiction, vibes")
    assert parsed.types == ("entity omission", "duplication", "inconsistency")
    assert parsed.unknown == ("vibes",) and parsed.valid
    assert parse_types([]).valid and parse_types(None).valid and not parse_types("").valid


# -- the checker, scripted --------------------------------------------------------


class Answers:
    """Scripted answers: by sentence number (v1) or in call order."""

    def __init__(self, by_sentence=None, sequence=None):
        self.by_sentence = by_sentence or {}
        self.sequence = list(sequence or [])

    def __call__(self, request):
        if self.sequence:
            return self.sequence.pop(0)
        last = request.messages[-1]["content"]
        number = int(last.split(":", 1)[0].split()[-1])
        return self.by_sentence[number]


def checker_for(answer, version="v1", window=8192, **kwargs):
    backend = ScriptedBackend(answer, context_window=window)
    llm = RecordingLLM(backend, MemoryJournal())
    return BooookScoreChecker(llm, version, **kwargs), backend, llm


def test_bad_answers_are_asked_again_with_a_different_request_until_one_parses():
    checker, backend, llm = checker_for(
        Answers(sequence=["Sure! Happy to help.", "Questions: ?\nTypes: vibes", "Questions: none\nTypes: none"]))
    result = checker.check("Holmes took the case.")
    (annotation,) = result.annotations
    assert annotation.status == "ok" and annotation.attempts == 3 and annotation.flagged is False
    assert [r.seed for r in backend.requests] == [0, 1, 2]
    assert backend.requests[0].temperature == 0.0 and backend.requests[1].temperature > 0
    assert len({r.messages[-1]["content"] for r in backend.requests}) == 3
    assert len({rec.request_hash for rec in llm.journal.records}) == 3
    assert result.score == 1.0

    # A second check replays every answer from the journal: no new calls, same verdicts.
    again = BooookScoreChecker(llm, "v1").check("Holmes took the case.")
    assert len(backend.requests) == 3 and llm.usage.cache_hits == 3
    assert again.annotations[0].status == "ok" and again.annotations[0].attempts == 3


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_checking_the_first_sentences_only_still_shows_the_whole_summary(version):
    answer = ("Questions: none\nTypes: none" if version == "v1"
              else '{"1": {"questions": [], "types": []}, "2": {"questions": [], "types": []}}')
    checker, backend, _ = checker_for(lambda request: answer, version)
    result = checker.check(SUMMARY, first=2)
    assert [a.sentence_num for a in result.annotations] == [1, 2] and result.n_sentences == 2
    assert all(a.status == "ok" for a in result.annotations)
    assert all(SUMMARY in "\n".join(m["content"] for m in r.messages) for r in backend.requests)
    assert len(checker.check(SUMMARY).annotations) == 3


def test_a_sentence_that_never_parses_is_unparseable_not_clean():
    answers = Answers(by_sentence={
        1: "Questions: none\nTypes: none",
        2: "The League is a fine organisation with many members",
        3: "Questions: What League? Why was it dissolved?\nTypes: entity omission, causal omission",
    })
    checker, backend, _ = checker_for(answers, max_attempts=2)
    result = checker.check(SUMMARY)
    statuses = [a.status for a in result.annotations]
    assert statuses == ["ok", "unparseable", "ok"]
    bad = result.annotations[1]
    assert bad.attempts == 2 and bad.flagged is None and "Types" in bad.note
    assert result.n_flagged == 1 and result.n_unparseable == 1 and result.n_judged == 2
    assert result.score == pytest.approx(0.5) and result.lower == pytest.approx(1 / 3)
    assert len(backend.requests) == 4


def test_backend_errors_never_crash_the_checker():
    def failing(request):
        raise LLMCallError("connection reset")

    checker, _, llm = checker_for(failing, max_attempts=2)
    result = checker.check(SUMMARY)
    assert all(a.status == "unparseable" for a in result.annotations)
    assert result.score is None and result.lower == 0.0
    assert "connection reset" in result.annotations[0].note and llm.usage.errors == 6


def test_prompt_puts_the_shared_part_first_and_the_sentence_last():
    answers = Answers(by_sentence={n: "Questions: none\nTypes: none" for n in (1, 2, 3)})
    checker, backend, _ = checker_for(answers)
    checker.check(SUMMARY)
    first, second = backend.requests[0], backend.requests[1]
    assert first.messages[:-1] == second.messages[:-1]
    assert first.cache_prefix_messages == len(first.messages) - 1
    assert SUMMARY in first.messages[-2]["content"]
    assert "Jabez Wilson" in first.messages[-1]["content"] and "Sentence 1:" in first.messages[-1]["content"]
    assert "He was paid" in second.messages[-1]["content"]
    system = first.messages[0]["content"]
    for name in ("entity omission", "event omission", "causal omission", "salience", "discontinuity",
                 "duplication", "inconsistency", "language"):
        assert name in system


def test_v2_reasks_only_the_sentences_that_were_missing():
    first = '[{"sentence": 1, "questions": null, "types": []}, {"sentence": 3, "questions": "Why?", "types": ["causal omission"]}]'
    second = '[{"sentence": 2, "questions": null, "types": []}]'
    checker, backend, _ = checker_for(Answers(sequence=[first, second]), version="v2")
    result = checker.check(SUMMARY)
    assert [a.status for a in result.annotations] == ["ok", "ok", "ok"]
    assert [a.attempts for a in result.annotations] == [1, 2, 1]
    assert len(backend.requests) == 2
    retry = backend.requests[1].messages[-1]["content"]
    assert "2. He was paid" in retry and "1. Jabez" not in retry and "3. One morning" not in retry
    assert result.score == pytest.approx(2 / 3)


def test_v2_splits_batches_so_prompt_and_answer_fit_the_context():
    import prompts
    from pipelines.llm.base import CONTEXT_SAFETY_TOKENS, prompt_tokens

    def answer(request):
        numbers = [int(line.split(".")[0]) for line in request.messages[-1]["content"].splitlines()[1:]
                   if line[:1].isdigit()]
        return json.dumps([{"sentence": n, "questions": None, "types": []} for n in numbers])

    probe = ScriptedBackend(answer)
    one = prompts.render("booookscore_v2", summary=SUMMARY, batch="1. x", reminder="")
    window = prompt_tokens(probe, one.messages) + CONTEXT_SAFETY_TOKENS + 2 * 60 + 24 + 20
    checker, backend, _ = checker_for(answer, version="v2", window=window)
    result = checker.check(SUMMARY)
    assert result.n_judged == 3 and result.score == 1.0
    assert len(backend.requests) >= 2  # three sentences did not fit one call
    for request in backend.requests:
        assert prompt_tokens(backend, request.messages) + request.max_tokens <= window


# -- released annotations -----------------------------------------------------------


@pytest.mark.parametrize("name, expected", [
    ("gpt4-2048-hier", "90.84"), ("chatgpt-2048-hier", "88.26"), ("chatgpt-2048-inc", "77.95"),
])
def test_import_reproduces_the_papers_scores(tmp_path, name, expected):
    from pipelines.cli import cli

    db = tmp_path / "imp.duckdb"
    path = RELEASED / f"{name}-cleaned.json"
    runner = CliRunner()
    for _ in range(2):  # re-importing a label replaces it
        out = runner.invoke(cli, ["import-booookscore", str(path), "--label", name, "--db", str(db)])
        assert out.exit_code == 0, out.output
        assert f"BooookScore {expected} over 100 summaries" in out.output
    from pipelines.store import Store

    store = Store(db)
    ((score, n, sentences),) = store.execute(
        "SELECT booookscore, n_summaries, booookscore_sentences FROM scores_wide WHERE run_id = ?", [f"import:{name}"])
    assert f"{100 * score:.2f}" == expected and n == 100
    books = load_released(path)
    assert sentences == sum(len(b.annotations) for b in books)
    ((rows, flagged),) = store.execute(
        "SELECT count(*), count(*) FILTER (WHERE flagged) FROM booookscore_annotations WHERE label = ?", [name])
    assert rows == sentences and flagged == sum(b.result.n_flagged for b in books)


def test_import_rejects_files_in_another_format(tmp_path):
    from pipelines.cli import cli

    bad = tmp_path / "bad.json"
    bad.write_text('["not", "books"]')
    out = CliRunner().invoke(cli, ["import-booookscore", str(bad), "--db", str(tmp_path / "x.duckdb")])
    assert out.exit_code != 0 and "expected an object of books" in out.output


# -- the real model ---------------------------------------------------------------


def squality_summary(sentences: int) -> str:
    from pipelines.text import sentences as split

    row = json.loads((DATA / "squality" / "dev_subset.jsonl").read_text(encoding="utf-8").splitlines()[1])
    return " ".join(split(row["questions"][0]["responses"][0]["response_text"])[:sentences])


@pytest.mark.llm
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_checker_end_to_end_on_llamacpp(gemma, store, version):
    from pipelines.store import DuckDBJournal
    from scoring import score_run

    summary = squality_summary(2)
    run_id = make_run(store, summary)
    llm = RecordingLLM(gemma, DuckDBJournal(store), run_id=run_id)
    # The checker's own answer budgets (a 32-token cap cut answers before their verdict).
    options = dict(booookscore_version=version, booookscore_max_attempts=2)
    rows = score_run(store, run_id, ["booookscore"], llm=llm, **options)
    values = {r["variant"]: r["value"] for r in rows}
    annotations = store.execute(
        "SELECT sentence_num, status, flagged, attempts, answer, request_hash FROM booookscore_annotations "
        "WHERE run_id = ? ORDER BY sentence_num", [run_id])
    assert [a[0] for a in annotations] == [1, 2]
    for _, status, flagged, attempts, answer, request_hash in annotations:
        assert status in ("ok", "unparseable") and 1 <= attempts <= 2 and request_hash
        assert (flagged is None) == (status == "unparseable")
    judged = [a for a in annotations if a[1] == "ok"]
    # Both prompts' examples get verdicts in the expected shape even from the tiny base model (v1's
    # lines, v2's JSON list): an all-unparseable result would mean the parser or the prompt is broken.
    assert judged, [a[4] for a in annotations]
    flagged = sum(1 for a in judged if a[2])
    assert values["sentences"] == 2 and values["unparseable"] == 2 - len(judged)
    assert values["score"] == (1 - flagged / len(judged) if judged else None)
    assert values["lower"] == pytest.approx(1 - (flagged + 2 - len(judged)) / 2)
    calls = store.execute("SELECT count(*), sum(cached_input_tokens) FROM llm_calls WHERE run_id = ? "
                          "AND step LIKE 'booookscore:%' AND NOT cached", [run_id])[0]
    assert calls[0] == llm.usage.calls >= 1
    if version == "v1":  # consecutive calls share the instructions + summary prefix in the KV cache
        assert calls[1] >= 500 * (calls[0] - 1)
    (wide,) = store.execute("SELECT booookscore, booookscore_unparseable FROM scores_wide WHERE run_id = ?", [run_id])
    assert wide == (values["score"], values["unparseable"])

    # Scoring again replays every answer from the journal: same verdicts, no model calls.
    replay = RecordingLLM(gemma, DuckDBJournal(store), run_id=run_id)
    again = score_run(store, run_id, ["booookscore"], llm=replay, **options)
    assert replay.usage.calls == 0 and replay.usage.cache_hits >= 1
    assert {r["variant"]: r["value"] for r in again} == values
