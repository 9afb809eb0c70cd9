"""What both compressors share: the result they return, and the allocation of
one overall token budget over parts of different importance."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

TokenCounter = Callable[[str], int]


@dataclass
class ChunkReport:
    """One chunk of the input and what the compressor did with it."""

    idx: int
    method: str  # scope | longcodezip
    kind: str  # prose | function | method | class | module | tail | code
    start: int  # character span of the chunk in the input
    end: int
    original_tokens: int
    compressed_tokens: int
    target_ratio: float  # the share of its tokens this chunk was asked to keep
    importance: float  # the score that ranked it (SCOPE: similarity; LongCodeZip: PPL drop)
    action: str  # verbatim | rewritten | extractive | kept | pruned | header (a class's header line alone) | dropped
    text: str  # what the chunk became ("" when dropped)
    attempts: int = 0  # LLM rewrites tried (SCOPE)
    fallback_reason: str | None = None  # why an LLM rewrite was not used
    keywords: list[str] = field(default_factory=list)  # required before rewriting (SCOPE)
    keywords_kept: list[str] = field(default_factory=list)
    name: str | None = None  # function / class name (LongCodeZip)
    detail: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def fell_back(self) -> bool:
        return self.action == "extractive"


@dataclass
class CompressionResult:
    """A compressed text and how it was made; `ratio` is compressed / original
    tokens, both counted with the same tokenizer (the summarizing backend's)."""

    method: str  # none | scope | longcodezip | mixed
    text: str
    original_tokens: int
    compressed_tokens: int
    target_ratio: float
    chunks: list[ChunkReport] = field(default_factory=list)
    seconds: float = 0.0
    stats: dict = field(default_factory=dict)
    # LongCodeZip: the text as pieces (start, end, text, verbatim) of the input,
    # in order; "".join(texts) == text (pipelines.compress.chunk_compression.split_result)
    layout: list = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.compressed_tokens / self.original_tokens if self.original_tokens else 1.0

    @property
    def tokens_saved(self) -> int:
        return self.original_tokens - self.compressed_tokens

    @property
    def fallbacks(self) -> list[ChunkReport]:
        """SCOPE chunks whose LLM rewrite failed its checks and were compressed extractively."""
        return [c for c in self.chunks if c.fell_back]

    def summary_line(self) -> str:
        fallback = f", {len(self.fallbacks)} extractive fallbacks" if self.method in ("scope", "mixed") else ""
        return (
            f"{self.method}: {self.original_tokens} -> {self.compressed_tokens} tokens "
            f"(ratio {self.ratio:.3f}, target {self.target_ratio:.3f}), {len(self.chunks)} chunks{fallback}, "
            f"{self.seconds:.1f} s"
        )

    def as_dict(self, with_text: bool = True) -> dict:
        out = {
            "method": self.method, "original_tokens": self.original_tokens,
            "compressed_tokens": self.compressed_tokens, "ratio": round(self.ratio, 4),
            "target_ratio": self.target_ratio, "seconds": round(self.seconds, 3), "stats": self.stats,
            "chunks": [
                {**{k: v for k, v in asdict(c).items() if with_text or k != "text"}, "ratio": round(c.ratio, 4)}
                for c in self.chunks
            ],
        }
        if with_text:
            out["text"] = self.text
        return out


def check_ratio(ratio: float) -> float:
    if not (isinstance(ratio, (int, float)) and 0 < ratio <= 1 and math.isfinite(ratio)):
        raise ValueError(f"compression ratio must be in (0, 1], got {ratio!r}")
    return float(ratio)


def normalise(scores: Sequence[float]) -> list[float]:
    """Min-max scale to [0, 1]; non-finite scores get 0, all-equal scores 0.5."""
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        return [0.5] * len(scores)
    lo, hi = min(finite), max(finite)
    if hi - lo < 1e-12:
        return [0.5 if math.isfinite(s) else 0.0 for s in scores]
    return [(s - lo) / (hi - lo) if math.isfinite(s) else 0.0 for s in scores]


def allocate_ratios(
    sizes: Sequence[int],
    importance: Sequence[float],
    budget: float,
    beta: float = 0.5,
    floor: float | Sequence[float] = 0.0,
    scale: bool = True,
) -> list[float]:
    """Per-part keep ratios r_i in [floor_i, 1] with sum(r_i * size_i) == budget
    (as near as the bounds allow), more important parts keeping more.

    Each part's ratio is proportional to its weight 1 + beta * (2 * s_i - 1),
    s_i its importance min-max scaled to [0, 1] (or taken as given, already
    in [0, 1], with scale=False): beta=0 gives one uniform ratio, beta=1
    ratios from 0 to 2x the mean. The common factor is found by bisection,
    re-spreading what the clamps at 1 and at the floors leave over. `floor`
    is one minimum for all parts or one per part. This is SCOPE's dynamic
    compression ratio and LongCodeZip's per-function budget share."""
    import numpy as np

    n = len(sizes)
    if n == 0:
        return []
    floors = np.full(n, float(floor)) if isinstance(floor, (int, float)) else np.asarray(floor, dtype=np.float64)
    floors = np.clip(floors, 0.0, 1.0)
    size = np.asarray(sizes, dtype=np.float64)
    total = float(size.sum())
    if total <= 0 or budget >= total:
        return [1.0] * n
    if budget <= float((floors * size).sum()):
        return [float(f) for f in floors]
    s = np.asarray(normalise(importance) if scale else [min(1.0, max(0.0, x)) for x in importance], dtype=np.float64)
    weights = np.maximum(1e-6, 1.0 + beta * (2.0 * s - 1.0))

    def ratios(factor: float):
        return np.minimum(1.0, np.maximum(floors, factor * weights))

    lo, hi = 0.0, 1.0 / float(weights.min())
    for _ in range(100):
        mid = (lo + hi) / 2
        if float((ratios(mid) * size).sum()) < budget:
            lo = mid
        else:
            hi = mid
    return [float(r) for r in ratios((lo + hi) / 2)]
