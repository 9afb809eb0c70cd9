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

from pipelines.compress.longcodezip.ami import AMIScorer
from pipelines.compress.longcodezip.blocks import entropy_blocks, knapsack, spike_lines
from pipelines.compress.longcodezip.compressor import LongCodeZip, compress_code
from pipelines.compress.longcodezip.functions import parse_longest_prefix, split_code
from pipelines.compress.longcodezip.lines import indentation, placeholder_line, split_lines
from pipelines.compress.longcodezip.rank import fuse, select_by_rank
from pipelines.compress.longcodezip.settings import LongCodeZipSettings
from pipelines.compress.longcodezip.structure import chunk_names, neighbourhood
from pipelines.compress.longcodezip.syntax import dedent_code, python_line_rules

__all__ = [
    "AMIScorer", "LongCodeZip", "LongCodeZipSettings", "chunk_names", "compress_code", "dedent_code",
    "entropy_blocks", "fuse", "indentation", "knapsack", "neighbourhood", "parse_longest_prefix",
    "placeholder_line", "python_line_rules", "select_by_rank", "spike_lines", "split_code", "split_lines",
]
