"""One ranking of the function chunks from both signals (`fuse`), and the
chunks taken by rank within the coarse budget (with the class headers a
kept method brings: `select_with_headers`)."""

from __future__ import annotations

import math
from typing import Sequence

from pipelines.compress.common import normalise


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
