"""The fine stage: a kept function cut into blocks where per-line perplexity
spikes (`entropy_blocks`), and the exact 0/1 knapsack that chooses the
blocks within the function's share of the budget."""

from __future__ import annotations

import math
from typing import Sequence

from pipelines.compress.longcodezip.lines import split_lines
from pipelines.compress.longcodezip.settings import Scorer


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
