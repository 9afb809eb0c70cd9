"""Token log-probabilities from a local llama.cpp model, within bounded memory.

Used by LongCodeZip to measure perplexity (of a query with and without a code
chunk, of each line of a function given the lines before it).

Why not `Llama.eval` with `logits_all=True`: it asks llama.cpp for a logits
row for *every* token and copies each into `Llama.scores`, a float32 matrix
of n_ctx x n_vocab (262,144 columns for Gemma 3: 1 MiB per token). Here a
batch asks for logits only at the positions whose next token is scored (the
output head is the most expensive layer of this model), and never for more
than `window_rows` of them per decode: llama.cpp keeps one float32 row per
requested output in its output buffer, so a 512-token batch scored at every
position would hold 512 MiB. The rows of each decode are reduced to
log-probs in float32, so the peak extra memory is about
`2 x window_rows x n_vocab x 4` bytes (llama.cpp's buffer and one temporary;
64 MiB at the default 32 rows), never tokens x vocab.

This module drives llama-cpp-python's private attributes (`Llama._ctx`,
`Llama._batch`, the batch's C arrays): it is tested with the version pinned
in pyproject.toml and refuses another one with a clear message.

Texts longer than the context are scored with a sliding window: each window
starts `overlap` tokens before the first position it scores, so every token
is predicted from at least that much context.

The scorer owns a dedicated `Llama` (loaded with `logits_all=True` through
`load_llama`, one per process) and drives its KV cache directly, under the
model's lock. It keeps the KV cache of the last call and reuses the longest
common token prefix, so a fixed text scored in front of varying ones (or the
same query again) is evaluated once.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_SCORER_CONTEXT = 4096
# Logits rows requested per decode and reduced to log-probs at a time (x n_vocab x 4 bytes each).
LOGPROB_WINDOW_ROWS = 32
# The llama-cpp-python release whose internals _score relies on (see the module doc).
TESTED_LLAMA_CPP_VERSION = "0.3.36"


def check_llama_cpp_version(version: str | None = None) -> None:
    """Refuse a llama-cpp-python other than the tested one: its private
    attributes may have changed shape, and a silent misuse would corrupt scores."""
    from pipelines.llm.base import LLMConfigError

    if version is None:
        import llama_cpp

        version = getattr(llama_cpp, "__version__", "unknown")
    if version != TESTED_LLAMA_CPP_VERSION:
        raise LLMConfigError(
            f"log-prob scoring (LongCodeZip) needs llama-cpp-python=={TESTED_LLAMA_CPP_VERSION}, the version it "
            f"is tested with (it uses the library's internals); found {version}: "
            f"pip install llama-cpp-python=={TESTED_LLAMA_CPP_VERSION}"
        )


@dataclass
class ScorerStats:
    calls: int = 0
    tokens_evaluated: int = 0  # tokens run through the model
    tokens_reused: int = 0  # tokens served from the KV cache
    tokens_scored: int = 0  # tokens whose log-prob was returned
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class LogprobScorer:
    """log P(token | previous tokens) from a llama.cpp model (default: the default
    model when it is a llama.cpp one, else the embedded Qwen2.5-Coder)."""

    backend = "llamacpp"

    def __init__(self, model_path: str | Path | None = None, n_ctx: int = DEFAULT_SCORER_CONTEXT,
                 window_rows: int = LOGPROB_WINDOW_ROWS, n_threads: int | None = None):
        from pipelines.llm.llamacpp import default_local_model, load_llama, model_file

        check_llama_cpp_version()
        self.path, known = model_file(default_local_model() if model_path is None else str(model_path))
        self.model = known.name if known is not None else self.path.stem
        self.n_ctx = n_ctx
        self.window_rows = max(1, window_rows)
        self._llama, self._lock = load_llama(self.path, n_ctx, logits_all=True)
        self._n_vocab = self._llama.n_vocab()
        self.bos_token = self._llama.token_bos()
        self.stats = ScorerStats()
        self._stats_lock = threading.Lock()
        if n_threads:
            self.set_threads(n_threads)

    def set_threads(self, n_threads: int) -> None:
        """Threads llama.cpp uses for this scorer (on a busy machine one can be faster than two)."""
        import llama_cpp

        with self._lock:
            llama_cpp.llama_set_n_threads(self._llama._ctx.ctx, n_threads, n_threads)

    # --- tokens -------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """Tokens of text, without BOS."""
        if not text:
            return []
        return self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def token_offsets(self, tokens: Sequence[int]) -> list[int]:
        """UTF-8 byte offset at which each token starts in the detokenized text."""
        offsets, pos = [], 0
        for token in tokens:
            offsets.append(pos)
            pos += len(self._llama.detokenize([token]))
        return offsets

    # --- scoring ------------------------------------------------------------

    def token_logprobs(self, tokens: Sequence[int], first: int = 1, overlap: int | None = None) -> np.ndarray:
        """log P(tokens[i] | tokens[:i]) for i in [first, len(tokens)), float32.

        `tokens` should start with BOS. Longer than the context, the tokens are
        scored in windows that each keep `overlap` tokens of left context
        (default: half the context) and the BOS token."""
        tokens = list(tokens)
        first = max(1, first)
        if first >= len(tokens):
            return np.zeros(0, dtype=np.float32)
        limit = self.n_ctx - 1
        if len(tokens) <= limit:
            return self._score(tokens, first)
        overlap = limit // 2 if overlap is None else max(0, min(overlap, limit - 2))
        out = np.empty(len(tokens) - first, dtype=np.float32)
        pos = first
        while pos < len(tokens):
            ctx_start = max(1, pos - overlap)
            end = min(len(tokens), ctx_start + limit - 1)
            window = [tokens[0]] + tokens[ctx_start:end]
            local_first = 1 + (pos - ctx_start)
            out[pos - first:end - first] = self._score(window, local_first)
            pos = end
        return out

    def conditional_logprobs(self, target: str, context: str = "", max_context_tokens: int | None = None) -> np.ndarray:
        """Log-probs of target's tokens after BOS + context (context truncated on the left to fit)."""
        target_tokens = self.tokenize(target)
        context_tokens = self.tokenize(context)
        room = self.n_ctx - 1 - 1 - len(target_tokens)
        if max_context_tokens is not None:
            room = min(room, max_context_tokens)
        if room < len(context_tokens):
            context_tokens = context_tokens[len(context_tokens) - max(0, room):] if room > 0 else []
        tokens = [self.bos_token] + context_tokens + target_tokens
        return self.token_logprobs(tokens, first=1 + len(context_tokens))

    def perplexity(self, target: str, context: str = "", max_context_tokens: int | None = None) -> float:
        """exp(mean negative log-likelihood) of target given context."""
        logprobs = self.conditional_logprobs(target, context, max_context_tokens)
        if logprobs.size == 0:
            return float("nan")
        return math.exp(-float(logprobs.mean(dtype=np.float64)))

    # --- llama.cpp -----------------------------------------------------------

    def logprobs_at(self, tokens: Sequence[int], positions: Sequence[int]) -> np.ndarray:
        """log P(tokens[i] | tokens[:i]) for each i in `positions` only (at most
        n_ctx - 1 tokens, starting with BOS): logits rows are computed only
        there, the output head being the costliest layer of a small model."""
        tokens = list(tokens)
        if len(tokens) > self.n_ctx - 1:
            raise ValueError(f"{len(tokens)} tokens do not fit the scorer's context of {self.n_ctx}")
        wanted = sorted({int(p) for p in positions})
        if not wanted:
            return np.zeros(0, dtype=np.float32)
        if wanted[0] < 1 or wanted[-1] >= len(tokens):
            raise ValueError("positions must lie in [1, len(tokens))")
        return self._score(tokens, wanted[0], wanted)

    def _score(self, tokens: list[int], first: int, positions: Sequence[int] | None = None) -> np.ndarray:
        """One pass of at most n_ctx tokens: log-probs of tokens[first:] (or of
        tokens[p] for p in the sorted `positions`, all >= first)."""
        import llama_cpp

        from pipelines.llm.llamacpp import on_compute_thread

        llama = self._llama
        started = time.perf_counter()
        if positions is None:
            slot = None
            out = np.empty(len(tokens) - first, dtype=np.float32)
        else:
            slot = {p: j for j, p in enumerate(positions)}  # scored token position -> index in out
            out = np.empty(len(positions), dtype=np.float32)
        with self._lock:
            ctx = llama._ctx
            cached = getattr(llama, "_longsum_kv_tokens", None)
            if cached is None or llama.n_tokens != 0:
                cached = []  # someone else used this context through Llama's own API
                ctx.kv_cache_clear()
            # Reuse the common prefix, but re-evaluate from the first position
            # whose logits are needed (logits are not kept between calls).
            keep = 0
            for a, b in zip(cached, tokens[:first - 1]):
                if a != b:
                    break
                keep += 1
            ctx.kv_cache_seq_rm(0, keep, -1)
            llama._longsum_kv_tokens = None  # invalid until this pass completes
            batch = llama._batch
            n_batch = llama.n_batch
            start = keep
            while start < len(tokens):
                # A decode takes up to n_batch tokens but asks for at most
                # window_rows logits rows (llama.cpp's buffer holds them all).
                outputs = []  # positions whose logits predict a scored token
                b = batch.batch
                n = 0
                while start + n < len(tokens) and n < n_batch and len(outputs) < self.window_rows:
                    pos = start + n
                    b.token[n] = tokens[pos]
                    b.pos[n] = pos
                    b.seq_id[n][0] = 0
                    b.n_seq_id[n] = 1
                    wanted = first - 1 <= pos < len(tokens) - 1 and (slot is None or pos + 1 in slot)
                    b.logits[n] = wanted
                    if wanted:
                        outputs.append(pos)
                    n += 1
                b.n_tokens = n
                if not outputs:
                    b.logits[n - 1] = True  # llama.cpp wants at least one output
                on_compute_thread(ctx.decode, batch)
                start += n
                if not outputs:
                    continue
                rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(ctx.ctx), shape=(len(outputs), self._n_vocab))
                targets = [tokens[p + 1] for p in outputs]
                where = [p + 1 - first for p in outputs] if slot is None else [slot[p + 1] for p in outputs]
                out[where] = _log_softmax_at(rows, targets)  # float32 view, no copy
            llama._longsum_kv_tokens = list(tokens)
            llama.n_tokens = 0  # Llama's own API must not trust this KV cache
        with self._stats_lock:
            self.stats.calls += 1
            self.stats.tokens_evaluated += len(tokens) - keep
            self.stats.tokens_reused += keep
            self.stats.tokens_scored += len(out)
            self.stats.seconds += time.perf_counter() - started
        return out


def _log_softmax_at(logits: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """log_softmax(logits)[row, target] per row, in float32, one row block at a time."""
    peak = logits.max(axis=1)
    shifted = logits - peak[:, None]  # the one (rows, vocab) float32 temporary
    np.exp(shifted, out=shifted)
    lse = peak + np.log(shifted.sum(axis=1, dtype=np.float32))
    picked = logits[np.arange(len(targets)), np.asarray(targets)]
    return (picked - lse).astype(np.float32, copy=False)


_SCORERS: dict[tuple, LogprobScorer] = {}
_SCORERS_LOCK = threading.Lock()


def default_scorer(model_path: str | Path | None = None, n_ctx: int = DEFAULT_SCORER_CONTEXT) -> LogprobScorer:
    """The process-wide scorer for this model file and context size."""
    key = (str(model_path) if model_path else None, n_ctx)
    with _SCORERS_LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = LogprobScorer(model_path, n_ctx=n_ctx)
        return _SCORERS[key]


def scorer_path(spec: str | None) -> Path | None:
    """The GGUF file a `--compress-model` spec names: None (the default model)
    for no spec; the embedded model for ``llamacpp`` or ``llamacpp:NAME``;
    PATH for ``llamacpp:PATH`` or a bare path. Log-prob scoring needs a local
    llama.cpp model: API specs are refused."""
    if spec is None or not spec.strip():
        return None
    from pipelines.llm.base import LLMConfigError
    from pipelines.llm.llamacpp import model_file

    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    if prefix.lower() in ("openai", "anthropic", "scripted"):
        raise ValueError(f"--compress-model {spec}: LongCodeZip scores with a local llama.cpp model "
                         "(llamacpp, llamacpp:NAME or llamacpp:/path/to/model.gguf), not an API model")
    if prefix.lower() != "llamacpp":
        rest = spec
        if not Path(rest).expanduser().is_file():
            raise ValueError(f"--compress-model {spec}: model file not found: {Path(rest).expanduser()}")
    try:
        return model_file(rest or None)[0]
    except LLMConfigError as exc:
        raise ValueError(f"--compress-model {spec}: {exc}") from None
