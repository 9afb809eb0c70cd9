"""Token-budgeted chunking.

`chunk_text` packs whole paragraphs into chunks of at most `budget` tokens,
measured with the backend's own tokenizer. An over-long paragraph is split at
sentence ends, then clause ends, then between words; a single "word" longer
than the budget (a URL, a run of symbols) is the only thing ever cut inside,
by characters. Chunks prefer to end where a chapter / section starts.

Chunks are slices of the input: ``"".join(c.text for c in chunks) == text``.

`fixed_window_chunks` is the comparison baseline: windows of `budget` tokens
that overlap by `overlap` tokens, breaking between words only.

A counter that costs a request per text (a server's /tokenize, whose
tokenizer does not run here) comes as a `CostlyCounter` with a cheap local
count beside it. Chunking then counts the paragraphs with the local count,
scaled by the ratio of the two on the whole text, packs with those, and
counts exactly only the chunks it makes (and any chunk it must shrink). Where
the server gives the text of each token (llama.cpp's server, vLLM), one
request tokenizes the whole document and every chunk is counted by its
position in those tokens (plus SEAM_TOKENS): a 46k-character story costs one
request instead of one per paragraph (~270). Otherwise each chunk costs one.
Every chunk's `n_tokens` is within the budget.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from pipelines.text import split_clauses, split_paragraphs, split_sentences, split_words

TokenCounter = Callable[[str], int]

# A chunk that is at least this full ends at the next section start instead
# of running on into the new chapter.
SECTION_BREAK_MIN_FILL = 0.5
# A last chunk smaller than this share of the budget is rebalanced with the one before.
TAIL_MIN_FILL = 0.25


@dataclass(frozen=True)
class Chunk:
    idx: int
    start: int
    end: int
    text: str
    n_tokens: int
    section: str | None = None


@dataclass(frozen=True)
class CostlyCounter:
    """An exact counter that costs a request per text, and a cheap local
    count roughly proportional to it (see the module doc)."""

    count: TokenCounter
    estimate: TokenCounter
    # text -> where each of its tokens starts (one request for a whole document), or None
    starts: Callable[[str], list[int] | None] | None = None

    def __call__(self, text: str) -> int:
        return self.count(text)


# Packing by estimates aims this much below the budget, so that few chunks
# overflow when counted exactly (each overflow costs another exact count).
ESTIMATE_MARGIN = 0.01
# The ratio between the two counts is measured on at most this much of the text.
CALIBRATION_CHARS = 200_000
# A chunk counted by its position in the document's tokens can take one more
# token alone, where its first word is no longer preceded by the text before it
# (cl100k, four books cut at 300 and 2,048 tokens: 745 of 794 chunks equal, 48
# one fewer alone since a token across the seam counts on both sides, 1 one more).
SEAM_TOKENS = 1


def local_counter(text: str, count_tokens: TokenCounter) -> TokenCounter:
    """What pieces of `text` are counted with: the counter itself, or for a
    costly one its local estimate scaled to it on this text (the document's
    token positions, else one exact count of its start)."""
    if not isinstance(count_tokens, CostlyCounter) or not text:
        return count_tokens
    sample = text[:CALIBRATION_CHARS]
    starts = _token_starts(text, count_tokens)
    if starts is not None:
        exact = bisect.bisect_left(starts, len(sample))
    else:
        sample, exact = _counted_start(sample, count_tokens.count)
    ratio = exact / max(1, count_tokens.estimate(sample)) * (1 + ESTIMATE_MARGIN)
    estimate = count_tokens.estimate
    return lambda piece: math.ceil(estimate(piece) * ratio) if piece else 0


def _counted_start(sample: str, count: TokenCounter) -> tuple[str, int]:
    """(sample, its exact count), the sample halved while the counter refuses it (a server
    such as vLLM tokenizes at most its model's context)."""
    from pipelines.llm.tokenizers import SMALLEST_WINDOW, TokenizerUnavailable

    while True:
        try:
            return sample, count(sample)
        except TokenizerUnavailable:
            if len(sample) < 2 * SMALLEST_WINDOW:
                raise
            sample = sample[: len(sample) // 2]


def _token_starts(text: str, count_tokens: TokenCounter) -> list[int] | None:
    if isinstance(count_tokens, CostlyCounter) and count_tokens.starts is not None:
        return count_tokens.starts(text)
    return None


def _span_counter(text: str, count_tokens: TokenCounter) -> Callable[[int, int], int]:
    """Tokens of text[start:end]: the exact counter's, or read off the
    document's own tokenization where the server gave its token positions:
    every token that overlaps the span, plus SEAM_TOKENS."""
    starts = _token_starts(text, count_tokens)
    if starts is None:
        return lambda start, end: count_tokens(text[start:end])

    def overlapping(start: int, end: int) -> int:
        first = bisect.bisect_left(starts, start)
        if first == len(starts) or starts[first] > start:
            first -= 1  # the token that covers `start` began before it
        return max(0, bisect.bisect_left(starts, end) - max(0, first)) + SEAM_TOKENS

    return overlapping


@dataclass(frozen=True)
class _Piece:
    start: int
    end: int
    n_tokens: int


def chunk_text(
    text: str,
    budget: int,
    count_tokens: TokenCounter,
    boundaries: Sequence[int] = (),
    section_titles: dict[int, str] | None = None,
) -> list[Chunk]:
    """Split text into lossless chunks of at most `budget` tokens each."""
    if budget < 8:
        raise ValueError(f"chunk budget must be at least 8 tokens, got {budget}")
    if not text:
        return []
    pieces = _pieces(text, budget, local_counter(text, count_tokens), boundaries)
    spans = _pack(pieces, budget, sorted(set(boundaries)))
    spans = _enforce_exact_budget(text, spans, pieces, budget, count_tokens, _span_counter(text, count_tokens))
    return _as_chunks(text, spans, section_titles or {})


def _pieces(text: str, budget: int, count_tokens: TokenCounter, boundaries: Sequence[int]) -> list[_Piece]:
    """Paragraph-sized pieces, each small enough to fit the budget on its own."""
    pieces: list[_Piece] = []
    cuts = sorted({0, *[b for b in boundaries if 0 < b < len(text)], len(text)})
    for sec_start, sec_end in zip(cuts, cuts[1:]):
        offset = sec_start
        for para in split_paragraphs(text[sec_start:sec_end]):
            _refine(para, offset, budget, count_tokens, pieces, level=0)
            offset += len(para)
    return pieces


_SPLITTERS = (split_sentences, split_clauses, split_words)


def _refine(segment: str, offset: int, budget: int, count_tokens: TokenCounter, out: list[_Piece], level: int) -> None:
    n = count_tokens(segment)
    if n <= budget:
        out.append(_Piece(offset, offset + len(segment), n))
        return
    if level < len(_SPLITTERS):
        parts = _SPLITTERS[level](segment)
        if len(parts) > 1:
            for part in parts:
                _refine(part, offset, budget, count_tokens, out, level + 1)
                offset += len(part)
            return
        _refine(segment, offset, budget, count_tokens, out, level + 1)
        return
    _split_by_characters(segment, offset, budget, count_tokens, out)


def _split_by_characters(segment: str, offset: int, budget: int, count_tokens: TokenCounter, out: list[_Piece]) -> None:
    """Last resort for one unbroken run longer than the budget."""
    start = 0
    while start < len(segment):
        # No tokenizer packs more than a few dozen characters into one token.
        lo, hi = start + 1, min(len(segment), start + budget * 64)
        while lo < hi:  # largest end with count_tokens(segment[start:end]) <= budget
            mid = (lo + hi + 1) // 2
            if count_tokens(segment[start:mid]) <= budget:
                lo = mid
            else:
                hi = mid - 1
        piece = segment[start:lo]
        out.append(_Piece(offset + start, offset + lo, count_tokens(piece)))
        start = lo


def _pack(pieces: list[_Piece], budget: int, boundaries: list[int]) -> list[tuple[int, int]]:
    """Greedy packing of pieces into spans, breaking early at section starts."""
    boundary_set = set(boundaries)
    groups: list[list[_Piece]] = []
    current: list[_Piece] = []
    used = 0
    for piece in pieces:
        if current:
            overflow = used + piece.n_tokens > budget
            section_break = piece.start in boundary_set and used >= SECTION_BREAK_MIN_FILL * budget
            if overflow or section_break:
                groups.append(current)
                current, used = [], 0
        current.append(piece)
        used += piece.n_tokens
    if current:
        groups.append(current)
    _rebalance_tail(groups, budget)
    return [(g[0].start, g[-1].end) for g in groups]


def _rebalance_tail(groups: list[list[_Piece]], budget: int) -> None:
    """A last chunk of a few tokens ("Finis") would cost a call for nothing:
    share the last two chunks' pieces out as evenly as the budget allows."""
    if len(groups) < 2 or sum(p.n_tokens for p in groups[-1]) >= TAIL_MIN_FILL * budget:
        return
    pieces = groups[-2] + groups[-1]
    total = sum(p.n_tokens for p in pieces)
    best, best_gap, left = None, None, 0
    for i in range(1, len(pieces)):
        left += pieces[i - 1].n_tokens
        right = total - left
        if left <= budget and right <= budget and (best_gap is None or abs(left - right) < best_gap):
            best, best_gap = i, abs(left - right)
    if best is not None:
        groups[-2:] = [pieces[:best], pieces[best:]]


def _enforce_exact_budget(
    text: str, spans: list[tuple[int, int]], pieces: list[_Piece], budget: int, count_tokens: TokenCounter,
    count_span: Callable[[int, int], int],
) -> list[tuple[int, int, int]]:
    """Token counts are not exactly additive across piece seams: re-count each
    packed span and move trailing pieces to the next chunk until it fits.
    Returns (start, end, exact token count) per chunk."""
    pieces = list(pieces)
    piece_starts = [p.start for p in pieces]
    exact: list[tuple[int, int, int]] = []
    queue = deque(spans)
    while queue:
        start, end = queue.popleft()
        n_tokens = count_span(start, end)
        while n_tokens > budget:
            i = bisect.bisect_left(piece_starts, end) - 1  # last piece inside the span
            if isinstance(count_tokens, CostlyCounter):  # estimated pieces: drop about the excess at once
                excess, dropped = n_tokens - budget, pieces[i].n_tokens
                while dropped < excess and i > 0 and pieces[i - 1].start > start:
                    i -= 1
                    dropped += pieces[i].n_tokens
            cut = pieces[i].start
            if cut <= start:
                if not isinstance(count_tokens, CostlyCounter):
                    break  # a single piece already verified to fit on its own
                # One piece, its size estimated: split it by exact counts.
                finer: list[_Piece] = []
                _refine(text[start:end], start, budget, count_tokens, finer, level=0)
                pieces[i:i + 1] = finer
                piece_starts = [p.start for p in pieces]
                queue.extendleft(reversed(_pack(finer, budget, [])))
                start = None
                break
            if queue and queue[0][0] == end:
                queue[0] = (cut, queue[0][1])
            else:
                queue.appendleft((cut, end))
            end = cut
            n_tokens = count_span(start, end)
        if start is not None:
            exact.append((start, end, n_tokens))
    return exact


def _as_chunks(text: str, spans: list[tuple[int, int, int]], section_titles: dict[int, str]) -> list[Chunk]:
    starts = sorted(section_titles)
    chunks = []
    for idx, (start, end, n_tokens) in enumerate(spans):
        pos = bisect.bisect_right(starts, start) - 1
        section = section_titles[starts[pos]] if pos >= 0 else None
        chunks.append(Chunk(idx=idx, start=start, end=end, text=text[start:end], n_tokens=n_tokens, section=section))
    return chunks


def fixed_window_chunks(text: str, budget: int, count_tokens: TokenCounter, overlap: int = 0) -> list[Chunk]:
    """Windows of at most `budget` tokens, each starting `overlap` tokens before
    the previous one ended (approximately: overlap is measured in whole words)."""
    if not 0 <= overlap < budget:
        raise ValueError("overlap must be >= 0 and smaller than the budget")
    words: list[_Piece] = []
    offset = 0
    count_words = local_counter(text, count_tokens)
    for word in split_words(text):
        _refine(word, offset, budget, count_words, words, level=len(_SPLITTERS))
        offset += len(word)
    chunks: list[Chunk] = []
    i = 0
    while i < len(words):
        used, j = 0, i
        while j < len(words) and used + words[j].n_tokens <= budget:
            used += words[j].n_tokens
            j += 1
        j = max(j, i + 1)
        while j - i > 1 and count_tokens(text[words[i].start:words[j - 1].end]) > budget:
            j -= 1
        start, end = words[i].start, words[j - 1].end
        body = text[start:end]
        chunks.append(Chunk(idx=len(chunks), start=start, end=end, text=body, n_tokens=count_tokens(body)))
        if j >= len(words):
            break
        back, k = 0, j
        while k - 1 > i and back + words[k - 1].n_tokens <= overlap:
            k -= 1
            back += words[k].n_tokens
        i = k
    return chunks
