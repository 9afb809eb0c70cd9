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
    entropy_blocks,
    knapsack,
    select_by_rank,
    spike_lines,
    split_code,
    split_lines,
)

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
    result = compress_code(code, 0.3, demo_query(), scorer=scorer, count_tokens=scorer.count)
    assert [c.action for c in result.chunks] == ["pruned"]
    assert result.text.startswith("async def execute_task(self) -> AgentExecution:\n")
    assert 0.15 < result.ratio <= 0.3 * 1.03


def test_coarse_stage_ranks_selects_and_marks_dropped_code():
    scorer = CopyScorer()
    settings = LongCodeZipSettings(fine_grained=False)
    code, query = demo_code(), demo_query()
    result = compress_code(code, 0.3, query, scorer=scorer, count_tokens=scorer.count, settings=settings)
    ranked = sorted(result.chunks, key=lambda c: -c.importance if math.isfinite(c.importance) else math.inf)
    assert ranked[0].name == "BaseAgent._finalize_step"  # the query is its own signature
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
    settings = LongCodeZipSettings()
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
            assert line in body_lines or line.strip() == "# ..."
    assert result.compressed_tokens <= 0.25 * result.original_tokens * (1 + settings.tolerance)
    assert result.ratio > 0.15  # the budget is used, not wasted


# --- through llama.cpp ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def scorer():
    from pipelines.llm.logprobs import default_scorer

    return default_scorer()


@pytest.mark.llm
def test_perplexity_ranking_with_llamacpp(scorer, gemma):
    """AMI = PPL(q) - PPL(q | chunk) from the packaged model ranks the
    function the query is about above unrelated code."""
    chunks = {c.name: c for c in split_code(demo_code(), "python")}
    names = ["BaseAgent._finalize_step", "BaseAgent._update_llm_usage", "BaseAgent._close_tools",
             "BaseAgent.task_incomplete_message"]
    lcz = LongCodeZip(scorer, gemma.count_tokens)
    scores = lcz.rank([chunks[n].text for n in names], query=demo_query())
    assert all(math.isfinite(s) for s in scores)
    assert scores[0] == max(scores) and scores[0] > 0
    assert lcz.rank(["   \n"], query=demo_query()) == [float("-inf")]


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
