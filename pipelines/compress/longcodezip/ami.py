"""The AMI signal: the query's perplexity with and without each function,
PPL(q) - PPL(q | function), measured by the scoring model and journaled."""

from __future__ import annotations

import math
import time

from pipelines.compress.longcodezip.settings import LongCodeZipSettings, Scorer
from pipelines.compress.longcodezip.structure import _IDENTIFIER, _STOPWORDS


class AMIScorer:
    """PPL(q) - PPL(q | function) for many functions, one model pass each.

    Each function is read whole (its last `max_context_tokens`), followed by
    the whole query (up to `max_query_tokens`); logits rows are computed only
    at up to `max_query_positions` of the query's tokens, those inside
    identifiers the code also uses (where a definition can make the query
    predictable), because each row costs several times a token of the model's
    body. Mean NLLs are journaled like LLM calls (`journal`: a
    `pipelines.llm.recording.CallJournal`; one row per function, keyed by the
    model file, the settings, the query and the function's text), so a
    re-run, or another ratio, scores nothing again."""

    VERSION = 2  # part of the cache key: bump when what is measured changes

    def __init__(self, scorer: Scorer, settings: LongCodeZipSettings, journal=None, run_id: str | None = None,
                 step: str = "compress:longcodezip"):
        self.scorer = scorer
        self.settings = settings
        self.journal = journal
        self.run_id = run_id
        self.step = step
        self.hits = 0
        self.misses = 0

    def identity(self) -> dict:
        s = self.settings
        fingerprint = None
        path = getattr(self.scorer, "path", None)
        if path is not None:
            try:
                stat = path.stat()
                fingerprint = f"{path.name}:{stat.st_size}"
            except OSError:
                fingerprint = str(path)
        return {"backend": "llamacpp-logprobs", "model": getattr(self.scorer, "model", type(self.scorer).__name__),
                "file": fingerprint, "n_ctx": getattr(self.scorer, "n_ctx", None), "version": self.VERSION,
                "max_query_tokens": s.max_query_tokens, "max_query_positions": s.max_query_positions,
                "max_context_tokens": s.max_context_tokens}

    def score(self, texts: dict[int, str], query: str, code: str) -> dict[int, float]:
        s = self.settings
        query_tokens = self.scorer.tokenize(query)[: s.max_query_tokens]
        positions = self._query_positions(query, query_tokens, code)
        identity = self.identity()
        base = self._cached_nll(identity, query_tokens, positions, "")
        out = {}
        for i, text in texts.items():
            if not text.strip():
                out[i] = float("-inf")
                continue
            nll = self._cached_nll(identity, query_tokens, positions, text.rstrip("\n") + "\n\n")
            out[i] = math.exp(base) - math.exp(nll) if math.isfinite(nll) and math.isfinite(base) else float("-inf")
        return out

    def _query_positions(self, query: str, query_tokens: list[int], code: str) -> list[int]:
        """Indices of the query tokens to score (see the class doc)."""
        if not query_tokens:
            return []
        vocabulary = set(_IDENTIFIER.findall(code))
        raw = query.encode("utf-8")
        spans = [(len(query[: m.start()].encode("utf-8")), len(query[: m.end()].encode("utf-8")))
                 for m in _IDENTIFIER.finditer(query) if m.group() in vocabulary and m.group() not in _STOPWORDS]
        offsets = self.scorer.token_offsets(query_tokens)
        chosen = []
        k = 0
        for j, offset in enumerate(offsets):
            while k < len(spans) and spans[k][1] <= offset:
                k += 1
            if k < len(spans) and spans[k][0] <= offset < spans[k][1] and offset < len(raw):
                chosen.append(j)
        if not chosen:
            chosen = list(range(len(query_tokens)))
        limit = self.settings.max_query_positions
        if len(chosen) > limit:  # spread over the whole query rather than its start
            chosen = [chosen[round(t * (len(chosen) - 1) / (limit - 1))] for t in range(limit)] if limit > 1 else chosen[:1]
        return sorted(set(chosen))

    def _cached_nll(self, identity: dict, query_tokens: list[int], positions: list[int], context: str) -> float:
        import hashlib
        import json

        request = json.dumps({"query_tokens": query_tokens, "positions": positions,
                              "context_sha256": hashlib.sha256(context.encode("utf-8")).hexdigest()}, sort_keys=True)
        key = hashlib.sha256(json.dumps({"model": identity, "template": "longcodezip_ami", "request": request},
                                        sort_keys=True).encode("utf-8")).hexdigest()
        if self.journal is not None:
            hit = self.journal.lookup(key)
            if hit is not None:
                self.hits += 1
                return float(json.loads(hit.response)["mean_nll"])
        self.misses += 1
        started = time.perf_counter()
        nll, evaluated = self._nll(query_tokens, positions, context)
        if self.journal is not None:
            self._record(key, identity, request, nll, evaluated, time.perf_counter() - started)
        return nll

    def _nll(self, query_tokens: list[int], positions: list[int], context: str) -> tuple[float, int]:
        s = self.settings
        context_tokens = self.scorer.tokenize(context) if context else []
        room = min(s.max_context_tokens, self.scorer.n_ctx - 2 - len(query_tokens))
        context_tokens = context_tokens[max(0, len(context_tokens) - max(0, room)):] if room > 0 else []
        bos = getattr(self.scorer, "bos_token", None)
        head = ([bos] if bos is not None else []) + context_tokens
        tokens = head + list(query_tokens)
        wanted = [len(head) + j for j in positions if len(head) + j >= 1]
        if not wanted:
            return float("nan"), 0
        if hasattr(self.scorer, "logprobs_at"):
            logprobs = self.scorer.logprobs_at(tokens, wanted)
        else:  # a scorer without position selection: score everything, keep the positions
            import numpy as np

            every = np.asarray(self.scorer.token_logprobs(tokens, first=wanted[0]), dtype=np.float64)
            logprobs = every[[p - wanted[0] for p in wanted]]
        return -float(sum(float(x) for x in logprobs)) / len(logprobs), len(tokens)

    def _record(self, key: str, identity: dict, request: str, nll: float, evaluated: int, seconds: float) -> None:
        import json

        from pipelines.llm.recording import CallRecord, new_id

        self.journal.record(CallRecord(
            call_id=new_id(), run_id=self.run_id, request_hash=key, backend=identity["backend"],
            model=identity["model"], template="longcodezip_ami", template_hash=f"v{self.VERSION}", step=self.step,
            request=request, response=json.dumps({"mean_nll": nll}), finish_reason="scored",
            input_tokens=evaluated, cached_input_tokens=0, output_tokens=0, latency_s=seconds, cost_usd=0.0,
            cached=False, status="ok", error=None, created_at=time.time(),
        ))
