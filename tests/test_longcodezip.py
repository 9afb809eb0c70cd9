"""LongCodeZip: splitting, coarse ranking and selection, fine-grained blocks
and knapsack, on real code (LongCodeZip's own demo and CPython stdlib
contexts). The bookkeeping is tested with a deterministic stand-in scorer;
the perplexity ranking itself with the real llama.cpp model (marked llm)."""

from __future__ import annotations

import ast
import itertools
import json
import math
import random
import re
import textwrap

import pytest
from conftest import DATA

from pipelines.compress.longcodezip import (
    LongCodeZip,
    LongCodeZipSettings,
    compress_code,
    chunk_names,
    fuse,
    neighbourhood,
    entropy_blocks,
    knapsack,
    select_by_rank,
    spike_lines,
    split_code,
    split_lines,
)
from pipelines.compress.retention import needed_definitions, random_selection, retained

DEMO = DATA / "code" / "longcodezip_demo"
TASKS = DATA / "code" / "stdlib_funccomp" / "tasks.jsonl"


def demo_code() -> str:
    return (DEMO / "example_context.py").read_text(encoding="utf-8")


def demo_query() -> str:
    """The query of LongCodeZip's demo.py: the signature of BaseAgent._finalize_step."""
    demo = (DEMO / "demo.py").read_text(encoding="utf-8")
    return re.search(r"question = '''(.*?)'''", demo, re.S).group(1)


def task(task_id: str) -> dict:
    for line in TASKS.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row["task_id"] == task_id:
            return row
    raise KeyError(task_id)


class CopyScorer:
    """A deterministic stand-in for a language model: a token is likely
    (p=0.5) when it already occurred in the text, unlikely (p=0.001)
    otherwise. Enough to test LongCodeZip's bookkeeping; real perplexities
    are tested with llama.cpp below."""

    n_ctx = 1_000_000
    bos_token = 0

    def __init__(self):
        self.ids: dict[str, int] = {}
        self.pieces: dict[int, str] = {0: ""}

    def tokenize(self, text: str) -> list[int]:
        out = []
        for piece in re.findall(r"\s+|\w+|[^\w\s]", text):
            if piece not in self.ids:
                self.ids[piece] = len(self.ids) + 1
                self.pieces[self.ids[piece]] = piece
            out.append(self.ids[piece])
        return out

    def token_offsets(self, tokens):
        offsets, pos = [], 0
        for t in tokens:
            offsets.append(pos)
            pos += len(self.pieces[t].encode("utf-8"))
        return offsets

    def token_logprobs(self, tokens, first: int = 1):
        seen = set(tokens[:max(1, first)])
        out = []
        for t in tokens[max(1, first):]:
            out.append(math.log(0.5) if t in seen else math.log(0.001))
            seen.add(t)
        return out

    def count(self, text: str) -> int:
        return len(self.tokenize(text))


class CueScorer(CopyScorer):
    """A stand-in whose predictions owe nothing to copying: every token is
    likely (p=0.5) once `cue` has occurred before it, unlikely (p=0.001)
    otherwise. Only a chunk holding the cue makes the query predictable."""

    def __init__(self, cue: str):
        super().__init__()
        self.cue = self.tokenize(cue)[0]

    def token_logprobs(self, tokens, first: int = 1):
        start = max(1, first)
        seen = self.cue in tokens[:start]
        out = []
        for t in tokens[start:]:
            out.append(math.log(0.5) if seen else math.log(0.001))
            seen = seen or t == self.cue
        return out


# --- splitting ----------------------------------------------------------------------


def test_split_python_into_functions_losslessly():
    code = demo_code()
    chunks = split_code(code, "python")
    assert "".join(c.text for c in chunks) == code
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:]))
    methods = [n.name for n in ast.walk(ast.parse(code)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    named = [c.name for c in chunks if c.kind == "method"]
    assert named == [f"BaseAgent.{m}" for m in methods]
    finalize = next(c for c in chunks if c.name == "BaseAgent._finalize_step")
    signature = "".join(finalize.lines[: finalize.signature_lines])
    assert signature.lstrip().startswith("async def _finalize_step(")
    assert signature.rstrip().endswith("-> None:")
    assert finalize.lines[finalize.signature_lines].strip() == "step.state = AgentStepState.COMPLETED"
    decorated = next(c for c in chunks if c.name == "BaseAgent.new_task")
    assert decorated.text.lstrip().startswith("@abstractmethod")


def test_split_a_truncated_stdlib_context():
    """Function-completion contexts stop mid-class: the part that parses is
    split with ast and the rest is kept as a tail chunk."""
    context = task("typing.py:__new__:2891")["context"]
    with pytest.raises(SyntaxError):
        ast.parse(context)
    chunks = split_code(context, "python")
    assert "".join(c.text for c in chunks) == context
    assert chunks[-1].kind == "tail" and "class _TypedDictMeta(type):" in chunks[-1].text
    names = {c.name for c in chunks}
    assert {"NamedTuple", "_make_nmtuple", "Generic.__init_subclass__"} <= names
    assert sum(c.kind in ("function", "method") for c in chunks) > 150


def test_split_falls_back_to_definition_patterns():
    code = demo_code()
    chunks = split_code(code, "javascript")  # not parsed with ast: the pattern scan finds def/class lines
    assert "".join(c.text for c in chunks) == code
    starts = [c.text.split("\n", 1)[0].strip() for c in chunks[1:]]
    assert all(re.match(r"(async )?(def|class) ", s) for s in starts)
    definitions = re.findall(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]", code, re.M)
    assert len(chunks) == 1 + len(definitions)


# --- coarse stage ---------------------------------------------------------------------


def test_select_by_rank_respects_budget_and_order():
    sizes = [50, 10, 40, 30, 5]
    scores = [0.1, 0.9, 0.8, float("-inf"), 0.5]
    assert select_by_rank(sizes, scores, 60) == [1, 2, 4]  # 1, 2 by rank; 4 still fits; 0 does not
    assert select_by_rank(sizes, scores, 9) == [4]
    assert select_by_rank(sizes, scores, 1000) == [0, 1, 2, 3, 4]
    assert select_by_rank([50, 40], [0.2, 0.9], 30) == []
    assert select_by_rank([50, 40], [0.2, 0.9], 30, at_least_one=True) == [1]  # the fine stage cuts it


def test_one_long_function_is_pruned_not_dropped():
    scorer = CopyScorer()
    chunk = next(c for c in split_code(demo_code(), "python") if c.name == "BaseAgent.execute_task")
    code = textwrap.dedent(chunk.text)
    result = compress_code(code, 0.3, demo_query(), scorer=scorer, count_tokens=scorer.count,
                           settings=LongCodeZipSettings(fine_grained=True))
    assert [c.action for c in result.chunks] == ["pruned"]
    assert result.text.startswith("async def execute_task(self) -> AgentExecution:\n")
    assert 0.15 < result.ratio <= 0.3 * 1.03


def test_coarse_stage_ranks_selects_and_marks_dropped_code():
    # The demo's query is _finalize_step's own signature; the scorer rewards only the cue, a word of
    # reflect_on_result's docstring, so the ranking must follow the model's conditional perplexity.
    scorer = CueScorer("Reflect")
    settings = LongCodeZipSettings(signals="ami")  # the paper's ranking alone
    code, query = demo_code(), demo_query()
    result = compress_code(code, 0.3, query, scorer=scorer, count_tokens=scorer.count, settings=settings)
    ranked = sorted(result.chunks, key=lambda c: -c.importance if math.isfinite(c.importance) else math.inf)
    assert ranked[0].name == "BaseAgent.reflect_on_result" and ranked[0].importance > 0
    assert all(c.importance <= 0 for c in ranked[1:] if math.isfinite(c.importance))
    assert ranked[0].action == "kept"
    assert result.compressed_tokens <= 0.3 * result.original_tokens * (1 + settings.tolerance)
    kept = [c for c in result.chunks if c.action == "kept"]
    assert kept and all(c.text in result.text for c in kept)
    # kept code in original order, each run of dropped chunks one placeholder line
    expected = []
    for c in result.chunks:
        if c.action == "kept":
            expected.append(c.text)
        elif not expected or not expected[-1].lstrip().startswith("# ..."):
            first = next(line for line in split_lines(code[c.start:c.end]) if line.strip())
            indent = re.match(r"[ \t]*", first).group()
            expected.append(f"{indent}# ...\n")
    assert result.text == "".join(expected)
    assert result.text.count("# ...") == sum(
        1 for a, b in zip([None] + result.chunks, result.chunks) if b.action == "dropped" and (a is None or a.action != "dropped")
    )


# --- fine stage --------------------------------------------------------------------------


def test_spikes_start_new_blocks():
    nan = float("nan")
    values = [2.0, 1.0, 1.2, 6.0, 1.1, nan, 1.0, 1.3, 7.0, 1.2, 1.1]
    lines = [f"line {i}\n" if not math.isnan(v) else "\n" for i, v in enumerate(values)]
    assert spike_lines(values, k=0.2) == [3, 8]
    assert entropy_blocks(lines, values, first=1) == [(1, 3), (3, 8), (8, 11)]
    # the signature lines before `first` never start or join a block
    assert entropy_blocks(lines, values, first=4) == [(4, 8), (8, 11)]
    assert spike_lines([1.0, 1.0]) == []
    # size limit: a block of more than max_lines non-blank lines is cut at its strongest rise
    flat = [1.0, 1.1, 1.0, 3.0, 1.2, 1.1, 2.0, 1.0]
    plain = [f"x{i}\n" for i in range(len(flat))]
    assert entropy_blocks(plain, flat, first=0, k=50.0) == [(0, 8)]
    assert entropy_blocks(plain, flat, first=0, k=50.0, max_lines=4) == [(0, 3), (3, 6), (6, 8)]


def test_knapsack_is_exact():
    rng = random.Random(7)
    for _ in range(60):
        n = rng.randint(1, 9)
        weights = [rng.randint(1, 30) for _ in range(n)]
        values = [rng.uniform(-2, 10) for _ in range(n)]
        capacity = rng.randint(0, 120)
        chosen = knapsack(weights, values, capacity)
        assert sum(weights[i] for i in chosen) <= capacity
        best = max(
            (sum(values[i] for i in s) for r in range(n + 1) for s in itertools.combinations(range(n), r)
             if sum(weights[i] for i in s) <= capacity),
        )
        assert sum(values[i] for i in chosen) == pytest.approx(max(best, 0.0))


def test_fine_stage_prunes_blocks_within_each_function_share():
    scorer = CopyScorer()
    settings = LongCodeZipSettings(signals="ami", fine_grained=True)
    code, query = demo_code(), demo_query()
    result = compress_code(code, 0.25, query, scorer=scorer, count_tokens=scorer.count, settings=settings)
    chunks = {c.name: c for c in split_code(code, "python")}
    pruned = [c for c in result.chunks if c.action == "pruned"]
    assert pruned, "at ratio 0.25 some selected function must be pruned"
    for report in pruned:
        original = chunks[report.name]
        signature = "".join(original.lines[: original.signature_lines])
        assert report.text.startswith(signature)  # the signature is always kept
        minimum = scorer.count(signature + f"{' ' * 8}# ...\n")
        assert report.compressed_tokens <= max(report.detail["target_tokens"], minimum) + 1
        assert report.detail["blocks_kept"] < report.detail["blocks"]
        body_lines = set(original.lines)
        for line in split_lines(report.text):
            assert line in body_lines or line.strip() in ("# ...", "...")  # `...` where a body would be empty
    assert result.compressed_tokens <= 0.25 * result.original_tokens * (1 + settings.tolerance)
    assert result.ratio > 0.15  # the budget is used, not wasted


# --- through llama.cpp ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    from pipelines.llm.logprobs import default_scorer

    return default_scorer()


@pytest.mark.llm
def test_perplexity_ranking_with_llamacpp(scorer, gemma):
    """AMI = PPL(q) - PPL(q | chunk) from the packaged model, on a stdlib task
    whose target (ZipFile.getinfo) is not in the context: a function that uses
    the class the query names (ZipInfo) makes the query more predictable than
    the same function with that class renamed, and renaming changes nothing
    in a function that never mentions it."""
    t = task("zipfile.py:getinfo:1516")
    assert "def getinfo" not in t["context"] and "ZipInfo" in t["query"]
    chunks = {c.name: c for c in split_code(t["context"], "python")}
    names = ["ZipFile.infolist", "ZipInfo", "ZipFile.namelist"]
    assert "ZipInfo" not in chunks["ZipFile.namelist"].text
    texts = []
    for name in names:
        texts += [chunks[name].text, re.sub(r"\bZipInfo\b", "QxvRecord", chunks[name].text)]
    lcz = LongCodeZip(scorer, gemma.count_tokens)
    scores = lcz.rank(texts, query=t["query"])
    assert all(math.isfinite(s) for s in scores)
    (infolist, infolist_renamed), (zipinfo, zipinfo_renamed), (namelist, namelist_renamed) = zip(scores[::2], scores[1::2])
    assert infolist > infolist_renamed + 2 and zipinfo > zipinfo_renamed + 2, scores
    assert namelist == pytest.approx(namelist_renamed, abs=0.05)  # the same text: only batch arithmetic differs
    assert lcz.rank(["   \n"], query=t["query"]) == [float("-inf")]


@pytest.mark.llm
def test_line_perplexity_blocks_with_llamacpp(scorer, gemma):
    chunk = next(c for c in split_code(demo_code(), "python") if c.name == "BaseAgent._tool_call_handler")
    lcz = LongCodeZip(scorer, gemma.count_tokens)
    lcz.rank([], query=demo_query())
    analysis = lcz._analyse(chunk)  # per-line perplexity, entropy blocks, block AMI
    values, lines = analysis.line_values, chunk.lines
    assert len(values) == len(lines)
    assert all(math.isfinite(v) and v >= 0 for v, line in zip(values, lines) if line.strip())
    assert all(math.isnan(v) for v, line in zip(values, lines) if not line.strip())
    blocks = analysis.blocks
    assert blocks == entropy_blocks(lines, values, chunk.signature_lines, lcz.settings.spike_k,
                                    lcz.settings.max_block_lines)
    assert len(blocks) >= 2 and blocks[0][0] == chunk.signature_lines and blocks[-1][1] == len(lines)
    assert len(analysis.block_scores) == len(blocks) and all(math.isfinite(x) for x in analysis.block_scores)
    text, action, detail = lcz._fine(chunk, 0.5 * gemma.count_tokens(chunk.text))
    assert action == "pruned" and text.startswith("".join(lines[: chunk.signature_lines]))
    assert gemma.count_tokens(text) <= 0.5 * gemma.count_tokens(chunk.text) + 1
    assert 0 < detail["blocks_kept"] < len(blocks)


RSS_PROBE = """
import json, sys
from pipelines.llm.logprobs import LogprobScorer
from pipelines.compress.longcodezip import split_lines

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024

scorer = LogprobScorer(n_ctx=2048)
code = open(sys.argv[1], encoding="utf-8").read()
tokens = [scorer.bos_token] + scorer.tokenize(code)[:1500]
scorer.token_logprobs(tokens[:8])  # buffers for a short pass, as any caller would have
before = status("VmRSS")
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS
values = scorer.token_logprobs(tokens)  # a log-prob at every position, as line perplexities ask
print(json.dumps({"n": len(values), "finite": bool(all(v == v and v <= 0 for v in values)),
                  "extra": status("VmHWM") - before}))
"""


@pytest.mark.llm
def test_logprobs_at_every_position_stay_within_memory(tmp_path):
    """Log-probs at every one of 1,500 positions, measured as the process's
    peak RSS (llama.cpp's buffers included, which tracemalloc cannot see): far
    below one logits row per position (1 MiB each with Gemma's vocabulary) or
    per position of a 512-token batch (512 MiB)."""
    import subprocess
    import sys

    probe = tmp_path / "probe.py"
    probe.write_text(RSS_PROBE)
    out = subprocess.run([sys.executable, str(probe), str(DEMO / "example_context.py")], capture_output=True,
                         text=True, timeout=600, cwd=DATA.parent.parent)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] == 1500 and result["finite"]
    assert result["extra"] < 200 * 2**20, f"peak grew by {result['extra'] / 2**20:.0f} MiB"


@pytest.mark.llm
def test_windowed_logprobs_match_a_single_pass():
    """A text three times the scorer's context is scored in windows; the first
    window has the whole context, so it matches a single pass with a larger one."""
    from pipelines.llm.logprobs import LogprobScorer, default_scorer

    small = LogprobScorer(n_ctx=160)
    tokens = [small.bos_token] + small.tokenize(demo_code())[:480]
    windowed = small.token_logprobs(tokens, overlap=32)
    assert windowed.dtype.name == "float32" and len(windowed) == len(tokens) - 1
    assert all(math.isfinite(float(x)) and x <= 0 for x in windowed)
    direct = default_scorer().token_logprobs(tokens[:159])
    assert max(abs(float(a) - float(b)) for a, b in zip(windowed[:158], direct)) < 1e-3


def test_another_llama_cpp_version_is_refused_clearly():
    from pipelines.llm.base import LLMConfigError
    from pipelines.llm.logprobs import TESTED_LLAMA_CPP_VERSION, check_llama_cpp_version

    check_llama_cpp_version(TESTED_LLAMA_CPP_VERSION)
    with pytest.raises(LLMConfigError, match=f"llama-cpp-python=={TESTED_LLAMA_CPP_VERSION}.*found 0.3.99"):
        check_llama_cpp_version("0.3.99")
    import llama_cpp

    assert llama_cpp.__version__ == TESTED_LLAMA_CPP_VERSION  # the installed one is the pinned one


def test_log_softmax_rows_match_float64():
    import numpy as np

    from pipelines.llm.logprobs import _log_softmax_at

    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((5, 4000)) * 8).astype(np.float32)
    targets = [3, 17, 3999, 0, 2500]
    ref = logits.astype(np.float64)
    ref = ref - np.log(np.exp(ref - ref.max(1, keepdims=True)).sum(1, keepdims=True)) - ref.max(1, keepdims=True)
    got = _log_softmax_at(logits, targets)
    assert got.dtype == np.float32
    assert np.allclose(got, ref[np.arange(5), targets], atol=1e-4)


# --- structure: the query's identifiers and the code around the target ----------------------


def test_neighbourhood_is_the_class_the_target_sits_in():
    t = task("zipfile.py:getinfo:1516")  # ZipFile.getinfo: the context stops inside class ZipFile
    chunks = split_code(t["context"], "python")
    members = [chunks[i].name for i in neighbourhood(chunks, t["query"])]
    assert members[0] == "ZipFile" and all(m == "ZipFile" or m.startswith("ZipFile.") for m in members)
    assert "ZipFile.__init__" in members and "ZipFile._RealGetContents" in members
    # a top-level target has no class: the chunks just before it are its neighbourhood
    assert neighbourhood(chunks, "def helper(x):\n    pass\n", neighbours=3) == [c.idx for c in chunks[-3:]]


def test_chunk_names_defined_and_read():
    code = "class A:\n    def f(self, x):\n        self.total = helper(x) + LIMIT\n        import os.path\n        return os.sep\n"
    method = next(c for c in split_code(code, "python") if c.name == "A.f")
    defined, read = chunk_names(method)
    assert {"f", "total", "os"} <= defined and "helper" not in defined
    assert read["helper"] == 1 and read["LIMIT"] == 1 and read["sep"] == 1
    # a language ast cannot read: its own name, and every identifier read
    defined, read = chunk_names(method, language="javascript")
    assert defined == {"f"} and "helper" in read and "def" not in read


@pytest.mark.slow
def test_structure_keeps_what_the_answer_uses_without_a_model():
    """On every stdlib task in tests/data, the structure signal alone (no
    model) keeps more of the definitions the answer uses than random whole
    functions of the same size, and at least 60 % of them over the set."""
    settings = LongCodeZipSettings(signals="structure")
    scorer = CopyScorer()
    kept = chance = needed = 0
    for line in TASKS.read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        defs, names = needed_definitions(t["context"], t["query"], t["answer"])
        result = compress_code(t["context"], 0.3, t["query"], scorer=None, count_tokens=scorer.count, settings=settings)
        assert result.compressed_tokens <= 0.3 * result.original_tokens * (1 + settings.tolerance)
        kept += len(retained(defs, names, result.text))
        chance += sum(len(retained(defs, names, random_selection(t["context"], result.compressed_tokens,
                                                                      scorer.count, seed))) for seed in range(5)) / 5
        needed += len(names)
    assert needed >= 10
    assert kept / needed >= 0.6 and kept > chance + 2, (kept, chance, needed)


def test_fuse_reorders_only_the_scored_pool():
    structure = [0.9, 0.8, 0.7, 0.1, 0.05]
    ami = {0: -1.0, 1: 5.0, 2: 0.0}  # the pool: what structure ranked first
    fused = fuse(structure, ami, 0.5)
    order = sorted(range(5), key=lambda i: -fused[i])
    assert order == [1, 0, 2, 3, 4]  # AMI lifts 1 over 0; the unscored stay behind, in structure's order
    assert sorted(range(5), key=lambda i: -fuse(structure, ami, 0.0)[i]) == [0, 1, 2, 3, 4]


def test_ami_scores_are_journaled_and_replayed():
    """A second compression with the same journal scores nothing again (and
    gives the same text); another ratio reuses the functions already scored."""
    from pipelines.llm.recording import MemoryJournal

    class CountingScorer(CopyScorer):
        passes = 0

        def token_logprobs(self, tokens, first=1):
            CountingScorer.passes += 1
            return super().token_logprobs(tokens, first)

    scorer, journal = CountingScorer(), MemoryJournal()
    code, query = demo_code(), demo_query()
    settings = LongCodeZipSettings(signals="structure+ami")
    first = compress_code(code, 0.3, query, scorer=scorer, count_tokens=scorer.count, journal=journal, run_id="r1",
                          settings=settings)
    # one pass per scored function, and one for the query alone
    assert first.stats["ami_computed"] == first.stats["ami_scored"] + 1 > 1 and first.stats["ami_cached"] == 0
    passes = CountingScorer.passes
    records = [r for r in journal.records if r.template == "longcodezip_ami"]
    assert len(records) == first.stats["ami_scored"] + 1  # + the query alone
    assert all(r.run_id == "r1" and r.status == "ok" and json.loads(r.response)["mean_nll"] > 0 for r in records)
    again = compress_code(code, 0.3, query, scorer=scorer, count_tokens=scorer.count, journal=journal, settings=settings)
    assert CountingScorer.passes == passes and again.text == first.text
    assert again.stats["ami_computed"] == 0 and again.stats["ami_cached"] == again.stats["ami_scored"] + 1
    wider = compress_code(code, 0.5, query, scorer=scorer, count_tokens=scorer.count, journal=journal, settings=settings)
    assert 0 < wider.stats["ami_computed"] < wider.stats["ami_scored"] and wider.stats["ami_cached"] > 1
    other = compress_code(code, 0.3, "def unrelated(x):\n", scorer=scorer, count_tokens=scorer.count, journal=journal,
                          settings=settings)
    assert other.stats["ami_cached"] == 0  # another query is another request


def test_query_positions_are_identifiers_the_code_uses():
    from pipelines.compress.longcodezip import AMIScorer

    scorer = CopyScorer()
    code = "def open_archive(path):\n    return Archive(path)\n"
    query = "def read_member(archive, name):\n    'Read name from an Archive opened by open_archive.'\n"
    ami = AMIScorer(scorer, LongCodeZipSettings(max_query_positions=3))
    tokens = scorer.tokenize(query)
    chosen = [scorer.pieces[tokens[j]] for j in ami._query_positions(query, tokens, code)]
    assert chosen == ["Archive", "open_archive"] or set(chosen) <= {"Archive", "open_archive", "path"}
    assert "Archive" in chosen and "read_member" not in chosen and "from" not in chosen


# --- the document-level step of a run -----------------------------------------------------


class _OneLLM:
    """What ChunkCompressor needs of a RecordingLLM: a tokenizer, a journal, a run id."""

    def __init__(self):
        from pipelines.llm.recording import MemoryJournal

        self.scorer = CopyScorer()
        self.journal = MemoryJournal()
        self.run_id = "run-1"

    def count_tokens(self, text: str) -> int:
        return self.scorer.count(text)


class _CountingExecutor:
    def __init__(self):
        self.batches = []

    def map(self, step, calls):
        self.batches.append((step.__name__, len(calls)))
        return [step(*args) for args in calls]


@pytest.mark.parametrize("scorer_model", [None, "llamacpp"])
def test_run_compresses_code_across_the_whole_file(monkeypatch, scorer_model):
    """`--compress longcodezip` in a run: one step ranks the functions of the
    whole file, and each chunk gets back what survived of its own span. With
    a scoring model its AMI joins the ranking, journaled under the run."""
    from pipelines.chunking import chunk_text
    from pipelines.compress.chunk_compression import ChunkCompressor

    llm = _OneLLM()
    monkeypatch.setattr(ChunkCompressor, "_scorer", lambda self: llm.scorer)
    code = demo_code()
    chunks = chunk_text(code, 400, llm.count_tokens)
    assert len(chunks) >= 4 and "".join(c.text for c in chunks) == code
    compressor = ChunkCompressor(llm, method="auto", ratio=0.3, kind="code", language="python", query=demo_query(),
                                 scorer_model=scorer_model)
    executor = _CountingExecutor()
    pairs = compressor.run(chunks, executor)
    assert executor.batches == [("compress_document", 1)]
    ratios = [row["compressed_tokens"] / row["original_tokens"] for _, row in pairs]
    settings = LongCodeZipSettings(signals="structure+ami" if scorer_model else "structure")
    whole = compress_code(code, 0.3, demo_query(), scorer=llm.scorer, count_tokens=llm.count_tokens, settings=settings)
    marker = re.compile(r"^[ \t]*# \.\.\.\n", re.M)  # a chunk left empty gets a placeholder of its own
    assert marker.sub("", "".join(c.text for c, _ in pairs)) == marker.sub("", whole.text)
    assert max(ratios) > 0.5 and min(ratios) < 0.15  # ranked across the file, not 0.3 of every chunk
    for chunk, (compressed, row) in zip(chunks, pairs):
        assert compressed.text.strip() and row["idx"] == chunk.idx and row["method"] == "longcodezip"
        for line in split_lines(compressed.text):
            assert line in chunk.text or line.strip() == "# ...", (chunk.idx, line)
    records = llm.journal.records
    if scorer_model:
        assert records and all(r.run_id == "run-1" and r.step == "compress:document" for r in records)
    else:
        assert records == []  # structure alone asks no model
    # prose still goes chunk by chunk
    assert ChunkCompressor(llm, method="auto", ratio=0.5, kind="book", language=None).run(
        [], executor) == [] and executor.batches[-1] == ("compress", 0)


def test_compress_model_spec(tmp_path):
    from pipelines.llm.logprobs import scorer_path

    from pipelines.llm import embedded

    assert scorer_path(None) is None
    assert scorer_path("llamacpp").name == embedded.QWEN.file_name
    assert scorer_path("llamacpp:gemma-3-270m").name == embedded.GEMMA.file_name
    model = tmp_path / "coder.gguf"
    model.write_bytes(b"GGUF")
    assert scorer_path(f"llamacpp:{model}") == model and scorer_path(str(model)) == model
    with pytest.raises(ValueError, match="local llama.cpp model"):
        scorer_path("openai:gpt-4o-mini")
    with pytest.raises(ValueError, match="model file not found"):
        scorer_path(f"llamacpp:{tmp_path / 'missing.gguf'}")


def test_cli_refuses_a_bad_compress_model(tmp_path, cli_env):
    from clitools import assert_one_line_error, run

    source = tmp_path / "m.py"
    source.write_text("def f():\n    return 1\n", encoding="utf-8")
    db = tmp_path / "x.duckdb"
    result = run([source, "--compress", "longcodezip", "--compress-model", "openai:gpt-4o", "--db", db], cli_env)
    assert_one_line_error(result, "--compress-model openai:gpt-4o", "local llama.cpp model")
    missing = tmp_path / "none.gguf"
    result = run(["compress", source, "--compress-model", f"llamacpp:{missing}", "--db", db], cli_env)
    assert_one_line_error(result, "model file not found", str(missing))


@pytest.mark.llm
def test_logprobs_at_positions_match_every_position(scorer):
    tokens = [scorer.bos_token] + scorer.tokenize(demo_code())[:120]
    every = scorer.token_logprobs(tokens, first=1)
    positions = [3, 40, 41, 90, 120]
    some = scorer.logprobs_at(tokens, positions)
    assert some.dtype.name == "float32"
    assert max(abs(float(a) - float(every[p - 1])) for a, p in zip(some, positions)) < 1e-3


@pytest.mark.llm
def test_cli_rerun_replays_the_model_scores(tmp_path, cli_env):
    """`summarize compress --compress-model llamacpp` journals the model's
    scores in llm_calls; the same command again scores nothing and prints
    the same code."""
    import subprocess

    import duckdb

    lines = demo_code().split("\n")
    end = next(i for i, line in enumerate(lines) if "def _close_tools" in line)
    source = tmp_path / "agent.py"
    source.write_text("\n".join(lines[:end]) + "\n", encoding="utf-8")
    db = tmp_path / "db.duckdb"
    outputs = []
    for attempt in range(2):
        stats = tmp_path / f"stats{attempt}.json"
        proc = subprocess.run(
            ["summarize", "compress", str(source), "--query", "def new_task(self, task, extra_args)", "--ratio", "0.3",
             "--compress-model", "llamacpp:gemma-3-270m", "--db", str(db), "--stats-json", str(stats)],
            capture_output=True, text=True, env=cli_env, timeout=900,
        )
        assert proc.returncode == 0, proc.stderr
        outputs.append((proc.stdout, json.loads(stats.read_text(encoding="utf-8"))["stats"]))
    (first, s1), (second, s2) = outputs
    assert s1["signals"] == "structure+ami" and s1["ami_computed"] == s1["ami_scored"] + 1 > 1
    assert s2["ami_computed"] == 0 and s2["ami_cached"] == s1["ami_computed"] and second == first
    with duckdb.connect(str(db), read_only=True) as con:
        (rows,) = con.execute("SELECT count(*) FROM llm_calls WHERE template = 'longcodezip_ami'").fetchone()
    assert rows == s1["ami_computed"]
