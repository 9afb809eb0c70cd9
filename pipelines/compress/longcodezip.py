"""LongCodeZip: query-aware, two-stage compression of long source code.

After "LongCodeZip: Compress Long Context for Code Language Models" (Shi et
al., 2025), with the packaged Gemma 3 270M (llama.cpp) as the scoring model.

**Coarse stage (functions).** The code is split into function-level chunks:
for Python with `ast` (every function, every method, each class's header
with its docstring and attributes, and runs of module-level statements), for
other languages (or Python that does not parse) at the definitions that
`pipelines.documents.code_sections` finds. Chunks are contiguous slices, so
``"".join(chunk.text) == code``. Chunks are ranked, taken by rank while they
fit the coarse budget, kept in their original order, and every run of
dropped chunks becomes one placeholder line (``# ...`` in the language's
comment syntax, at the dropped code's indentation). A kept method brings
the header line of its class (and of the classes around that), charged to
the budget (`select_with_headers`): a method is never shown as a member of
the class above it. Python that parses still parses compressed: where a
placeholder would be a block's whole body it is the statement ``...``.

Ranking signals (`LongCodeZipSettings.signals`):

* **structure** (no model): what the query and the code around the target
  say will be needed (a query in plain words is matched to the words of
  the definitions' names: `query_words`). A name weighs its reads in the target's neighbourhood
  (the other methods of the class the query's definition sits in, or the
  functions just before a top-level target), each weighted by idf, plus its
  mentions in the query (signature, docstring); a chunk scores the weights
  of the names it defines (def/class, assignments, imports, ``self.x = ...``)
  per square root of its tokens (`structure_scores`).
* **ami**: the paper's approximated mutual information with the query,

      AMI(chunk, q) = PPL(q) - PPL(q | chunk),

  how much the chunk makes the query predictable. Each function is read
  whole (up to `max_context_tokens`) before the query, and the query's
  perplexity is measured at its identifier tokens only (`AMIScorer`): a
  logits row costs several times a token of the model's body.
* **structure+ami**: the model scores the chunks structure ranks within
  `ami_pool` x the budget, and the two scaled scores are fused (what a run
  does when it is given a scoring model, `--compress-model`).

Structure is the default (see `LongCodeZipSettings.signals`, and the table
in bench/README.md, made by bench/bench_compress.py). Model scores are journaled
like LLM calls (`journal`), so a re-run scores nothing again.

**Fine stage (blocks)**, off by default (`fine_grained`): it needs a logits
row for every token of every kept function. Inside each kept function the perplexity of every
line given the lines before it is measured (one pass over the function; the
paper's entropy-based chunking), and the body is cut into blocks where
per-line perplexity spikes: a line whose perplexity is at least both of its
neighbours' and rises above one of them by more than the adaptive threshold
mean + k * std of the function's line perplexities starts a new block (the
reference implementation's rule; a block still longer than
`max_block_lines` is cut again at its strongest rise, so that the knapsack
has pieces to choose from; in Python a kept line brings the rest of its
statement and the headers of the blocks around it, `python_line_rules`).
Each block is scored like a chunk,
PPL(q) - PPL(q | block). The final token budget (what the coarse stage did
not spend on small chunks and placeholders) is shared among the kept
functions by importance (`allocate_ratios`, the paper's importance-biased
retention ratio), and each function keeps the set of blocks with the most
total importance that fits its share: an exact 0/1 knapsack over block
token counts (importances min-max scaled to (0, 1], so that a share is
spent even where some blocks' AMI is negative). The signature (decorators,
leading comments and the ``def``/``class`` header) is always kept; dropped
blocks become placeholder lines.

The budget is counted with the caller's tokenizer (the model that will read
the compressed code). Knapsacks leave part of a share unspent and
placeholders cost tokens, so after each pass the budgets are moved by the
miss and selection repeats with the cached scores (a few rounds), keeping
the result closest to the budget without exceeding it by more than
`tolerance`.

Scoring stays within memory on long files: `pipelines.llm.logprobs` asks
llama.cpp for logits only where a token is scored and reduces them to
log-probs a few rows at a time in float32; texts longer than its context are
scored in sliding windows.
"""

from __future__ import annotations

import ast
import keyword
import math
import re
import textwrap
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from pipelines.compress.common import (
    ChunkReport,
    CompressionResult,
    TokenCounter,
    allocate_ratios,
    check_ratio,
    normalise,
)

PLACEHOLDER = "..."
_HASH_COMMENT = {"python", "shell", "ruby", "r", "julia", "elixir", "perl"}
_DASH_COMMENT = {"sql", "haskell", "lua"}


class Scorer(Protocol):
    """What LongCodeZip needs from a language model (see pipelines.llm.logprobs)."""

    n_ctx: int

    def tokenize(self, text: str) -> list[int]: ...

    def token_offsets(self, tokens: Sequence[int]) -> list[int]: ...

    def token_logprobs(self, tokens: Sequence[int], first: int = 1): ...


SIGNALS = ("structure", "ami", "structure+ami")


@dataclass(frozen=True)
class LongCodeZipSettings:
    # How functions are ranked: "structure" (the query's identifiers and the
    # code around the target, no model), "ami" (the paper's perplexity drop,
    # every function through the model) or "structure+ami" (the model scores
    # the functions structure ranks within ami_pool x the budget, and both
    # ranks are fused). Structure is the default: on the stdlib tasks it
    # keeps 62 % of what the answer uses (random: 40 %) at no model cost,
    # while Gemma 270M's AMI costs more than a prompt pass over the code.
    signals: str = "structure"
    ami_weight: float = 0.5  # share of the fused score that comes from AMI
    ami_pool: float = 1.5  # structure+ami: functions up to this multiple of the coarse budget are scored
    query_weight: float = 3.0  # weight of the query's own identifiers against the neighbours' references
    neighbours: int = 5  # the target outside a class: this many chunks before it are its neighbourhood
    # Share of the coarse selection the fine stage keeps: the coarse stage
    # selects up to budget / fine_keep tokens of functions.
    fine_keep: float = 0.6
    # The fine stage needs a logits row for every token of every kept
    # function (the output head dominates a small model's cost: several
    # times a prompt pass), so whole functions are kept by default.
    fine_grained: bool = False
    importance_beta: float = 0.5  # how strongly importance skews each function's budget share
    min_lines_for_fine: int = 5  # shorter chunks are kept whole
    spike_k: float = 0.2  # adaptive threshold: mean + k * std of line perplexities
    max_block_lines: int = 6  # longer blocks are cut again at their strongest spike
    max_query_tokens: int = 128  # the query is read up to this many tokens (each scored function pays for them)
    max_query_positions: int = 8  # AMI is measured at this many of the query's identifier tokens
    max_context_tokens: int = 2048  # a function conditions the query with at most its last N tokens
    max_module_lines: int = 30  # module-level statements are grouped into chunks of at most this many lines
    tolerance: float = 0.03  # accepted overshoot of the budget before tightening
    max_rounds: int = 4

    def __post_init__(self):
        if self.signals not in SIGNALS:
            raise ValueError(f"unknown LongCodeZip signals {self.signals!r}; choose one of {', '.join(SIGNALS)}")


@dataclass(frozen=True)
class CodeChunk:
    idx: int
    start: int  # character offsets into the code
    end: int
    text: str
    kind: str  # function | method | class | module | tail | code
    name: str | None = None
    signature_lines: int = 0  # leading lines always kept by the fine stage
    owner: str | None = None  # the class (qualified name) the chunk sits in, None at module level

    @property
    def lines(self) -> list[str]:
        return split_lines(self.text)


def split_lines(text: str) -> list[str]:
    """Lines with their newline; ''.join() gives text back (only \\n ends a line)."""
    return re.findall(r"[^\n]*\n|[^\n]+$", text)


def comment_marker(language: str | None) -> str:
    language = (language or "python").lower()
    if language in _HASH_COMMENT:
        return "#"
    if language in _DASH_COMMENT:
        return "--"
    return "//"


def indentation(text: str) -> str:
    for line in split_lines(text):
        if line.strip():
            return line[: len(line) - len(line.lstrip(" \t"))]
    return ""


def placeholder_line(indent: str, language: str | None, statement: bool = False) -> str:
    """The line that stands for dropped code: a comment, or in Python, where
    it is all a block's body would hold (`statement`), the statement ``...``
    (a comment alone is no body: the code would not parse)."""
    if statement and (language or "python").lower() == "python":
        return f"{indent}{PLACEHOLDER}\n"
    return f"{indent}{comment_marker(language)} {PLACEHOLDER}\n"


@dataclass
class _LineRules:
    """What keeping a line of a Python function brings with it (line indices of the chunk)."""

    statement: dict[int, tuple[int, int]]  # a line of a simple statement -> all its lines [a, b)
    needs: list[tuple[int, int, list[int]]]  # (a, b, header lines): a kept line in [a, b) keeps these

    def close(self, keep: set[int]) -> set[int]:
        keep = set(keep)
        for _ in range(4):  # headers of nested statements: a few passes reach the fixpoint
            before = len(keep)
            for line in list(keep):
                if line in self.statement:
                    keep.update(range(*self.statement[line]))
            for a, b, header in self.needs:
                if any(a <= line < b for line in keep):
                    keep.update(header)
            if len(keep) == before:
                break
        return keep


def python_line_rules(chunk: CodeChunk) -> "_LineRules | None":
    """The syntax a Python function's kept lines need (None when it does not
    parse alone): a statement is kept whole (never half a call, half a
    string), and a kept line keeps the header of every compound statement
    around it (``for ...:``, ``if ...:``, ``try:`` with its first
    ``except ...:`` or its ``finally:``, and the ``else:``/``finally:`` of
    the clause it sits in). A body left empty gets
    the statement placeholder (`_join_blocks`)."""
    try:
        tree = ast.parse(dedent_code(chunk.text))
    except (SyntaxError, ValueError, RecursionError):
        return None
    lines = chunk.lines
    statement: dict[int, tuple[int, int]] = {}
    needs: list[tuple[int, int, list[int]]] = []

    def first(node) -> int:
        decorators = getattr(node, "decorator_list", [])
        line = getattr(node, "lineno", None) or node.pattern.lineno  # match_case has no lineno
        return min([line] + [d.lineno for d in decorators]) - 1

    def last(nodes) -> int:
        return max(n.end_lineno for n in nodes)

    def code_lines(a: int, b: int) -> list[int]:
        return [i for i in range(a, b) if lines[i].strip() and not lines[i].lstrip().startswith("#")]

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(node, (ast.stmt, ast.excepthandler, ast.match_case)) or isinstance(node, ast.Module):
            continue
        a = first(node)
        end = getattr(node, "end_lineno", None) or last(body)
        if not isinstance(body, list) or not body:
            for i in range(a, end):
                statement[i] = (a, end)
            continue
        header = list(range(a, first(body[0])))  # the header, decorators and all
        handlers = getattr(node, "handlers", None)
        if handlers:  # `try:` needs a clause: its first `except ...:`
            header += range(first(handlers[0]), first(handlers[0].body[0]))
        elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))) and node.finalbody:
            header += code_lines(last(node.orelse or body), first(node.finalbody[0]))
        needs.append((a, end, header))
        previous = last(body)
        for clause in ("handlers", "orelse", "finalbody"):
            part = getattr(node, clause, None) or []
            if not part:
                continue
            if clause != "handlers":  # `else:` / `finally:`: the code line between the parts
                needs.append((first(part[0]), last(part), code_lines(previous, first(part[0]))))
            previous = last(part)
    return _LineRules(statement, needs)


def dedent_code(text: str) -> str:
    """Python code of one chunk moved to column 0, line for line: a method
    chunk may end with comments at column 0 (a banner before the next
    class), which `textwrap.dedent` would let block it; comment lines
    shallower than the code become blank."""
    indent = next((line[: len(line) - len(line.lstrip(" \t"))] for line in split_lines(text)
                   if line.strip() and not line.lstrip().startswith("#")), "")
    out = []
    for line in split_lines(text):
        if line.startswith(indent):
            out.append(line[len(indent):])
        elif not line.strip() or line.lstrip().startswith("#"):
            out.append("\n" if line.endswith("\n") else "")
        else:
            out.append(line)  # a continuation line of a string or bracket: left as it is
    return "".join(out)


def _opens_block(text: str) -> bool:
    """Whether the last code line of text ends with a colon (a block's header)."""
    for line in reversed(split_lines(text)):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return _without_comment(stripped).rstrip().endswith(":")
    return False


def _without_comment(line: str) -> str:
    """A line of Python up to its comment (a ``#`` outside quotes)."""
    quote, escaped = None, False
    for i, ch in enumerate(line):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#":
            return line[:i]
    return line


def _parses_like(original: str, compressed: str, language: str | None) -> bool:
    """False only for Python whose original parses (dedented) and whose compressed text does not."""
    if (language or "python").lower() != "python":
        return True
    try:
        ast.parse(dedent_code(original))
    except (SyntaxError, ValueError, RecursionError):
        return True
    try:
        ast.parse(dedent_code(compressed))
    except (SyntaxError, ValueError, RecursionError):
        return False
    return True


def _opens_body(chunk: CodeChunk) -> bool:
    """A class chunk that is its header alone: its body is its members."""
    return chunk.kind == "class" and bool(chunk.name) and not any(
        line.strip() and not line.lstrip().startswith("#") for line in chunk.lines[chunk.signature_lines:])


# --- coarse stage: function-level chunks ------------------------------------


@dataclass
class _Unit:
    line: int  # 0-based first line
    kind: str
    name: str | None
    header_end: int | None = None  # 0-based line after the def/class header
    owner: str | None = None  # qualified name of the enclosing class


def split_code(code: str, language: str | None = "python", max_module_lines: int = 30) -> list[CodeChunk]:
    """Function-level chunks of code, contiguous and lossless."""
    if not code:
        return []
    lines = split_lines(code)
    units = None
    if (language or "python").lower() == "python":
        units = _python_units(lines, max_module_lines)
    if units is None:
        units = _pattern_units(code, lines, language)
    return _chunks_from_units(code, lines, units)


def parse_longest_prefix(lines: list[str]) -> tuple[ast.Module | None, int]:
    """Parse the longest prefix that parses (a context often ends mid-definition)."""
    n = len(lines)
    for _ in range(40):
        if n <= 0:
            return None, 0
        try:
            return ast.parse("".join(lines[:n])), n
        except SyntaxError as exc:
            bad = exc.lineno or n
            n = min(n - 1, bad - 1) if bad - 1 >= 1 else n - 1
        except (ValueError, RecursionError):
            return None, 0
    return None, 0


def _first_line(node: ast.stmt) -> int:
    decorators = getattr(node, "decorator_list", [])
    return min([node.lineno] + [d.lineno for d in decorators]) - 1


def _header_end(node: ast.stmt) -> int:
    body = getattr(node, "body", None)
    if body and body[0].lineno > node.lineno:
        return body[0].lineno - 1
    return node.end_lineno or node.lineno


def _python_units(lines: list[str], max_module_lines: int) -> list[_Unit] | None:
    tree, parsed = parse_longest_prefix(lines)
    if tree is None:
        return None
    units: list[_Unit] = []
    defs = (ast.FunctionDef, ast.AsyncFunctionDef)

    def visit(stmts: list[ast.stmt], prefix: str, in_class: bool) -> None:
        after_def = not in_class  # module: the first statements open a group
        group_start = None
        owner = prefix[:-1] or None
        for st in stmts:
            if isinstance(st, defs):
                units.append(_Unit(_first_line(st), "method" if in_class else "function", prefix + st.name,
                                   _header_end(st), owner))
                after_def, group_start = True, None
            elif isinstance(st, ast.ClassDef):
                units.append(_Unit(_first_line(st), "class", prefix + st.name, _header_end(st), owner))
                visit(st.body, prefix + st.name + ".", True)
                after_def, group_start = True, None
            else:
                start = _first_line(st)
                if after_def or (group_start is not None and start - group_start >= max_module_lines):
                    units.append(_Unit(start, "class" if in_class else "module", None, owner=owner))
                    group_start = start
                elif group_start is None:
                    group_start = start
                after_def = False

    visit(tree.body, "", False)
    if parsed < len(lines):
        units.append(_Unit(parsed, "tail", None))
    # Comment lines directly above a definition belong to it.
    for i, unit in enumerate(units):
        floor = units[i - 1].line + 1 if i else 0
        line = unit.line
        while line - 1 >= floor and lines[line - 1].lstrip().startswith("#"):
            line -= 1
        if unit.header_end is not None:
            unit.header_end = max(unit.header_end, line)
        unit.line = line
    return units


_SIGNATURE_END = re.compile(r"[{:;]\s*(//.*|#.*)?$|\)\s*(->\s*[^{]*)?$")


def _pattern_units(code: str, lines: list[str], language: str | None) -> list[_Unit]:
    from pipelines.documents import code_sections

    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    units = []
    for section in code_sections(code, language):
        line = _line_of(starts, section.start)
        header_end = line + 1
        for j in range(line, min(len(lines), line + 6)):
            if _SIGNATURE_END.search(lines[j].rstrip()):
                header_end = j + 1
                break
        units.append(_Unit(line, section.kind, section.title, header_end))
    return units


def _line_of(starts: list[int], offset: int) -> int:
    import bisect

    return max(0, bisect.bisect_right(starts, offset) - 1)


def _chunks_from_units(code: str, lines: list[str], units: list[_Unit]) -> list[CodeChunk]:
    by_line: dict[int, _Unit] = {}
    for unit in units:
        by_line.setdefault(unit.line, unit)
    boundaries = sorted({0, *[u.line for u in units if 0 < u.line < len(lines)]})
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    chunks = []
    for i, first in enumerate(boundaries):
        last = boundaries[i + 1] if i + 1 < len(boundaries) else len(lines)
        unit = by_line.get(first)
        if unit is None:  # text before the first definition
            kind, name, signature, owner = ("module" if units else "code"), None, 0, None
        else:
            kind, name, owner = unit.kind, unit.name, unit.owner
            signature = 0 if unit.header_end is None else max(0, min(last, unit.header_end) - first)
        start, end = offsets[first], offsets[last]
        chunks.append(CodeChunk(len(chunks), start, end, code[start:end], kind, name, signature, owner))
    return chunks


def class_headers(chunks: Sequence[CodeChunk]) -> list[list[int]]:
    """For each chunk, the header chunks of the classes it sits in, outermost
    first: a kept method is shown under its own class, so these come with it."""
    latest: dict[str, int] = {}  # class name -> its latest header chunk (a name may be defined twice)
    out = []
    for chunk in chunks:
        chain, owner = [], chunk.owner
        while owner:
            if owner in latest:
                chain.append(latest[owner])
            owner = owner.rpartition(".")[0]
        out.append(chain[::-1])
        if chunk.kind == "class" and chunk.name:
            latest[chunk.name] = chunk.idx
    return out


def header_text(chunk: CodeChunk) -> str:
    """A class chunk's header: decorators, comments and the ``class`` line(s)."""
    return "".join(chunk.lines[: chunk.signature_lines])


def select_by_rank(sizes: Sequence[int], scores: Sequence[float], budget: float, at_least_one: bool = False) -> list[int]:
    """Indices taken in descending score while they fit the budget, in original order.

    With `at_least_one`, the top-ranked chunk is taken even when it alone
    exceeds the budget (the fine stage will cut it down)."""
    order = sorted(range(len(sizes)), key=lambda i: (-_finite(scores[i]), i))
    chosen, used = [], 0
    for i in order:
        if used + sizes[i] <= budget or (at_least_one and not chosen and budget > 0):
            chosen.append(i)
            used += sizes[i]
    return sorted(chosen)


def select_with_headers(sizes: Sequence[int], scores: Sequence[float], budget: float, headers: Sequence[Sequence[int]],
                        header_sizes: Sequence[int], at_least_one: bool = False) -> tuple[list[int], list[int]]:
    """`select_by_rank` where a chunk brings the headers of the classes it sits
    in (`class_headers`): taking it costs its tokens and those of the headers
    not yet kept (`header_sizes`: a header line and the placeholder for the
    rest of its chunk). Returns the chunks kept whole and the class chunks
    kept as their header only, each in original order."""
    order = sorted(range(len(sizes)), key=lambda i: (-_finite(scores[i]), i))
    whole: set[int] = set()
    heads: set[int] = set()
    used = 0.0
    for i in order:
        missing = [a for a in headers[i] if a not in whole and a not in heads]
        cost = sizes[i] - (header_sizes[i] if i in heads else 0) + sum(header_sizes[a] for a in missing)
        if used + cost <= budget or (at_least_one and not whole and budget > 0):
            whole.add(i)
            heads.discard(i)
            heads.update(missing)
            used += cost
    return sorted(whole), sorted(heads)


def _finite(x: float) -> float:
    return x if math.isfinite(x) else -1e30


# --- structure: the query's identifiers and the code around the target --------

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Words that name nothing in a program (and Python's keywords); docstrings are prose.
_STOPWORDS = frozenset(keyword.kwlist) | {
    "self", "cls", "the", "a", "an", "of", "to", "is", "and", "or", "in", "for", "this", "that", "be", "it", "if",
    "with", "as", "by", "on", "not", "are", "from", "return", "returns", "true", "false", "none",
}


def identifiers(text: str) -> list[str]:
    return [w for w in _IDENTIFIER.findall(text) if len(w) > 1 and w not in _STOPWORDS]


def chunk_names(chunk: CodeChunk, language: str | None = "python") -> tuple[set[str], dict[str, int]]:
    """The names a chunk defines (its def/class, assignments, imports, `self.x = ...`)
    and the names it reads, with counts. Python by `ast`; other languages
    (or a chunk that does not parse alone) define their own name and read
    every identifier."""
    defined: set[str] = {chunk.name.rsplit(".", 1)[-1]} if chunk.name else set()
    read: dict[str, int] = {}
    tree = None
    if (language or "python").lower() == "python":
        try:
            tree = ast.parse(textwrap.dedent(chunk.text))
        except (SyntaxError, ValueError, RecursionError):
            tree = None
    if tree is None:
        for word in identifiers(chunk.text):
            if word not in defined:
                read[word] = read.get(word, 0) + 1
        return defined, read
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defined.add(node.name)
        elif isinstance(node, ast.Name):
            if isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            else:
                read[node.id] = read.get(node.id, 0) + 1
        elif isinstance(node, ast.Attribute):
            if isinstance(node.ctx, ast.Store):
                if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                    defined.add(node.attr)
            else:
                read[node.attr] = read.get(node.attr, 0) + 1
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                defined.add((alias.asname or alias.name).split(".")[0])
    return defined, read


def neighbourhood(chunks: Sequence[CodeChunk], query: str, neighbours: int = 5) -> list[int]:
    """The chunks around the target: the code continues with the query's
    definition, so when the query is indented it sits in the class the last
    method or class chunk belongs to, and that class is its neighbourhood;
    otherwise the last `neighbours` chunks are."""
    if not chunks:
        return []
    first_line = next((line for line in query.splitlines() if line.strip()), "")
    if first_line[:1].isspace():
        for chunk in reversed(chunks):
            if chunk.name and chunk.kind in ("method", "class"):
                owner = chunk.name if chunk.kind == "class" else chunk.name.rsplit(".", 1)[0]
                members = [c.idx for c in chunks if c.name and (c.name == owner or c.name.startswith(owner + "."))]
                if members:
                    return members
                break
    return [c.idx for c in chunks[-neighbours:]]


def structure_scores(chunks: Sequence[CodeChunk], sizes: Sequence[int], query: str,
                     language: str | None = "python", query_weight: float = 3.0, neighbours: int = 5,
                     targeted: bool = True) -> list[float]:
    """How much each chunk defines of what the target will use, per sqrt token.

    A name weighs what the query and the target's neighbourhood say of it:
    each read of it in the neighbourhood (its class's other methods, or the
    functions just before it) adds its idf, log(chunks / chunks reading it),
    so that names every function reads count little; each mention in the
    query (signature, docstring) adds `query_weight` x its idf. A chunk
    scores the weights of the names it defines, divided by the square root
    of its tokens: small definitions of needed names (constants, helpers)
    are cheap to keep, and a long function must define more to earn its room.

    Without a target (`targeted=False`: a whole module summarized with the
    generic query) every chunk is the neighbourhood: what the file itself
    uses most (idf-weighted) is kept. A query that opens no definition (a
    question in words, "How are subparsers added?") has no place in the
    code either: every chunk is its neighbourhood at `neighbours` / chunks
    of the weight (what the file uses breaks ties), and the words of the
    query, matched to the words of each definition's name (`query_words`),
    decide."""
    names = [chunk_names(c, language) for c in chunks]
    n = len(chunks)
    readers: dict[str, int] = {}
    for _, read in names:
        for name in read:
            readers[name] = readers.get(name, 0) + 1
    weight: dict[str, float] = {}
    completion = targeted and opens_definition(query)
    around = neighbourhood(chunks, query, neighbours) if completion else range(n)
    share = neighbours / max(1, n) if targeted and not completion else 1.0
    for i in around:
        for name in names[i][1]:
            weight[name] = weight.get(name, 0.0) + share * math.log(n / readers[name])
    for name in identifiers(query):
        weight[name] = weight.get(name, 0.0) + query_weight * math.log(max(1.0, n / readers.get(name, 1)))
    words = query_words(chunks, query, query_weight)
    scores = [(sum(weight.get(name, 0.0) for name in defined) + words[i]) / math.sqrt(max(1, size))
              for i, ((defined, _), size) in enumerate(zip(names, sizes))]
    # The definition the query is about, where the code holds it (a question
    # about a function rather than the completion of a missing one), comes first.
    subjects = set(re.findall(r"(?:def|class)\s+([A-Za-z_]\w*)", query))
    members = neighbourhood(chunks, query, neighbours) if completion else []
    top = max(scores, default=0.0) + 1.0
    for i in members:
        if chunks[i].name and chunks[i].name.rsplit(".", 1)[-1] in subjects:
            scores[i] = top
    return scores


_DEFINITION = re.compile(r"^[ \t]*(?:@|(?:async[ \t]+)?def[ \t]|class[ \t])", re.M)


def opens_definition(query: str) -> bool:
    """Whether the query holds a def/class line or decorator: the code to
    complete (its neighbourhood is where it goes), not a question in words."""
    return bool(_DEFINITION.search(query))


def query_words(chunks: Sequence[CodeChunk], query: str, query_weight: float = 3.0) -> list[float]:
    """What a query says in words of each chunk's own name.

    A plain-English question ("How are subparsers added?") names no
    identifier; its words are matched to the words of each definition's
    name (split at ``_`` and case changes, stemmed: ``add_subparsers`` and
    ``_SubParsersAction.add_parser`` answer it; a stem of four letters or
    more also matches the start or end of a word: ``getboolean``). A chunk earns, for each
    stem its name shares with the query, `query_weight` x the stem's idf
    over the chunks' names, divided by the number of words in its name
    (``add_subparsers`` matches fully, ``add_argument_group`` a third); a
    stem only its class's name shares counts half (``add_parser`` of
    ``_SubParsersAction``)."""
    from collections import Counter

    from pipelines.compress.keywords import name_parts, name_stems, query_stems

    asked = query_stems(query, _STOPWORDS)
    n = len(chunks)
    if not asked or not n:
        return [0.0] * n
    def shared(name: str) -> set[str]:
        stems = name_stems(name)
        return {q for q in asked if q in stems or (len(q) >= 4 and any(s.startswith(q) or s.endswith(q) for s in stems))}

    own = [shared(c.name.rsplit(".", 1)[-1]) if c.name else set() for c in chunks]
    owner = [shared(c.owner.rsplit(".", 1)[-1]) - hits if c.owner else set() for c, hits in zip(chunks, own)]
    holders = Counter(stem for hits in own + owner for stem in hits)
    out = []
    for chunk, hits, inherited in zip(chunks, own, owner):
        if not hits and not inherited:
            out.append(0.0)
            continue
        parts = max(1, len(name_parts(chunk.name.rsplit(".", 1)[-1]))) if chunk.name else 1
        value = sum(math.log(1 + n / holders[s]) for s in hits) + 0.5 * sum(math.log(1 + n / holders[s]) for s in inherited)
        out.append(query_weight * value / parts)
    return out


def fuse(structure: Sequence[float], ami: dict[int, float], weight: float) -> list[float]:
    """One ranking from both signals: the AMI-scored chunks first, ordered by
    (1 - weight) x their min-max scaled structure score + weight x their scaled
    AMI, then the others by structure."""
    scored = sorted(ami)
    s_norm = dict(zip(scored, normalise([structure[i] for i in scored])))
    a_norm = dict(zip(scored, normalise([ami[i] for i in scored])))
    rest = normalise(list(structure))
    return [1.0 + (1 - weight) * s_norm[i] + weight * a_norm[i] if i in ami else rest[i] - 1.0
            for i in range(len(structure))]


# --- AMI: the query's perplexity with and without each function --------------


class AMIScorer:
    """PPL(q) - PPL(q | function) for many functions, one model pass each.

    Each function is read whole (its last `max_context_tokens`), followed by
    the whole query (up to `max_query_tokens`); logits rows are computed only
    at up to `max_query_positions` of the query's tokens, those inside
    identifiers the code also uses (where a definition can make the query
    predictable), because each row costs several times a token of the model's
    body. Mean NLLs are journaled like LLM calls (`journal`: a
    `pipelines.llm.recording.CallJournal`; one row per function, keyed by the
    model file, the settings, the query and the function's text), so a
    re-run, or another ratio, scores nothing again."""

    VERSION = 2  # part of the cache key: bump when what is measured changes

    def __init__(self, scorer: Scorer, settings: LongCodeZipSettings, journal=None, run_id: str | None = None,
                 step: str = "compress:longcodezip"):
        self.scorer = scorer
        self.settings = settings
        self.journal = journal
        self.run_id = run_id
        self.step = step
        self.hits = 0
        self.misses = 0

    def identity(self) -> dict:
        s = self.settings
        fingerprint = None
        path = getattr(self.scorer, "path", None)
        if path is not None:
            try:
                stat = path.stat()
                fingerprint = f"{path.name}:{stat.st_size}"
            except OSError:
                fingerprint = str(path)
        return {"backend": "llamacpp-logprobs", "model": getattr(self.scorer, "model", type(self.scorer).__name__),
                "file": fingerprint, "n_ctx": getattr(self.scorer, "n_ctx", None), "version": self.VERSION,
                "max_query_tokens": s.max_query_tokens, "max_query_positions": s.max_query_positions,
                "max_context_tokens": s.max_context_tokens}

    def score(self, texts: dict[int, str], query: str, code: str) -> dict[int, float]:
        s = self.settings
        query_tokens = self.scorer.tokenize(query)[: s.max_query_tokens]
        positions = self._query_positions(query, query_tokens, code)
        identity = self.identity()
        base = self._cached_nll(identity, query_tokens, positions, "")
        out = {}
        for i, text in texts.items():
            if not text.strip():
                out[i] = float("-inf")
                continue
            nll = self._cached_nll(identity, query_tokens, positions, text.rstrip("\n") + "\n\n")
            out[i] = math.exp(base) - math.exp(nll) if math.isfinite(nll) and math.isfinite(base) else float("-inf")
        return out

    def _query_positions(self, query: str, query_tokens: list[int], code: str) -> list[int]:
        """Indices of the query tokens to score (see the class doc)."""
        if not query_tokens:
            return []
        vocabulary = set(_IDENTIFIER.findall(code))
        raw = query.encode("utf-8")
        spans = [(len(query[: m.start()].encode("utf-8")), len(query[: m.end()].encode("utf-8")))
                 for m in _IDENTIFIER.finditer(query) if m.group() in vocabulary and m.group() not in _STOPWORDS]
        offsets = self.scorer.token_offsets(query_tokens)
        chosen = []
        k = 0
        for j, offset in enumerate(offsets):
            while k < len(spans) and spans[k][1] <= offset:
                k += 1
            if k < len(spans) and spans[k][0] <= offset < spans[k][1] and offset < len(raw):
                chosen.append(j)
        if not chosen:
            chosen = list(range(len(query_tokens)))
        limit = self.settings.max_query_positions
        if len(chosen) > limit:  # spread over the whole query rather than its start
            chosen = [chosen[round(t * (len(chosen) - 1) / (limit - 1))] for t in range(limit)] if limit > 1 else chosen[:1]
        return sorted(set(chosen))

    def _cached_nll(self, identity: dict, query_tokens: list[int], positions: list[int], context: str) -> float:
        import hashlib
        import json

        request = json.dumps({"query_tokens": query_tokens, "positions": positions,
                              "context_sha256": hashlib.sha256(context.encode("utf-8")).hexdigest()}, sort_keys=True)
        key = hashlib.sha256(json.dumps({"model": identity, "template": "longcodezip_ami", "request": request},
                                        sort_keys=True).encode("utf-8")).hexdigest()
        if self.journal is not None:
            hit = self.journal.lookup(key)
            if hit is not None:
                self.hits += 1
                return float(json.loads(hit.response)["mean_nll"])
        self.misses += 1
        started = time.perf_counter()
        nll, evaluated = self._nll(query_tokens, positions, context)
        if self.journal is not None:
            self._record(key, identity, request, nll, evaluated, time.perf_counter() - started)
        return nll

    def _nll(self, query_tokens: list[int], positions: list[int], context: str) -> tuple[float, int]:
        s = self.settings
        context_tokens = self.scorer.tokenize(context) if context else []
        room = min(s.max_context_tokens, self.scorer.n_ctx - 2 - len(query_tokens))
        context_tokens = context_tokens[max(0, len(context_tokens) - max(0, room)):] if room > 0 else []
        bos = getattr(self.scorer, "bos_token", None)
        head = ([bos] if bos is not None else []) + context_tokens
        tokens = head + list(query_tokens)
        wanted = [len(head) + j for j in positions if len(head) + j >= 1]
        if not wanted:
            return float("nan"), 0
        if hasattr(self.scorer, "logprobs_at"):
            logprobs = self.scorer.logprobs_at(tokens, wanted)
        else:  # a scorer without position selection: score everything, keep the positions
            import numpy as np

            every = np.asarray(self.scorer.token_logprobs(tokens, first=wanted[0]), dtype=np.float64)
            logprobs = every[[p - wanted[0] for p in wanted]]
        return -float(sum(float(x) for x in logprobs)) / len(logprobs), len(tokens)

    def _record(self, key: str, identity: dict, request: str, nll: float, evaluated: int, seconds: float) -> None:
        import json

        from pipelines.llm.recording import CallRecord, new_id

        self.journal.record(CallRecord(
            call_id=new_id(), run_id=self.run_id, request_hash=key, backend=identity["backend"],
            model=identity["model"], template="longcodezip_ami", template_hash=f"v{self.VERSION}", step=self.step,
            request=request, response=json.dumps({"mean_nll": nll}), finish_reason="scored",
            input_tokens=evaluated, cached_input_tokens=0, output_tokens=0, latency_s=seconds, cost_usd=0.0,
            cached=False, status="ok", error=None, created_at=time.time(),
        ))


# --- fine stage: entropy blocks and knapsack ---------------------------------


def line_perplexities(scorer: Scorer, text: str) -> list[float]:
    """log2 perplexity of each line given the lines before it (NaN for blank lines)."""
    import bisect

    import numpy as np

    lines = split_lines(text)
    tokens = scorer.tokenize(text)
    if not tokens:
        return [float("nan")] * len(lines)
    bos = getattr(scorer, "bos_token", None)
    head = [bos] if bos is not None else []
    logprobs = np.asarray(scorer.token_logprobs(head + tokens, first=len(head)) if head else
                          scorer.token_logprobs(tokens, first=1), dtype=np.float64)
    offsets = scorer.token_offsets(tokens)
    if not head:
        offsets = offsets[1:]  # the first token has no prediction
    line_starts, pos = [], 0
    for line in lines:
        line_starts.append(pos)
        pos += len(line.encode("utf-8"))
    sums = [0.0] * len(lines)
    counts = [0] * len(lines)
    for offset, lp in zip(offsets, logprobs):
        j = max(0, bisect.bisect_right(line_starts, offset) - 1)
        sums[j] -= lp
        counts[j] += 1
    return [
        (sums[j] / counts[j]) / math.log(2) if counts[j] and lines[j].strip() else float("nan")
        for j in range(len(lines))
    ]


def spike_lines(values: Sequence[float], k: float = 0.2) -> list[int]:
    """Indices of lines whose perplexity spikes (see module doc); NaN lines are skipped."""
    import numpy as np

    present = [i for i, v in enumerate(values) if math.isfinite(v)]
    if len(present) < 3:
        return []
    series = np.array([values[i] for i in present], dtype=np.float64)
    threshold = float(series.mean() + k * series.std())
    spikes = []
    for j in range(1, len(series) - 1):
        left, right = series[j] - series[j - 1], series[j] - series[j + 1]
        if left >= 0 and right >= 0 and (left >= threshold or right >= threshold):
            spikes.append(present[j])
    return spikes


def entropy_blocks(lines: Sequence[str], values: Sequence[float], first: int, k: float = 0.2,
                   max_lines: int | None = None) -> list[tuple[int, int]]:
    """Blocks [start, end) of line indices in [first, len(lines)), a new block
    starting at each perplexity spike; blank lines stay with the block above.

    With `max_lines`, a block with more non-blank lines than that is cut again
    at its strongest spike (the line rising most above the line before it),
    until every block fits, so that the knapsack has pieces to choose from."""
    if first >= len(lines):
        return []
    spikes = set(spike_lines([values[i] if i >= first else float("nan") for i in range(len(values))], k))
    blocks, start = [], first
    for i in range(first + 1, len(lines)):
        if i in spikes and any(lines[j].strip() for j in range(start, i)):
            blocks.append((start, i))
            start = i
    blocks.append((start, len(lines)))
    if max_lines:
        blocks = [piece for block in blocks for piece in _cut_block(block, lines, values, max_lines)]
    return blocks


def _cut_block(block: tuple[int, int], lines: Sequence[str], values: Sequence[float], max_lines: int) -> list[tuple[int, int]]:
    start, end = block
    content = [i for i in range(start, end) if lines[i].strip()]
    if len(content) <= max_lines:
        return [block]
    best, best_rise = None, -math.inf
    for before, here in zip(content, content[1:]):
        rise = values[here] - values[before] if math.isfinite(values[here]) and math.isfinite(values[before]) else -1e9
        if rise > best_rise:
            best, best_rise = here, rise
    if best is None or best_rise == -1e9:
        best = content[len(content) // 2]
    return _cut_block((start, best), lines, values, max_lines) + _cut_block((best, end), lines, values, max_lines)


def knapsack(weights: Sequence[int], values: Sequence[float], capacity: int) -> list[int]:
    """Exact 0/1 knapsack: the indices with the most total value within capacity."""
    import numpy as np

    capacity = int(capacity)
    n = len(weights)
    if n == 0 or capacity <= 0:
        return []
    best = np.zeros(capacity + 1, dtype=np.float64)
    take = np.zeros((n, capacity + 1), dtype=bool)
    for i, (w, v) in enumerate(zip(weights, values)):
        w = int(w)
        if not math.isfinite(v) or v <= 0 or w > capacity:
            continue
        candidate = np.full(capacity + 1, -np.inf)
        candidate[w:] = best[: capacity + 1 - w] + v
        better = candidate > best
        take[i] = better
        best = np.where(better, candidate, best)
    chosen, room = [], capacity
    for i in range(n - 1, -1, -1):
        if take[i, room]:
            chosen.append(i)
            room -= int(weights[i])
    return sorted(chosen)


# --- the compressor ------------------------------------------------------------


@dataclass
class _FunctionAnalysis:
    blocks: list[tuple[int, int]]
    block_scores: list[float]
    block_tokens: list[int]
    signature_tokens: int
    line_values: list[float] = field(default_factory=list)


class LongCodeZip:
    def __init__(self, scorer: Scorer | None, count_tokens: TokenCounter, settings: LongCodeZipSettings | None = None,
                 language: str | None = "python", *, journal=None, run_id: str | None = None,
                 step: str = "compress:longcodezip"):
        self.scorer = scorer
        self.count_tokens = count_tokens
        self.settings = settings or LongCodeZipSettings()
        self.language = language
        self.journal = journal
        self.run_id = run_id
        self.step = step
        self._analysis: dict[int, _FunctionAnalysis] = {}
        self._query = ""
        self._code = ""
        self._ami_scorer: AMIScorer | None = None

    def _ami(self) -> AMIScorer:
        if self.scorer is None:
            raise ValueError(f"LongCodeZip signals {self.settings.signals!r} need a scorer (a llama.cpp model)")
        if self._ami_scorer is None:
            self._ami_scorer = AMIScorer(self.scorer, self.settings, self.journal, self.run_id, self.step)
        return self._ami_scorer

    def compress(self, code: str, query: str, ratio: float) -> CompressionResult:
        started = time.perf_counter()
        ratio = check_ratio(ratio)
        s = self.settings
        stats_before = _scorer_stats(self.scorer)
        self._targeted = bool(query.strip())
        query = query.strip("\n") or default_query()
        chunks = split_code(code, self.language, s.max_module_lines)
        sizes = [self.count_tokens(c.text) for c in chunks]
        total = self.count_tokens(code)
        budget = ratio * total
        if total <= budget or not chunks:
            reports = [self._report(c, sizes[i], sizes[i], 1.0, float("nan"), "kept", c.text) for i, c in enumerate(chunks)]
            result = self._result(code, total, total, ratio, reports, started, stats_before, {"budget": budget})
            result.layout = [(c.start, c.end, c.text, True) for c in chunks]
            return result

        self._query, self._code = query, code
        self._analysis = {}
        coarse_budget = min(total, budget / s.fine_keep) if s.fine_grained else budget
        scores, signal_stats = self._rank_chunks(chunks, sizes, query, code, coarse_budget)

        # Select, compress, measure; move the coarse budget by the miss and
        # repeat (scores are cached), keeping the closest result within budget.
        # A kept method is shown under its own class: the class headers it
        # sits in come with it, and count against the budget.
        headers = class_headers(chunks)
        header_sizes = [self._header_cost(c) if c.kind == "class" else 0 for c in chunks]
        best = None
        for round_ in range(s.max_rounds):
            selected, heads = select_with_headers(sizes, scores, coarse_budget, headers, header_sizes,
                                                  at_least_one=s.fine_grained)
            text, reports, layout = self._assemble(chunks, sizes, scores, selected, heads, budget)
            n = self.count_tokens(text)
            fits = n <= budget * (1 + s.tolerance)
            if best is None or (fits and (not best[0] or n > best[1])) or (not fits and not best[0] and n < best[1]):
                best = (fits, n, text, reports, layout, selected, heads, coarse_budget)
            if fits and n >= budget * (1 - s.tolerance):
                break
            step = (budget - n) / (s.fine_keep if s.fine_grained and not fits else 1.0)
            coarse_budget = max(0.0, min(total, coarse_budget + step))
        _, n, text, reports, layout, selected, heads, coarse_budget = best
        stats = {"budget": round(budget, 1), "coarse_budget": round(coarse_budget, 1), "rounds": round_ + 1,
                 "selected": len(selected), "headers": len(heads), "chunks": len(chunks), "signals": s.signals,
                 **signal_stats}
        result = self._result(text, total, n, ratio, reports, started, stats_before, stats)
        result.layout = layout
        return result

    def _header_cost(self, chunk: CodeChunk) -> int:
        """Tokens of a class chunk kept as its header alone (the rest one placeholder)."""
        head = header_text(chunk)
        rest = chunk.text[len(head):]
        marker = placeholder_line(indentation(rest), self.language, True) if rest.strip() else ""
        return self.count_tokens(head + marker)

    # -- stages ---------------------------------------------------------------

    def _rank_chunks(self, chunks, sizes, query, code, coarse_budget) -> tuple[list[float], dict]:
        """One score per chunk under the settings' signals, and what it cost."""
        s = self.settings
        structure = None
        if s.signals != "ami":
            structure = structure_scores(chunks, sizes, query, self.language, s.query_weight, s.neighbours,
                                         targeted=getattr(self, "_targeted", True))
            if s.signals == "structure":
                return structure, {}
        if s.signals == "ami":
            pool = list(range(len(chunks)))
        else:
            pool = select_by_rank(sizes, structure, s.ami_pool * coarse_budget)
        ami = self._ami()
        hits, misses = ami.hits, ami.misses
        values = ami.score({i: chunks[i].text for i in pool}, query, code)
        stats = {"ami_scored": len(pool), "ami_cached": ami.hits - hits, "ami_computed": ami.misses - misses}
        if structure is None:
            return [values[i] for i in range(len(chunks))], stats
        return fuse(structure, values, s.ami_weight), stats

    def rank(self, texts: Sequence[str], query: str | None = None) -> list[float]:
        """AMI of each text with the query (PPL(q) - PPL(q | text)); -inf for blank text."""
        if query is not None:
            self._query = query.strip("\n") or default_query()
        values = self._ami().score(dict(enumerate(texts)), self._query, self._code or "".join(texts))
        return [values[i] for i in range(len(texts))]

    def _compressible(self, chunk: CodeChunk) -> bool:
        body = chunk.lines[chunk.signature_lines:]
        return self.settings.fine_grained and sum(1 for line in body if line.strip()) >= self.settings.min_lines_for_fine

    def _assemble(self, chunks, sizes, scores, selected, heads, budget) -> tuple[str, list[ChunkReport], list]:
        s = self.settings
        selected_set, head_set = set(selected), set(heads)
        compressible = [i for i in selected if self._compressible(chunks[i])]
        fixed = [i for i in selected if i not in compressible]
        # what is not the compressible functions' own text: placeholders and class headers
        around = self._layout(chunks, selected_set, head_set, {i: "" for i in compressible})
        fine_budget = budget - sum(sizes[i] for i in fixed) - sum(
            self.count_tokens(text) for _, _, text, verbatim in around if not verbatim)
        shares: dict[int, float] = {i: 1.0 for i in compressible}
        pieces: dict[int, tuple[str, str, dict]] = {}
        # Knapsacks leave part of each share unspent and placeholders cost
        # tokens: move the budget handed out by the miss and repeat.
        asked, best = fine_budget, None
        for _ in range(s.max_rounds if compressible else 1):
            if compressible and asked < sum(sizes[i] for i in compressible):
                # every kept function keeps at least its signature and one placeholder line
                floors = [min(1.0, self._minimum(chunks[i]) / max(1, sizes[i])) for i in compressible]
                ratios = allocate_ratios([sizes[i] for i in compressible], [scores[i] for i in compressible],
                                         max(0.0, asked), beta=s.importance_beta, floor=floors)
                shares = dict(zip(compressible, ratios))
            else:
                shares = {i: 1.0 for i in compressible}
            pieces = {i: self._fine(chunks[i], shares[i] * sizes[i]) for i in compressible}
            used = sum(self.count_tokens(pieces[i][0]) for i in compressible)
            fits = used <= fine_budget + s.tolerance * budget
            if best is None or (fits and (not best[0] or used > best[1])) or (not fits and not best[0] and used < best[1]):
                best = (fits, used, shares, pieces)
            if fits and used >= fine_budget - s.tolerance * budget:
                break
            asked = max(0.0, asked + (fine_budget - used))
        _, _, shares, pieces = best
        layout = self._layout(chunks, selected_set, head_set, {i: pieces[i][0] for i in pieces})
        reports = []
        for i, chunk in enumerate(chunks):
            if i in selected_set:
                if i in pieces:
                    text, action, detail = pieces[i]
                else:
                    text, action, detail = chunk.text, "kept", {}
                reports.append(self._report(chunk, sizes[i], self.count_tokens(text), shares.get(i, 1.0), scores[i],
                                            action, text, detail))
            elif i in head_set:
                text = header_text(chunk)
                reports.append(self._report(chunk, sizes[i], self.count_tokens(text), 0.0, scores[i], "header", text))
            else:
                reports.append(self._report(chunk, sizes[i], 0, 0.0, scores[i], "dropped", ""))
        return "".join(text for _, _, text, _ in layout), reports, layout

    def _layout(self, chunks, whole: set[int], heads: set[int], pruned: dict[int, str]) -> list[tuple[int, int, str, bool]]:
        """The compressed code as pieces (start, end, text, verbatim) in order:
        kept code (text == code[start:end]), a pruned function's text, and one
        placeholder line for each run of dropped code [start, end), at the
        indentation of its first line. A class kept as its header alone shows
        its header line(s); the rest of its chunk joins the dropped run. In
        Python a placeholder that would be a block's whole body (after a class
        header whose members are all dropped) is the statement ``...``."""
        out: list[tuple[int, int, str, bool]] = []
        run: list[str] = []
        run_start = 0
        statement = opened = False

        def flush(end: int) -> None:
            if run:
                out.append((run_start, end, placeholder_line(indentation("".join(run)), self.language, statement), False))
                run.clear()

        def drop(start: int, text: str) -> None:
            nonlocal run_start, statement
            if not run:
                run_start, statement = start, opened
            run.append(text)

        for i, chunk in enumerate(chunks):
            if i in whole:
                flush(chunk.start)
                if i in pruned:
                    out.append((chunk.start, chunk.end, pruned[i], False))
                    opened = False
                else:
                    out.append((chunk.start, chunk.end, chunk.text, True))
                    opened = _opens_body(chunk)
            elif i in heads:
                flush(chunk.start)
                head = header_text(chunk)
                rest = chunk.text[len(head):]
                if rest.strip():
                    out.append((chunk.start, chunk.start + len(head), head, True))
                    opened = True
                    drop(chunk.start + len(head), rest)
                else:
                    out.append((chunk.start, chunk.end, chunk.text, True))
                    opened = True
            else:
                drop(chunk.start, chunk.text)
        flush(chunks[-1].end if chunks else 0)
        return out

    def _minimum(self, chunk: CodeChunk) -> int:
        """Tokens of a function cut down to its signature and a placeholder."""
        lines = chunk.lines
        body = "".join(lines[chunk.signature_lines:])
        return self.count_tokens("".join(lines[: chunk.signature_lines]) + placeholder_line(indentation(body), self.language))

    def _analyse(self, chunk: CodeChunk) -> _FunctionAnalysis:
        if chunk.idx not in self._analysis:
            lines = chunk.lines
            values = line_perplexities(self.scorer, chunk.text)
            blocks = entropy_blocks(lines, values, chunk.signature_lines, self.settings.spike_k,
                                    self.settings.max_block_lines)
            texts = ["".join(lines[a:b]) for a, b in blocks]
            self._analysis[chunk.idx] = _FunctionAnalysis(
                blocks=blocks,
                block_scores=self.rank(texts),
                block_tokens=[self.count_tokens(t) for t in texts],
                signature_tokens=self.count_tokens("".join(lines[: chunk.signature_lines])),
                line_values=values,
            )
        return self._analysis[chunk.idx]

    def _fine(self, chunk: CodeChunk, target: float) -> tuple[str, str, dict]:
        """The function cut to at most `target` tokens by knapsack over its blocks."""
        if target >= self.count_tokens(chunk.text) * 0.999:
            return chunk.text, "kept", {"share": 1.0}
        a = self._analyse(chunk)
        marker_cost = self.count_tokens(placeholder_line(indentation(chunk.text), self.language))
        # Importances scaled to (0, 1]: every block is worth something, so the
        # knapsack spends the function's share on the most important blocks
        # instead of leaving it unused when some AMIs are negative.
        values = [0.01 + v for v in normalise(a.block_scores)]
        capacity = int(target - a.signature_tokens - marker_cost)
        syntax = python_line_rules(chunk) if (self.language or "python").lower() == "python" else None
        while True:  # each gap between kept blocks costs a placeholder line: tighten until it fits
            kept = set(knapsack(a.block_tokens, values, capacity))
            text = self._join_blocks(chunk, a.blocks, kept, syntax)
            over = self.count_tokens(text) - int(target)
            if over <= 0 or not kept:
                break
            capacity -= max(over, 1)
        detail = {"blocks": len(a.blocks), "blocks_kept": len(kept), "target_tokens": round(target, 1),
                  "block_scores": [round(x, 4) if math.isfinite(x) else None for x in a.block_scores]}
        if kept and not _parses_like(chunk.text, text, self.language):  # a safety net: python_line_rules should suffice
            text = self._join_blocks(chunk, a.blocks, set())
            detail["blocks_kept"], detail["unparseable_blocks"] = 0, len(kept)
        return text, "pruned", detail

    def _join_blocks(self, chunk: CodeChunk, blocks: list[tuple[int, int]], kept: set[int],
                     syntax: "_LineRules | None" = None) -> str:
        """The signature, the lines of the kept blocks (with, in Python, what
        their syntax needs: `python_line_rules`), and one placeholder per run
        of dropped lines: the statement ``...`` where it follows a line that
        opens a block (the signature, an ``if ...:``), else a comment."""
        lines = chunk.lines
        keep = {i for j in kept for i in range(*blocks[j])}
        if syntax is not None:
            keep = syntax.close(keep)
        out = ["".join(lines[: chunk.signature_lines])]
        run: list[str] = []

        def flush() -> None:
            if not run:
                return
            if any(line.strip() for line in run):
                opens = _opens_block("".join(out))
                out.append(placeholder_line(indentation("".join(run)), self.language, statement=opens))
            else:
                out.extend(run)  # blank lines only
            run.clear()

        for i in range(chunk.signature_lines, len(lines)):
            if i in keep:
                flush()
                out.append(lines[i])
            else:
                run.append(lines[i])
        flush()
        return "".join(out)

    # -- reporting --------------------------------------------------------------

    @staticmethod
    def _report(chunk, original, compressed, share, score, action, text, detail=None) -> ChunkReport:
        return ChunkReport(
            idx=chunk.idx, method="longcodezip", kind=chunk.kind, start=chunk.start, end=chunk.end,
            original_tokens=original, compressed_tokens=compressed, target_ratio=round(float(share), 4),
            importance=float(score) if math.isfinite(score) else float("nan"), action=action, text=text,
            name=chunk.name, detail=detail or {},
        )

    def _result(self, text, total, n, ratio, reports, started, stats_before, stats) -> CompressionResult:
        after = _scorer_stats(self.scorer)
        scorer = {k: round(after.get(k, 0) - stats_before.get(k, 0), 3) for k in after}
        return CompressionResult(
            method="longcodezip", text=text, original_tokens=total, compressed_tokens=n, target_ratio=ratio,
            chunks=reports, seconds=time.perf_counter() - started, stats={**stats, "scorer": scorer},
        )


def _scorer_stats(scorer) -> dict:
    stats = getattr(scorer, "stats", None)
    return stats.as_dict() if stats is not None and hasattr(stats, "as_dict") else {}


def default_query() -> str:
    import prompts

    return prompts.snippet("longcodezip_query")


def compress_code(
    code: str,
    ratio: float,
    query: str = "",
    *,
    scorer: Scorer | None = None,
    count_tokens: TokenCounter | None = None,
    language: str | None = "python",
    settings: LongCodeZipSettings | None = None,
    journal=None,
    run_id: str | None = None,
    step: str = "compress:longcodezip",
) -> CompressionResult:
    """Compress code to about `ratio` of its tokens, keeping what matters to `query`.

    `scorer` defaults to the packaged model (`pipelines.llm.logprobs.default_scorer`)
    when the signals need one; `count_tokens` (the tokenizer the budget is
    counted in) defaults to the scorer's. `journal` (a CallJournal such as
    the store's `llm_calls`) caches the model's scores."""
    settings = settings or LongCodeZipSettings()
    if scorer is None and (settings.signals != "structure" or settings.fine_grained or count_tokens is None):
        from pipelines.llm.logprobs import default_scorer

        scorer = default_scorer()
    counter: Callable[[str], int] = count_tokens or (lambda t: len(scorer.tokenize(t)))
    return LongCodeZip(scorer, counter, settings, language, journal=journal, run_id=run_id,
                       step=step).compress(code, query, ratio)
