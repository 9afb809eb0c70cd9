"""Prompt compression: SCOPE for prose, LongCodeZip for code.

One entry point::

    from pipelines.compress import compress_text, compress_document

    result = compress_text(text, method="auto", ratio=0.5, kind="book",
                           query="", llm=recording_llm)
    result.text               # the compressed text
    result.original_tokens    # both counted with the backend's tokenizer
    result.compressed_tokens  #   (llm.count_tokens, or count_tokens=...)
    result.ratio              # compressed / original
    result.chunks             # one ChunkReport per chunk: span, tokens, target
                              # ratio, importance, action (verbatim | rewritten |
                              # extractive | kept | pruned | dropped), attempts,
                              # fallback_reason, keywords and keywords_kept
    result.fallbacks          # SCOPE chunks that fell back to extraction
    result.as_dict()          # JSON-ready, for the store

`method`:
  - ``none``: the text unchanged (ratio 1);
  - ``scope``: `pipelines.compress.scope` (needs `llm`, a RecordingLLM: its
    rewrite calls are journaled like every other call; the ratio holds
    even when the model's rewrites fail, through the extractive fallback);
  - ``longcodezip``: `pipelines.compress.longcodezip` (needs no generation:
    it scores with a local llama.cpp model, `scorer`, the packaged Gemma 3
    270M by default);
  - ``auto``: LongCodeZip for code documents (`kind="code"`), SCOPE for
    prose; in prose, the bodies of fenced code blocks (```...```) go to
    LongCodeZip, the text between blocks to SCOPE and the fence lines stay
    as they are (result.method is then "mixed").

`query` focuses both methods (SCOPE's chunk importance; LongCodeZip's
perplexity ranking). Without one, SCOPE ranks chunks by centrality and
LongCodeZip uses a generic "what does this code do" query
(prompts/longcodezip_query.txt).

`step` prefixes the `step` of the compressor's LLM calls in `llm_calls`
(SCOPE's are "<step>:scope:chunk<i>#<attempt>"); `concurrency` SCOPE
rewrites are in flight at once (API backends). `scope_settings`
(`scope.ScopeSettings`) and `longcodezip_settings`
(`longcodezip.LongCodeZipSettings`) tune the methods. Calls from several
threads at once are safe (the scorer and the embedding model serialise on
their own locks).
"""

from __future__ import annotations

import re
import time
from typing import Callable

from pipelines.compress.common import ChunkReport, CompressionResult, check_ratio

METHODS = ("none", "scope", "longcodezip", "auto")
# Fenced code blocks shorter than this many tokens are kept as they are.
MIN_CODE_BLOCK_TOKENS = 64

__all__ = [
    "METHODS", "ChunkReport", "CompressionResult", "compress_document", "compress_text", "resolve_method",
    "scope_inputs", "split_fenced",
]


def resolve_method(method: str, kind: str | None) -> str:
    """The compressor `method` means for a document of this kind."""
    if method not in METHODS:
        raise ValueError(f"unknown compression method {method!r}; choose one of {', '.join(METHODS)}")
    if method != "auto":
        return method
    return "longcodezip" if kind == "code" else "scope"


def compress_text(
    text: str,
    *,
    method: str = "auto",
    ratio: float = 0.5,
    kind: str | None = None,
    language: str | None = None,
    query: str = "",
    llm=None,
    count_tokens: Callable[[str], int] | None = None,
    scorer=None,
    scope_settings=None,
    longcodezip_settings=None,
    step: str = "compress",
    concurrency: int = 1,
) -> CompressionResult:
    """Compress `text` to about `ratio` of its tokens (see the module doc)."""
    started = time.perf_counter()
    ratio = check_ratio(ratio)
    chosen = resolve_method(method, kind)
    counter = count_tokens or (llm.count_tokens if llm is not None else None)
    if chosen == "none":
        counter = counter or _scorer_counter(scorer)
        n = counter(text)
        return CompressionResult("none", text, n, n, 1.0, [], time.perf_counter() - started, {})
    if chosen == "longcodezip":
        from pipelines.compress.longcodezip import compress_code

        return compress_code(text, ratio, query, scorer=scorer, count_tokens=counter, language=language or "python",
                             settings=longcodezip_settings)
    if llm is None:
        raise ValueError("SCOPE compression needs an LLM to rewrite with (llm=RecordingLLM(...))")
    if method == "auto" and kind != "code" and FENCE.search(text):
        return _compress_mixed(text, ratio, query, llm, counter, scorer, scope_settings, longcodezip_settings,
                               step, started, concurrency)
    from pipelines.compress.scope import compress_prose

    return _with_counter(compress_prose(text, ratio, llm, query=query, settings=scope_settings, step=f"{step}:scope",
                                        concurrency=concurrency),
                         counter, text)


def compress_document(document, *, method: str = "auto", ratio: float = 0.5, query: str = "", llm=None,
                      **options) -> CompressionResult:
    """compress_text for a `pipelines.documents.Document` (its kind and language)."""
    return compress_text(document.text, method=method, ratio=ratio, kind=document.kind, language=document.language,
                         query=query, llm=llm, **options)


# --- prose with fenced code blocks -------------------------------------------------

FENCE = re.compile(r"^(?P<fence>```+|~~~+)[ \t]*(?P<info>[\w+#.-]*)[^\n]*\n(?P<body>.*?)^(?P=fence)[ \t]*$",
                   re.MULTILINE | re.DOTALL)


def split_fenced(text: str) -> list[tuple[str, int, int, str | None]]:
    """(kind, start, end, language) segments covering text: "code" for each
    fenced block's body, "fence" for its opening and closing lines (kept as
    they are), "prose" for the text between blocks."""
    segments, pos = [], 0
    for m in FENCE.finditer(text):
        body_start, body_end = m.start("body"), m.end("body")
        if m.start() > pos:
            segments.append(("prose", pos, m.start(), None))
        segments.append(("fence", m.start(), body_start, None))
        segments.append(("code", body_start, body_end, (m.group("info") or "").lower() or None))
        segments.append(("fence", body_end, m.end(), None))
        pos = m.end()
    if pos < len(text):
        segments.append(("prose", pos, len(text), None))
    return [s for s in segments if s[2] > s[1]]


def _scope_rewrites(segment: str, n_tokens: int) -> bool:
    """Whether SCOPE rewrites this prose segment between code blocks (short ones stay as they are)."""
    return bool(segment.strip()) and n_tokens >= MIN_CODE_BLOCK_TOKENS


def scope_inputs(text: str, method: str, kind: str | None, count_tokens: Callable[[str], int]) -> list[str]:
    """The texts SCOPE rewrites when compress_text compresses `text` this way:
    the text itself, the prose between fenced code blocks (`auto`), or none
    (LongCodeZip needs no generation). The cost preflight plans from them."""
    if resolve_method(method, kind) != "scope":
        return []
    if method == "auto" and kind != "code" and FENCE.search(text):
        return [text[start:end].strip() for part, start, end, _ in split_fenced(text)
                if part == "prose" and _scope_rewrites(text[start:end], count_tokens(text[start:end]))]
    return [text]


def _compress_mixed(text, ratio, query, llm, counter, scorer, scope_settings, lcz_settings, step, started,
                    concurrency=1):
    from pipelines.compress.longcodezip import compress_code
    from pipelines.compress.scope import compress_prose

    counter = counter or llm.count_tokens
    parts, chunks, stats = [], [], {"segments": []}
    for kind, start, end, language in split_fenced(text):
        segment = text[start:end]
        n = counter(segment)
        if kind == "code" and n >= MIN_CODE_BLOCK_TOKENS:
            result = compress_code(segment, ratio, query, scorer=scorer, count_tokens=counter,
                                   language=_language(language), settings=lcz_settings)
            body = result.text if result.text.endswith("\n") else result.text + "\n"
        elif kind == "prose" and _scope_rewrites(segment, n):
            lead = segment[: len(segment) - len(segment.lstrip())]
            trail = segment[len(segment.rstrip()):]
            result = compress_prose(segment.strip(), ratio, llm, query=query, settings=scope_settings,
                                    step=f"{step}:scope", concurrency=concurrency)
            body = lead + result.text.strip() + trail
        else:
            parts.append(segment)
            continue
        for c in result.chunks:
            c.start += start
            c.end += start
            c.idx = len(chunks)
            chunks.append(c)
        stats["segments"].append({"kind": kind, "start": start, "end": end, "method": result.method,
                                  "ratio": round(result.ratio, 4)})
        parts.append(body)
    out = "".join(parts)
    total = counter(text)
    return CompressionResult("mixed", out, total, counter(out), ratio, chunks, time.perf_counter() - started, stats)


def _language(info: str | None) -> str | None:
    from pipelines.documents import CODE_LANGUAGES

    if not info:
        return None
    if info in {"py", "python", "python3"}:
        return "python"
    return CODE_LANGUAGES.get(f".{info}", info)


def _with_counter(result: CompressionResult, counter, text: str) -> CompressionResult:
    """Re-count with the caller's tokenizer when it differs from the LLM's."""
    if counter is None:
        return result
    result.original_tokens = counter(text)
    result.compressed_tokens = counter(result.text)
    return result


def _scorer_counter(scorer):
    if scorer is not None:
        return lambda t: len(scorer.tokenize(t))
    from pipelines.llm.tokenizers import count_cl100k

    return count_cl100k
