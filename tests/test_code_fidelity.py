"""Compressed code stays true to its source (issue 27, item 3), on real
modules that are not LongCodeZip's tuning set: argparse.py and
configparser.py of CPython 3.11 (tests/data/code/stdlib_modules).

- every kept method is shown under its own class, whose header is kept;
- compressed Python parses whenever its input parses (the coarse stage, and
  the fine stage that cuts functions into blocks);
- a plain-English query counts: its words are matched to the words of the
  definitions' names."""

from __future__ import annotations

import ast
import random
import re
import textwrap

import pytest
from conftest import DATA
from test_longcodezip import CopyScorer

from pipelines.compress.keywords import name_parts, name_stems, query_stems, stem
from pipelines.compress.longcodezip import (
    LongCodeZip,
    LongCodeZipSettings,
    compress_code,
    dedent_code,
    entropy_blocks,
    python_line_rules,
    split_code,
)

MODULES = DATA / "code" / "stdlib_modules"


def module(name: str) -> str:
    return (MODULES / name).read_text(encoding="utf-8")


def count(text: str) -> int:
    """Words and punctuation: a tokenizer stand-in (no model needed)."""
    return len(re.findall(r"\w+|[^\w\s]", text))


def defined_methods(code: str) -> set[str]:
    """Qualified names (Class.method, Outer.Inner.method) of the methods code defines."""
    out = set()

    def visit(body, prefix):
        for node in body:
            if isinstance(node, ast.ClassDef):
                visit(node.body, prefix + node.name + ".")
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and prefix:
                out.add(prefix + node.name)

    visit(ast.parse(code).body, "")
    return out


def kept(result, *kinds: str) -> list[str]:
    return [c.name for c in result.chunks if c.action in ("kept", "pruned") and c.kind in kinds]


CASES = [
    ("argparse.py", "How are subparsers added?"),
    ("argparse.py", ""),
    ("configparser.py", "How is an option read as a boolean?"),
    ("configparser.py", ""),
]


@pytest.mark.parametrize("name,query", CASES)
@pytest.mark.parametrize("ratio", [0.1, 0.3])
def test_kept_methods_sit_under_their_own_class_and_the_code_parses(name, query, ratio):
    """Without its class header a kept method is read as a member of the
    class above it (argparse's HelpFormatter held methods of five other
    classes); the compressed module must parse and hold each kept method
    in its own class."""
    code = module(name)
    result = compress_code(code, ratio, query, count_tokens=count)
    assert result.compressed_tokens <= ratio * result.original_tokens * 1.03
    methods = kept(result, "method")
    assert len(methods) >= 8
    tree_methods = defined_methods(result.text)  # fails here if the compressed code does not parse
    assert set(methods) <= tree_methods, sorted(set(methods) - tree_methods)
    headers = [c for c in result.chunks if c.action == "header"]
    assert headers and all(c.text.lstrip().startswith(("class ", "@", "#")) for c in headers)
    assert result.stats["headers"] == len(headers)


@pytest.mark.parametrize("name,query", CASES[:1] + CASES[2:3])
def test_the_fine_stage_keeps_python_parseable(name, query):
    """The fine stage cuts functions into blocks at perplexity spikes; what
    it keeps of a function still parses (a kept line brings its statement
    and the headers around it, an emptied body gets `...`)."""
    scorer = CopyScorer()
    code = module(name)
    result = compress_code(code, 0.3, query, scorer=scorer, count_tokens=scorer.count,
                           settings=LongCodeZipSettings(fine_grained=True))
    pruned = [c for c in result.chunks if c.action == "pruned"]
    assert len(pruned) >= 5
    assert set(kept(result, "method")) <= defined_methods(result.text)
    # the safety net (a pruned function cut to its signature) is not what made it parse
    assert sum(c.detail.get("blocks_kept", 0) for c in pruned) >= len(pruned)
    assert not any("unparseable_blocks" in c.detail for c in pruned)


def test_any_choice_of_blocks_parses():
    """Whatever blocks the knapsack keeps of a function, the lines their
    syntax needs come with them: 300 random choices over the functions of
    both modules, each parses."""
    rng = random.Random(27)
    functions = [c for name in ("argparse.py", "configparser.py") for c in split_code(module(name), "python")
                 if c.kind in ("function", "method") and len(c.lines) - c.signature_lines >= 8]
    compressor = LongCodeZip(None, count)
    for _ in range(300):
        chunk = rng.choice(functions)
        lines = chunk.lines
        values = [rng.uniform(0, 5) if line.strip() else float("nan") for line in lines]
        blocks = entropy_blocks(lines, values, chunk.signature_lines, 0.2, max_lines=3)
        chosen = {j for j in range(len(blocks)) if rng.random() < 0.4}
        text = compressor._join_blocks(chunk, blocks, chosen, python_line_rules(chunk))
        try:
            ast.parse(dedent_code(text))
        except SyntaxError as exc:
            pytest.fail(f"{chunk.name} with blocks {sorted(chosen)} of {blocks}: {exc}\n{text}")


def test_plain_english_queries_keep_what_they_ask_about():
    """Words, not identifiers: "How are subparsers added?" keeps
    add_subparsers and add_parser; "How is an option read as a boolean?"
    keeps getboolean; even at a tenth of the module."""
    for name, query, wanted in [("argparse.py", "How are subparsers added?", {"add_subparsers", "add_parser"}),
                                ("configparser.py", "How is an option read as a boolean?", {"getboolean"})]:
        result = compress_code(module(name), 0.1, query, count_tokens=count)
        names = {n.rsplit(".", 1)[-1] for n in kept(result, "function", "method")}
        assert wanted <= names, (name, sorted(names))
        for word in wanted:
            assert re.search(rf"^\s*def {word}\(", result.text, re.M)


def test_identifier_words_and_stems():
    assert name_parts("_SubParsersAction") == ["sub", "parsers", "action"]
    assert name_parts("add_argument_group") == ["add", "argument", "group"]
    assert name_parts("HTTPServer") == ["http", "server"]
    assert stem("added") == stem("add") == stem("adding")
    assert stem("parser") == stem("parse") == stem("parsing") == stem("parsers")
    assert stem("classes") == stem("class") and stem("entries") == stem("entry")
    assert stem("subparsers") in name_stems("_SubParsersAction")  # adjacent words joined
    assert query_stems("How are subparsers added?") == {stem("subparsers"), stem("add")}
