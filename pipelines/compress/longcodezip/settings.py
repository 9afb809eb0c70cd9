"""What LongCodeZip is tuned by (`LongCodeZipSettings`) and what it needs
from a scoring model (`Scorer`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


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
