"""Faithfulness: are a summary's claims supported by the document it summarizes?

After FABLES (Kim et al. 2024, "FABLES: Evaluating faithfulness and content
selection in book-length summarization"), where readers of each book broke
summaries into claims and labelled every claim against the book. Here an
LLM does both steps, with retrieval standing in for the reader's memory:

1. **Claims.** Each summary sentence is broken into atomic, self-contained
   claims (`prompts/faithfulness_claims.txt`; the whole summary is in the
   prompt so pronouns can be resolved; one sentence per call, answered as
   "- claim" lines). An answer that yields no claim is asked again (a bounded
   number of times, with a format reminder and a new seed so the request
   hash differs and the cache does not replay it); a sentence still without
   claims is stored as one `unparseable` row, never silently dropped.
2. **Evidence.** Each claim retrieves the `evidence_k` best passages of the
   run's own source chunks (`pipelines.retrieval`: MiniLM embeddings and BM25,
   fused by rank).
3. **Verdict.** A judge labels the claim against those passages
   (`prompts/faithfulness_judge.txt`) as Yes / PartialSupport / No /
   Inapplicable and quotes the deciding words. The quote is looked up in the
   passages (`evidence_found`), so an invented quote is visible. A verdict
   that does not parse is asked again the same bounded way, then stored as
   `unparseable` (no label).

Both templates put the shared part first (instructions and worked examples;
for claims also the whole summary) and the part that varies last, so
consecutive calls share their prefix: llama.cpp reuses its KV cache and API
providers their prompt caches. Judge calls for different claims are
independent and run `concurrency` at a time (for API judges; a local model
answers one at a time and gains from the shared prefix instead).

The scores: `yes` = Yes / judged claims and `supported` = (Yes +
PartialSupport) / judged claims, where judged claims are those with a label
(Inapplicable included, as in FABLES's per-model figures); `unparseable`
claims and sentences are counted beside them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

import prompts
from prompts import Fenced
from pipelines.text import sentences as split_sentences
from scoring.asking import RetryPolicy, ask_until_parsed, each, join_notes

LABELS = ("Yes", "PartialSupport", "No", "Inapplicable")
EXTRACT_TEMPLATE = "faithfulness_claims"
JUDGE_TEMPLATE = "faithfulness_judge"
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_EVIDENCE_K = 3
RETRY_TEMPERATURE = 0.7
EXTRACT_MAX_TOKENS = 160
JUDGE_MAX_TOKENS = 80
MAX_CLAIMS_PER_SENTENCE = 12
# A base model that goes on writing invents the next turn: stop there.
EXTRACT_STOP = ("\n\n", "\nSentence ", "\n<")
JUDGE_STOP = ("\n\n", "\nClaim", "\nPassage")
QUOTE_MATCH = 90  # rapidfuzz partial_ratio at which a quote counts as found in the passages


class FaithfulnessError(ValueError):
    pass


# -- parsing ---------------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*•–]|\d{1,3}[.)]|\(\d{1,3}\)|claim\s*\d{0,3}\s*[:.)-])\s*(?P<claim>.*\S)?\s*$",
                     re.IGNORECASE)
_NONE_CLAIM = re.compile(r"^[\s\"'(\[]*(none|no claims?|nothing|n/?a)[\s.\"')\]]*$", re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)


def _clean_claim(text: str) -> str:
    text = " ".join(str(text).split()).strip().strip('"“”').strip()
    return text


def parse_claims(answer: str, *, echo_of: str = "") -> tuple[list[str] | None, str | None]:
    """(claims, None), ([], None) for an explicit "none", or (None, why)."""
    text = (answer or "").strip()
    if not text:
        return None, "empty answer"
    fenced = _FENCE.search(text)
    body = fenced.group(1).strip() if fenced and fenced.group(1).strip() else text
    raw: list[str] = []
    declared_none = False
    if body.startswith("["):
        try:
            data = json.loads(body[:body.rfind("]") + 1])
        except (json.JSONDecodeError, ValueError):
            data = None
        if isinstance(data, list):
            for item in data:
                value = item.get("claim") if isinstance(item, dict) else item
                if isinstance(value, str):
                    raw.append(value)
            if not data:
                declared_none = True
    if not raw and not declared_none:
        started = False
        for line in body.replace("\r", "").split("\n"):
            match = _BULLET.match(line)
            if match:
                started = True
                claim = match.group("claim") or ""
                if _NONE_CLAIM.match(claim):
                    declared_none = True
                elif claim:
                    raw.append(claim)
            elif started and line.strip():
                break  # chatter after the list
            elif not started and _NONE_CLAIM.match(line):
                declared_none = True
                break
    echo = " ".join(echo_of.lower().split())
    claims, seen, dropped = [], set(), []
    for claim in raw:
        claim = _clean_claim(claim)
        key = claim.lower().rstrip(".")
        if len(claim.split()) < 3 or len(claim.split()) > 80:
            dropped.append("length")
            continue
        if key in seen:
            dropped.append("repeat")
            continue
        if echo and key in echo:
            dropped.append("prompt echo")
            continue
        seen.add(key)
        claims.append(claim if claim[-1] in ".!?\"'”’" else claim + ".")
    if claims:
        return claims[:MAX_CLAIMS_PER_SENTENCE], None
    if declared_none and not raw:
        return [], None
    if raw:
        return None, f"no usable claim ({', '.join(sorted(set(dropped)))})"
    return None, "no claim lines ('- ...')"


_LABEL_WORDS = (
    ("PartialSupport", re.compile(r"^(partial(ly)?[\s_-]*(support(ed)?)?|partly[\s_-]*supported|mixed)$")),
    ("Yes", re.compile(r"^(yes|supported|fully[\s_-]*supported|true|correct|faithful)$")),
    ("No", re.compile(r"^(no|not[\s_-]*supported|unsupported|contradicted|contradiction|false|incorrect|unfaithful)$")),
    ("Inapplicable", re.compile(r"^(inapplicable|not[\s_-]*applicable|n/?a|unverifiable|cannot[\s_-]*be[\s_-]*verified)$")),
)
_LABEL_LINE = re.compile(r"^[\s>*#•\-\d.)]*\**\s*(?:label|verdict|answer)\s*\**\s*[:：]\s*\**(?P<rest>.*)$", re.IGNORECASE)
_EVIDENCE_LINE = re.compile(r"^[\s>*#•\-\d.)]*\**\s*(?:evidence|quote|quotes)\s*\**\s*[:：]\s*\**(?P<rest>.*)$",
                            re.IGNORECASE)
_INLINE_EVIDENCE = re.compile(r"\b(?:evidence|quotes?)\s*\**\s*[:：]\s*\**(?P<rest>.*)$", re.IGNORECASE)


def normalise_label(text: str) -> str | None:
    cleaned = re.sub(r"[\s*_`\"'“”.\[\]()]+$", "", re.sub(r"^[\s*_`\"'“”\[\]()]+", "", str(text))).strip().lower()
    cleaned = re.sub(r"\s+", " ", cleaned)
    for label, pattern in _LABEL_WORDS:
        if pattern.match(cleaned):
            return label
    return None


@dataclass(frozen=True)
class Verdict:
    label: str
    evidence: tuple[str, ...]


def parse_verdict(answer: str) -> tuple[Verdict | None, str | None]:
    """(verdict, None) or (None, why it could not be parsed)."""
    text = (answer or "").strip()
    if not text:
        return None, "empty answer"
    lines = text.replace("\r", "").split("\n")
    label, evidence, seen_label = None, None, False
    for line in lines:
        match = _LABEL_LINE.match(line)
        if match:
            if seen_label:
                break  # a second answer starts: keep the first
            seen_label = True
            rest = match.group("rest").strip()
            first = re.split(r"\s*(?:[,;(—]|\s-\s|\.\s)", rest, maxsplit=1)[0]
            label = normalise_label(first) or normalise_label(rest.split()[0] if rest.split() else "")
            inline = _INLINE_EVIDENCE.search(rest)
            if inline and evidence is None:
                evidence = inline.group("rest")
            continue
        match = _EVIDENCE_LINE.match(line)
        if match and evidence is None:
            evidence = match.group("rest")
    if not seen_label:
        first = lines[0].strip()
        label = normalise_label(first) or normalise_label(re.split(r"[\s,.;:]", first, maxsplit=1)[0])
        if label is None:
            return None, "no 'Label:' line"
    if label is None:
        return None, f"unknown label: {text.splitlines()[0][:80]}"
    return Verdict(label, _quotes(evidence)), None


def _quotes(evidence: str | None) -> tuple[str, ...]:
    if evidence is None:
        return ()
    evidence = evidence.strip()
    if normalise_label(evidence) == "No" or re.fullmatch(r"[\s\"'.]*(none|n/?a|-)?[\s\"'.]*", evidence, re.I):
        return ()
    # Quotes pair up in order ("a"... "b": a and b, never the '... ' between them).
    segments = evidence.replace("“", '"').replace("”", '"').split('"')
    quoted = [q.strip() for q in segments[1::2] if len(q.strip()) >= 3 and re.search(r"\w", q)]
    return tuple(quoted) if quoted else (evidence.strip('"“” '),)


def quotes_found(quotes: Sequence[str], passages: str) -> bool | None:
    """Whether every quote occurs (near enough) in the passages; None without quotes."""
    if not quotes:
        return None
    from rapidfuzz import fuzz

    haystack = " ".join(passages.split()).lower()
    return all(fuzz.partial_ratio(" ".join(q.split()).lower(), haystack) >= QUOTE_MATCH for q in quotes)


# -- the checker -----------------------------------------------------------------------


@dataclass
class Claim:
    claim_num: int
    sentence_num: int
    sentence: str
    claim: str | None  # None: the sentence's claims could not be extracted
    status: str = "pending"  # ok | unparseable | unparseable_claims | imported
    label: str | None = None
    evidence: tuple[str, ...] = ()
    evidence_found: bool | None = None
    reason: tuple[str, ...] = ()
    chunk_ids: tuple[int, ...] = ()
    passages: list[dict] = field(default_factory=list)
    attempts: int = 0
    extract_attempts: int = 0
    answer: str | None = None
    extract_request_hash: str | None = None
    judge_request_hash: str | None = None
    reference_label: str | None = None
    note: str | None = None


@dataclass
class FaithfulnessResult:
    claims: list[Claim]
    config: dict = field(default_factory=dict)

    def count(self, label: str) -> int:
        return sum(1 for c in self.claims if c.label == label)

    @property
    def n_claims(self) -> int:
        return sum(1 for c in self.claims if c.claim is not None)

    @property
    def n_judged(self) -> int:
        return sum(1 for c in self.claims if c.label is not None)

    @property
    def n_unparseable(self) -> int:
        return sum(1 for c in self.claims if c.claim is not None and c.label is None)

    @property
    def n_unparseable_sentences(self) -> int:
        return sum(1 for c in self.claims if c.claim is None)

    @property
    def yes(self) -> float | None:
        return self.count("Yes") / self.n_judged if self.n_judged else None

    @property
    def supported(self) -> float | None:
        return (self.count("Yes") + self.count("PartialSupport")) / self.n_judged if self.n_judged else None

    def values(self) -> list[tuple[str, float | None]]:
        return [
            ("yes", self.yes), ("supported", self.supported), ("claims", self.n_claims), ("judged", self.n_judged),
            ("unparseable", self.n_unparseable), ("unparseable_sentences", self.n_unparseable_sentences),
            ("n_yes", self.count("Yes")), ("n_partial", self.count("PartialSupport")), ("n_no", self.count("No")),
            ("n_inapplicable", self.count("Inapplicable")),
        ]


_EXTRACT_REMINDERS = (
    "",
    '\n\nAnswer with the claims only, one per line, each line starting with "- ".',
    '\n\nFormat reminder: lines that start with "- ", one self-contained claim each, or "- none".',
)
_JUDGE_REMINDERS = (
    "",
    '\n\nAnswer in two lines: "Label: Yes", "Label: PartialSupport", "Label: No" or "Label: Inapplicable", '
    'then "Evidence:" and a quote from the passages.',
    '\n\nFormat reminder. Line 1: "Label:" and one of Yes, PartialSupport, No, Inapplicable. '
    'Line 2: "Evidence:" and the deciding words in double quotes, or none.',
)


def render_passages(texts: Sequence[str], chunk_ids: Sequence[int | None] = ()) -> Fenced:
    """The passages block of the judge prompt, numbered in the given order."""
    if not texts:
        return Fenced("Passage 1:\n" + Fenced.around("excerpt", "(no passage)"))
    blocks = []
    for i, text in enumerate(texts):
        chunk = chunk_ids[i] if i < len(chunk_ids) else None
        where = f" (chunk {chunk})" if chunk is not None else ""
        blocks.append(f"Passage {i + 1}{where}:\n" + Fenced.around("excerpt", text))
    return Fenced("\n".join(blocks))


class FaithfulnessChecker:
    """Extracts claims, retrieves evidence and judges claims through a RecordingLLM.

    `extract_template` / `judge_template` name prompt files (or are
    PromptTemplate objects: the prefix-reuse benchmark passes reordered ones)."""

    def __init__(
        self,
        llm,
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        evidence_k: int = DEFAULT_EVIDENCE_K,
        concurrency: int = 1,
        temperature: float = 0.0,
        retry_temperature: float = RETRY_TEMPERATURE,
        extract_max_tokens: int = EXTRACT_MAX_TOKENS,
        judge_max_tokens: int = JUDGE_MAX_TOKENS,
        extract_template=EXTRACT_TEMPLATE,
        judge_template=JUDGE_TEMPLATE,
        step: str = "faithfulness",
    ):
        if max_attempts < 1 or evidence_k < 1 or concurrency < 1:
            raise FaithfulnessError("max_attempts, evidence_k and concurrency must be at least 1")
        self.llm = llm
        self.evidence_k = evidence_k
        self.concurrency = concurrency
        self.extract_max_tokens = extract_max_tokens
        self.judge_max_tokens = judge_max_tokens
        self.extract_template = _template(extract_template)
        self.judge_template = _template(judge_template)
        self.step = step
        self.policy = RetryPolicy(max_attempts, temperature, retry_temperature)

    @property
    def judge_model(self) -> str | None:
        backend = getattr(self.llm, "backend", None)
        return f"{backend.backend}:{backend.model}" if backend is not None else None

    def config(self) -> dict:
        return {
            "model": self.judge_model, "extract_template": self.extract_template.name,
            "extract_template_hash": self.extract_template.sha256, "judge_template": self.judge_template.name,
            "judge_template_hash": self.judge_template.sha256, "max_attempts": self.policy.max_attempts,
            "evidence_k": self.evidence_k, "temperature": self.policy.temperature,
            "retry_temperature": self.policy.retry_temperature,
        }

    def check(self, summary: str, index, *, first: int | None = None, max_claims: int | None = None) -> FaithfulnessResult:
        """Claims of `summary` (its `first` sentences only, if given; at most
        `max_claims` judged), each judged against passages of `index` (a
        pipelines.retrieval.SourceIndex)."""
        claims = self.extract(summary, first=first)
        if max_claims is not None:
            kept = [c for c in claims if c.claim is not None][:max_claims]
            claims = kept + [c for c in claims if c.claim is None]
        self.retrieve(claims, index)
        self._each(self.judge, [c for c in claims if c.claim is not None])
        config = {**self.config(), "passage_words": getattr(index, "passage_words", None)}
        return FaithfulnessResult(claims, config)

    # claims ---------------------------------------------------------------------------

    def extract(self, summary: str, first: int | None = None) -> list[Claim]:
        sentences = split_sentences(summary)[:first]
        per_sentence = self._each(lambda item: self._extract_sentence(summary, *item), list(enumerate(sentences, 1)))
        claims = [c for group in per_sentence for c in group]
        for number, claim in enumerate(claims, 1):
            claim.claim_num = number
        return claims

    def _extract_sentence(self, summary: str, number: int, sentence: str) -> list[Claim]:
        answer = ask_until_parsed(
            self.llm,
            lambda reminder: self.extract_template.render(summary=summary, number=number, sentence=sentence,
                                                          reminder=reminder),
            lambda text, prompt: parse_claims(text, echo_of=prompt.messages[0]["content"]),
            policy=self.policy, reminders=_EXTRACT_REMINDERS, max_tokens=self.extract_max_tokens,
            step=f"{self.step}:claims:s{number}", stop=EXTRACT_STOP)
        if answer.value is not None:
            return [Claim(0, number, sentence, text, extract_attempts=answer.attempts,
                          extract_request_hash=answer.request_hash, note=answer.note) for text in answer.value]
        return [Claim(0, number, sentence, None, status="unparseable_claims", answer=answer.text,
                      extract_attempts=answer.attempts, extract_request_hash=answer.request_hash, note=answer.note)]

    # evidence -------------------------------------------------------------------------

    def retrieve(self, claims: list[Claim], index) -> None:
        wanted = [c for c in claims if c.claim is not None]
        for claim, hits in zip(wanted, index.search([c.claim for c in wanted], self.evidence_k)):
            chosen = sorted(hits, key=lambda h: index.passages[h.passage].start)  # document order reads better
            claim.passages = [{
                "chunk": index.passages[h.passage].chunk_idx, "start": index.passages[h.passage].start,
                "end": index.passages[h.passage].end, "text": index.passages[h.passage].text,
                "dense": round(h.dense, 4), "lexical": round(h.lexical, 4), "rank": hits.index(h) + 1,
            } for h in chosen]
            claim.chunk_ids = tuple(dict.fromkeys(p["chunk"] for p in claim.passages))

    # verdicts -------------------------------------------------------------------------

    def judge(self, claim: Claim) -> None:
        """Label one claim in place against `claim.passages` (asking again while the answer does not parse)."""
        texts = [p["text"] for p in claim.passages]
        block = render_passages(texts, [p.get("chunk") for p in claim.passages])
        answer = ask_until_parsed(
            self.llm, lambda reminder: self.judge_template.render(passages=block, claim=claim.claim, reminder=reminder),
            lambda text, prompt: parse_verdict(text), policy=self.policy, reminders=_JUDGE_REMINDERS,
            max_tokens=self.judge_max_tokens, step=f"{self.step}:judge:c{claim.claim_num}", stop=JUDGE_STOP)
        claim.attempts, claim.answer, claim.judge_request_hash = answer.attempts, answer.text, answer.request_hash
        claim.note = join_notes(claim.note, answer.note)
        if answer.value is None:
            claim.status, claim.label = "unparseable", None
            return
        claim.status, claim.label, claim.evidence = "ok", answer.value.label, answer.value.evidence
        claim.evidence_found = quotes_found(answer.value.evidence, "\n".join(texts))

    def _each(self, work, items: list) -> list:
        return each(work, items, self.concurrency, "faithfulness")


def _template(template):
    return prompts.load(template) if isinstance(template, str) else template


# -- rows --------------------------------------------------------------------------------


def claim_rows(run_id, summary_id, claims: Sequence[Claim], *, source: str, judge_model: str | None, config_hash: str,
               created, set_label: str | None = None) -> list[dict]:
    from pipelines.llm.recording import new_id

    return [{
        "claim_id": new_id(), "run_id": run_id, "summary_id": summary_id, "set_label": set_label, "source": source,
        "claim_num": c.claim_num, "sentence_num": c.sentence_num, "sentence": c.sentence, "claim": c.claim,
        "status": c.status, "label": c.label, "reference_label": c.reference_label, "evidence": list(c.evidence),
        "evidence_found": c.evidence_found, "reason": list(c.reason), "chunk_ids": list(c.chunk_ids),
        "passages": c.passages, "judge_model": judge_model, "attempts": c.attempts,
        "extract_attempts": c.extract_attempts, "answer": c.answer, "extract_request_hash": c.extract_request_hash,
        "judge_request_hash": c.judge_request_hash, "note": c.note, "config_hash": config_hash, "created_at": created,
    } for c in claims]
