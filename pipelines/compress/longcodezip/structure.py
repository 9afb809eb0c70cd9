"""The structure signal (no model): what the query and the code around the
target say will be needed (`structure_scores`)."""

from __future__ import annotations

import ast
import keyword
import math
import re
import textwrap
from typing import Sequence

from pipelines.compress.longcodezip.functions import CodeChunk


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
