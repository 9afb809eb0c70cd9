"""SCOPE: generative prompt compression for prose.

After "SCOPE: A Generative Approach for LLM Prompt Compression" (Zhang, Wang
and Wang, 2025): rather than deleting tokens, split the text into
semantically coherent chunks, have an LLM rewrite each one more concisely,
and put the rewrites back together in order. The paper's five techniques,
each a function below:

1. **Optimized semantic chunking** (`semantic_chunks`): sentences are
   embedded with the packaged all-MiniLM-L6-v2; the similarity across each
   gap between sentences is measured between the mean embeddings of a few
   sentences on either side (smoother than one sentence to the next), and a
   chunk ends where that similarity drops: a local minimum below the given
   percentile of all gaps. Size limits: a chunk also ends before it would
   grow past `max_chunk_tokens`.
2. **Outlier chunk handling** (`handle_outliers`): before any rewriting, a
   chunk longer than `max_chunk_tokens` (one overlong sentence) is split at
   clause, then word boundaries, and a chunk shorter than `min_chunk_tokens`
   is merged into the neighbour it is more similar to.
3. **Dynamic compression ratio** (`allocate_ratios`): each chunk's importance
   is its embedding's similarity to the query (or, without one, to the whole
   text's centroid); each chunk's target ratio grows with its importance and
   one common factor is solved for so that the targets add up to the
   requested overall ratio.
4. **Compression prioritization** (`ScopeCompressor.compress`): chunks are
   compressed from the least to the most important. After each one the
   targets of the rest are solved again from the budget actually left, so
   rewrites that come out short or long are absorbed by the more important
   chunks; a chunk whose target reaches `verbatim_at` of its length is kept
   verbatim, so the most important chunks are the ones left untouched.
5. **Keyword maintaining** (`pipelines.compress.keywords`): named entities,
   numbers and salient terms of each chunk are found before rewriting,
   named in the prompt, and checked in the answer.

Each rewrite is checked: it must be prose (not empty, no list, heading or
markup, not repetitive, not an echo of the instructions, ending on a
complete sentence); within its target
length (+`length_tolerance`) but not far below it (at least
`min_length_share` of it, and no shorter than the chunks still to come can
make up for, within `ratio_tolerance` of the overall budget); and it must
keep every keyword. A failed check is retried with a different seed and a
note naming what went wrong (asking for fewer words after a too-long
answer), at most `max_attempts` times (a call that fails counts as an
attempt); then the chunk falls back to extractive compression at its target
(its most important sentences, in order, preferring those that carry the
keywords), so the overall ratio holds with any model. Every chunk's report
says what was done, in how many attempts, and why a chunk fell back. The
ratio is counted with the backend's own tokenizer.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import prompts
import pipelines.compress.keywords as kw
from pipelines.compress.common import ChunkReport, CompressionResult, allocate_ratios, check_ratio, normalise
from pipelines.llm.base import LLMCallError, PromptTooLongError
from pipelines.text import count_words, ends_with_sentence_end, split_clauses, split_sentences, split_words, trim_to_last_sentence

TEMPLATE = "scope_rewrite"


@dataclass(frozen=True)
class ScopeSettings:
    min_chunk_tokens: int = 96  # outliers below this are merged into a neighbour
    max_chunk_tokens: int = 320  # chunks end before this; outliers above it are split
    breakpoint_percentile: float = 30.0  # similarity drops below this percentile of gaps end a chunk
    similarity_window: int = 2  # sentences averaged on each side of a gap
    importance_beta: float = 0.5  # spread of the per-chunk ratios around the overall one
    min_chunk_ratio: float = 0.1  # no chunk is asked to keep less than this share
    verbatim_at: float = 0.95  # a chunk asked to keep at least this share stays verbatim
    max_attempts: int = 3  # LLM rewrites per chunk before the extractive fallback
    length_tolerance: float = 0.1  # a rewrite may exceed its target by this share
    min_length_share: float = 0.4  # ... and must reach this share of it (shorter loses content and budget)
    ratio_tolerance: float = 0.05  # how far below the overall budget the chunks after a rewrite may leave it
    words_per_keyword: int = 10  # one required keyword per this many target words
    max_keywords: int = 8
    temperature: float = 0.0
    keyword_weight: float = 0.5  # extractive fallback: weight of keyword coverage against centrality


@dataclass
class Unit:
    """A sentence (or a piece of an overlong one): the atom of chunking."""

    start: int
    end: int
    text: str
    tokens: int


@dataclass
class ProseChunk:
    units: list[int]  # indices into the unit list
    start: int
    end: int
    text: str
    tokens: int
    importance: float = 0.0
    keywords: list[str] = field(default_factory=list)


# --- sentence embeddings, cached: retries and re-runs embed the same sentences ---

_EMBED_CACHE: "OrderedDict[str, object]" = OrderedDict()
_EMBED_CACHE_SIZE = 50_000
_EMBED_LOCK = threading.Lock()


def embed_cached(texts: Sequence[str]):
    """all-MiniLM-L6-v2 unit vectors (pipelines.embeddings.embed), remembering recent sentences."""
    import numpy as np

    from pipelines.embeddings import embed

    with _EMBED_LOCK:
        missing = list(dict.fromkeys(t for t in texts if t not in _EMBED_CACHE))
    if missing:
        vectors = embed(missing)
        with _EMBED_LOCK:
            for text, vector in zip(missing, vectors):
                _EMBED_CACHE[text] = vector
            while len(_EMBED_CACHE) > _EMBED_CACHE_SIZE:
                _EMBED_CACHE.popitem(last=False)
    with _EMBED_LOCK:
        rows = [_EMBED_CACHE[t] if t in _EMBED_CACHE else None for t in texts]
    if any(r is None for r in rows):  # evicted meanwhile by a huge call: embed directly
        return embed(list(texts))
    return np.asarray(rows, dtype=np.float32).reshape(len(texts), -1)


# --- 1. optimized semantic chunking --------------------------------------------


def sentence_units(text: str, count_tokens) -> list[Unit]:
    """Sentences with their trailing whitespace (whitespace-only pieces join the one before)."""
    units: list[Unit] = []
    pos = 0
    for piece in split_sentences(text):
        if units and not piece.strip():
            last = units[-1]
            units[-1] = Unit(last.start, pos + len(piece), last.text + piece, last.tokens)
        else:
            units.append(Unit(pos, pos + len(piece), piece, count_tokens(piece.strip())))
        pos += len(piece)
    return units


def gap_similarities(vectors, window: int = 2):
    """Cosine similarity across each gap i (between unit i and i+1) of the
    mean embeddings of up to `window` units on each side."""
    import numpy as np

    n = len(vectors)
    sims = np.ones(max(0, n - 1), dtype=np.float32)
    for i in range(n - 1):
        left = vectors[max(0, i - window + 1): i + 1].mean(axis=0)
        right = vectors[i + 1: i + 1 + window].mean(axis=0)
        denom = float(np.linalg.norm(left) * np.linalg.norm(right)) or 1.0
        sims[i] = float(left @ right) / denom
    return sims


def drop_gaps(sims, percentile: float) -> set[int]:
    """Gaps where similarity drops: local minima below the percentile threshold."""
    import numpy as np

    if len(sims) == 0:
        return set()
    threshold = float(np.percentile(sims, percentile))
    out = set()
    for i, s in enumerate(sims):
        left = sims[i - 1] if i > 0 else np.inf
        right = sims[i + 1] if i + 1 < len(sims) else np.inf
        if s <= threshold and s <= left and s <= right:
            out.add(i)
    return out


def semantic_chunks(units: Sequence[Unit], sims, settings: ScopeSettings) -> list[list[int]]:
    """Consecutive units grouped into chunks, ending at similarity drops or
    before a chunk would exceed max_chunk_tokens."""
    drops = drop_gaps(sims, settings.breakpoint_percentile)
    chunks: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, unit in enumerate(units):
        if current and used + unit.tokens > settings.max_chunk_tokens:
            chunks.append(current)
            current, used = [], 0
        current.append(i)
        used += unit.tokens
        if i in drops:
            chunks.append(current)
            current, used = [], 0
    if current:
        chunks.append(current)
    return chunks


# --- 2. outlier chunk handling ------------------------------------------------------


def handle_outliers(units: list[Unit], chunks: list[list[int]], vectors, count_tokens,
                    settings: ScopeSettings, embed_fn) -> tuple[list[Unit], list[list[int]], object, dict]:
    """Split chunks over max_chunk_tokens, then merge chunks under
    min_chunk_tokens into their more similar neighbour (if the merge stays
    within max_chunk_tokens). Returns new units, chunks, vectors and counts."""
    import numpy as np

    counts = {"split": 0, "merged": 0}
    # Split: only a single overlong unit can exceed the limit after chunking.
    new_units: list[Unit] = []
    new_vectors = []
    new_chunks: list[list[int]] = []
    for chunk in chunks:
        size = sum(units[i].tokens for i in chunk)
        if size <= settings.max_chunk_tokens:
            new_chunks.append([])
            for i in chunk:
                new_chunks[-1].append(len(new_units))
                new_units.append(units[i])
                new_vectors.append(vectors[i])
            continue
        counts["split"] += 1
        pieces = _split_long(units, chunk, count_tokens, settings.max_chunk_tokens)
        piece_vectors = embed_fn([p.text.strip() or p.text for p in pieces])
        group: list[int] = []
        used = 0
        for piece, vector in zip(pieces, piece_vectors):
            if group and used + piece.tokens > settings.max_chunk_tokens:
                new_chunks.append(group)
                group, used = [], 0
            group.append(len(new_units))
            new_units.append(piece)
            new_vectors.append(vector)
            used += piece.tokens
        if group:
            new_chunks.append(group)
    units, chunks = new_units, new_chunks
    vectors = np.asarray(new_vectors, dtype=np.float32).reshape(len(units), -1)

    def size(c: list[int]) -> int:
        return sum(units[i].tokens for i in c)

    def centroid(c: list[int]):
        v = vectors[c].mean(axis=0)
        return v / (np.linalg.norm(v) or 1.0)

    while len(chunks) > 1:
        small = [j for j, c in enumerate(chunks) if size(c) < settings.min_chunk_tokens]
        mergeable = []
        for j in small:
            options = []
            for k in (j - 1, j + 1):
                if 0 <= k < len(chunks) and size(chunks[j]) + size(chunks[k]) <= settings.max_chunk_tokens:
                    options.append((float(centroid(chunks[j]) @ centroid(chunks[k])), k))
            if options:
                mergeable.append((size(chunks[j]), j, max(options)[1]))
        if not mergeable:
            break
        _, j, k = min(mergeable)
        a, b = sorted((j, k))
        chunks[a:b + 1] = [chunks[a] + chunks[b]]
        counts["merged"] += 1
    return units, chunks, vectors, counts


def _split_long(units: list[Unit], chunk: list[int], count_tokens, limit: int) -> list[Unit]:
    """Pieces of at most `limit` tokens: units as they are, overlong ones cut at clauses, then words."""
    out: list[Unit] = []
    for i in chunk:
        unit = units[i]
        if unit.tokens <= limit:
            out.append(unit)
            continue
        out.extend(_cut(unit.text, unit.start, count_tokens, limit, level=0))
    return out


def _cut(text: str, offset: int, count_tokens, limit: int, level: int) -> list[Unit]:
    splitters = (split_clauses, split_words)
    parts = splitters[min(level, 1)](text) if level < 2 else [text]
    out: list[Unit] = []
    buf, buf_start, pos = "", offset, offset
    for part in parts:
        n = count_tokens((buf + part).strip())
        if buf and n > limit:
            out.append(Unit(buf_start, pos, buf, count_tokens(buf.strip())))
            buf, buf_start = "", pos
        if not buf and count_tokens(part.strip()) > limit and level < 1:
            out.extend(_cut(part, pos, count_tokens, limit, level + 1))
            buf_start = pos + len(part)
        else:
            buf += part
        pos += len(part)
    if buf:
        out.append(Unit(buf_start, pos, buf, count_tokens(buf.strip())))
    return out


# --- 3. dynamic compression ratio: pipelines.compress.common.allocate_ratios -------


def chunk_importance(vectors, chunks: list[list[int]], units: list[Unit], query_vector=None) -> list[float]:
    """Similarity of each chunk's (length-weighted) mean embedding to the query,
    or to the centroid of the whole text when there is no query."""
    import numpy as np

    weights = np.array([max(1, u.tokens) for u in units], dtype=np.float32)
    centroids = []
    for c in chunks:
        v = (vectors[c] * weights[c, None]).sum(axis=0)
        centroids.append(v / (np.linalg.norm(v) or 1.0))
    centroids = np.asarray(centroids, dtype=np.float32)
    if query_vector is None:
        ref = (vectors * weights[:, None]).sum(axis=0)
    else:
        ref = np.asarray(query_vector, dtype=np.float32)
    ref = ref / (np.linalg.norm(ref) or 1.0)
    return [float(x) for x in centroids @ ref]


# --- 5. keyword maintaining and the rewrite checks ----------------------------------

_LIST_OR_MARKUP = re.compile(r"^\s*([-*•+]\s|\d+[.)]\s|#{1,6}\s|```|</?\w+>|\|)", re.MULTILINE)
_PREAMBLE = re.compile(
    r"^\s*(sure|okay|ok|certainly|here is|here's|here are|rewritten|shortened|rewrite|summary|passage|answer)\b[^\n]*?:\s*\n?",
    re.IGNORECASE,
)


def clean_answer(text: str) -> str:
    """Drop a leading 'Here is the rewrite:' line and surrounding quotes/fences."""
    text = text.strip()
    text = _PREAMBLE.sub("", text, count=1).strip()
    text = re.sub(r"^<excerpt>\s*|\s*</excerpt>$", "", text).strip()
    if len(text) > 1 and text[0] in "\"“" and text[-1] in "\"”" and text.count(text[0]) <= 2:
        text = text[1:-1].strip()
    return text


def prose_problem(text: str) -> str | None:
    """Why text is not acceptable prose, or None."""
    if not text.strip():
        return "empty answer"
    if _LIST_OR_MARKUP.search(text):
        return "not prose (list, heading or markup)"
    letters = sum(ch.isalpha() for ch in text)
    if letters < 0.6 * len(text.replace(" ", "").replace("\n", "")):
        return "not prose (too few letters)"
    sentences = [s.strip().lower() for s in split_sentences(text) if s.strip()]
    if len(sentences) != len(set(sentences)):
        return "not prose (repeats a sentence)"
    words = text.lower().split()
    grams = [" ".join(words[i:i + 4]) for i in range(len(words) - 3)]
    if grams and max(grams.count(g) for g in set(grams)) >= 3:
        return "not prose (repetitive)"
    if not ends_with_sentence_end(text):
        return "not prose (does not end on a complete sentence)"
    return None


def _grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9]+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def echoes_instructions(answer: str, prompt, source: str, keywords: Sequence[str] = ()) -> bool:
    """True when the answer repeats five words in a row of the prompt's
    instructions (not of the passage or the keyword list): small models
    often echo the prompt."""
    instructions = "\n".join(m["content"] for m in prompt.messages).replace(source, " ")
    if keywords:
        instructions = instructions.replace(", ".join(keywords), " ")
    return bool((_grams(answer) & _grams(instructions)) - _grams(source))


@dataclass
class Check:
    text: str
    tokens: int
    problems: list[str]
    missing: list[str]


def check_rewrite(answer: str, target_tokens: float, keywords: Sequence[str], count_tokens,
                  tolerance: float, min_tokens: float = 0.0) -> Check:
    text = clean_answer(answer)
    if text and not ends_with_sentence_end(text):
        trimmed = trim_to_last_sentence(text)  # salvage an answer cut off mid-sentence
        text = trimmed or text
    problems = []
    problem = prose_problem(text)
    if problem:
        problems.append(problem)
    tokens = count_tokens(text) if text else 0
    limit = target_tokens * (1 + tolerance) + 2
    if tokens > limit:
        problems.append(f"too long ({tokens} > {int(limit)} tokens)")
    elif text and tokens < min_tokens:
        problems.append(f"too short ({tokens} < {int(min_tokens)} tokens)")
    lost = kw.missing(keywords, text) if text else list(keywords)
    if lost and text:
        problems.append("keywords lost: " + ", ".join(lost))
    return Check(text, tokens, problems, lost)


# --- extractive fallback ---------------------------------------------------------------


def extractive(units: list[Unit], idx: list[int], vectors, target_tokens: float, keywords: Sequence[str],
               count_tokens, keyword_weight: float = 0.5, query_vector=None) -> str:
    """The chunk's most important sentences that fit target_tokens, in order.

    Importance is similarity to the chunk's centroid (or the query), plus a
    bonus for required keywords a sentence would add. What whole sentences
    leave of the target is filled with the start of the best sentence left
    out, cut at clause, then word boundaries."""
    import numpy as np

    sub = vectors[idx]
    ref = sub.mean(axis=0) if query_vector is None else np.asarray(query_vector, dtype=np.float32)
    ref = ref / (np.linalg.norm(ref) or 1.0)
    central = sub @ ref
    texts = [" ".join(units[i].text.split()) for i in idx]
    sizes = [max(1, units[i].tokens) for i in idx]
    holds = [{k for k in keywords if kw.present(k, t)} for t in texts]
    chosen: list[int] = []
    covered: set[str] = set()
    used = 0
    while True:
        best, best_score = None, -np.inf
        for j in range(len(idx)):
            if j in chosen or used + sizes[j] > target_tokens:
                continue
            gain = len(holds[j] - covered) / max(1, len(keywords))
            score = float(central[j]) + keyword_weight * gain
            if score > best_score:
                best, best_score = j, score
        if best is None:
            break
        chosen.append(best)
        covered |= holds[best]
        used += sizes[best]
    pieces = {j: texts[j] for j in chosen}
    # Whole sentences rarely add up to the target: the best sentence left
    # out fills the rest, cut at a clause (else word) boundary, so that the
    # chunk keeps its share of the budget instead of leaving it unspent.
    gap = target_tokens - (count_tokens(" ".join(pieces.values())) if pieces else 0)
    left = [j for j in range(len(idx)) if j not in pieces]
    if left and gap >= MIN_FILL_TOKENS:
        scores = central + keyword_weight * np.array([len(h - covered) for h in holds]) / max(1, len(keywords))
        best = max(left, key=lambda j: float(scores[j]))
        part = _prefix_within(texts[best], gap - (1 if pieces else 0), count_tokens)
        if part:
            pieces[best] = part
    return " ".join(pieces[j] for j in sorted(pieces))


# The least a partial sentence must add to be worth appending (in tokens).
MIN_FILL_TOKENS = 4


def _prefix_within(text: str, target_tokens: float, count_tokens) -> str:
    for splitter in (split_clauses, split_words):
        out = ""
        for part in splitter(text):
            if count_tokens((out + part).strip()) > target_tokens:
                break
            out += part
        if out.strip():
            return out.strip()
    return ""


# --- 4. the compressor, with compression prioritization --------------------------------


class ScopeCompressor:
    def __init__(self, llm, settings: ScopeSettings | None = None, step: str = "scope", concurrency: int = 1):
        """`llm` is a RecordingLLM (or anything with complete() and count_tokens()).
        `concurrency` chunk rewrites are in flight at once (for API backends)."""
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.llm = llm
        self.settings = settings or ScopeSettings()
        self.step = step
        self.concurrency = concurrency
        self.count_tokens = llm.count_tokens

    def _each(self, work, wave: list[int], first_rank: int) -> list[ChunkReport]:
        if len(wave) == 1:
            return [work(wave[0], first_rank)]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(wave), thread_name_prefix="scope") as pool:
            return list(pool.map(work, wave, range(first_rank, first_rank + len(wave))))

    def prepare(self, text: str, query: str = ""):
        """Chunks with their importance and keywords, before any LLM call."""
        embed = embed_cached
        s = self.settings
        units = sentence_units(text, self.count_tokens)
        vectors = embed([u.text.strip() for u in units])
        sims = gap_similarities(vectors, s.similarity_window)
        chunk_idx = semantic_chunks(units, sims, s)
        n_semantic = len(chunk_idx)
        units, chunk_idx, vectors, outliers = handle_outliers(units, chunk_idx, vectors, self.count_tokens, s, embed)
        query_vector = embed([query])[0] if query.strip() else None
        importance = chunk_importance(vectors, chunk_idx, units, query_vector)
        chunks = []
        for idx, imp in zip(chunk_idx, importance):
            start, end = units[idx[0]].start, units[idx[-1]].end
            body = text[start:end]
            chunks.append(ProseChunk(idx, start, end, body, self.count_tokens(body.strip()), imp))
        vocab = kw.vocabulary(text, [c.text for c in chunks])
        info = {"semantic_chunks": n_semantic, **outliers, "chunks": len(chunks)}
        return units, vectors, chunks, vocab, query_vector, info

    def compress(self, text: str, ratio: float, query: str = "") -> CompressionResult:
        started = time.perf_counter()
        ratio = check_ratio(ratio)
        s = self.settings
        total = self.count_tokens(text)
        if not text.strip() or ratio >= 1.0:
            return CompressionResult("scope", text, total, total, ratio, [], time.perf_counter() - started, {})
        usage_before = _usage(self.llm)
        units, vectors, chunks, vocab, query_vector, info = self.prepare(text, query)
        budget = ratio * total
        scaled = normalise([c.importance for c in chunks])
        order = sorted(range(len(chunks)), key=lambda j: (chunks[j].importance, j))  # least important first
        results: dict[int, ChunkReport] = {}
        spent = 0
        remaining = list(range(len(chunks)))
        # Chunks are compressed least important first, `concurrency` at a time;
        # after each wave the budget left is re-allocated over the chunks still
        # to come, so what a rewrite saves or overspends is made up later.
        for wave_start in range(0, len(order), self.concurrency):
            wave = order[wave_start:wave_start + self.concurrency]
            ratios = allocate_ratios(
                [chunks[k].tokens for k in remaining], [scaled[k] for k in remaining],
                budget - spent, beta=s.importance_beta, floor=s.min_chunk_ratio, scale=False,
            )
            planned = dict(zip(remaining, ratios))
            remaining = [k for k in remaining if k not in wave]
            # A rewrite may fall short of its target only by what the chunks
            # still to come can make up (they can grow to verbatim).
            room = sum((1 - planned[k]) * chunks[k].tokens for k in remaining)

            def one(j: int, rank: int) -> ChunkReport:
                chunk, share = chunks[j], planned[j]
                target = share * chunk.tokens
                min_tokens = max(s.min_length_share * target, target - room - s.ratio_tolerance * budget)
                report = self._compress_chunk(j, chunk, share, units, vectors, vocab, query_vector, min_tokens)
                report.detail.update(order=rank, target_tokens=round(target, 1), min_tokens=round(min_tokens, 1))
                return report

            for report in self._each(one, wave, wave_start):
                results[report.idx] = report
                spent += report.compressed_tokens
        reports = [results[j] for j in range(len(chunks))]
        out = _join(text, chunks, [r.text for r in reports])
        n = self.count_tokens(out)
        info.update({"budget": round(budget, 1), "fallbacks": sum(r.fell_back for r in reports),
                     "rewritten": sum(r.action == "rewritten" for r in reports),
                     "verbatim": sum(r.action == "verbatim" for r in reports),
                     "llm": _usage_delta(usage_before, _usage(self.llm))})
        return CompressionResult("scope", out, total, n, ratio, reports, time.perf_counter() - started, info)

    def _compress_chunk(self, j: int, chunk: ProseChunk, share: float, units, vectors, vocab, query_vector,
                        min_tokens: float = 0.0) -> ChunkReport:
        s = self.settings
        target = share * chunk.tokens
        base = dict(idx=j, method="scope", kind="prose", start=chunk.start, end=chunk.end,
                    original_tokens=chunk.tokens, target_ratio=round(share, 4), importance=round(chunk.importance, 4))
        if share >= s.verbatim_at:
            text = chunk.text.strip()
            return ChunkReport(**base, compressed_tokens=chunk.tokens, action="verbatim", text=text)
        words_per_token = count_words(chunk.text) / max(1, chunk.tokens)
        words = max(5, int(target * words_per_token))
        limit = min(s.max_keywords, max(1, words // s.words_per_keyword))
        keywords = kw.pick(chunk.text, vocab, limit)
        chunk.keywords = keywords
        failures = []
        note = ""
        asked = words
        for attempt in range(s.max_attempts):
            prompt = prompts.render(TEMPLATE, text=chunk.text.strip(), words=asked,
                                    keywords=", ".join(keywords) if keywords else "(none)", note=note)
            try:
                result = self.llm.complete(prompt, int(target * (1 + s.length_tolerance)) + 8,
                                           temperature=s.temperature, seed=attempt,
                                           step=f"{self.step}:chunk{j}#{attempt + 1}")
            except (LLMCallError, PromptTooLongError) as exc:  # a failed call is a failed attempt
                failures.append(f"attempt {attempt + 1}: LLM error: {exc}")
                note = ""
                continue
            check = check_rewrite(result.text, target, keywords, self.count_tokens, s.length_tolerance, min_tokens)
            if check.text and echoes_instructions(check.text, prompt, chunk.text.strip(), keywords):
                check.problems.insert(0, "not prose (echoes the instructions)")
            if not check.problems:
                return ChunkReport(**base, compressed_tokens=check.tokens, action="rewritten", text=check.text,
                                   attempts=attempt + 1, keywords=keywords, keywords_kept=list(keywords))
            failures.append(f"attempt {attempt + 1}: {'; '.join(check.problems)}")
            note = retry_note(check, asked)
            if any(p.startswith(("too long", "too short")) for p in check.problems):
                asked = words_to_ask(asked, check.tokens, min_tokens, target * (1 + s.length_tolerance))
        text = extractive(units, chunk.units, vectors, target, keywords, self.count_tokens,
                          s.keyword_weight, query_vector)
        kept = [k for k in keywords if kw.present(k, text)]
        return ChunkReport(**base, compressed_tokens=self.count_tokens(text), action="extractive", text=text,
                           attempts=s.max_attempts, fallback_reason=" | ".join(failures), keywords=keywords,
                           keywords_kept=kept)


def words_to_ask(asked: int, got_tokens: int, min_tokens: float, max_tokens: float) -> int:
    """The word count to ask for after an answer of `got_tokens` fell outside
    [min_tokens, max_tokens]: the last request scaled toward the middle of that
    window, so a model that writes what it is asked lands inside it (asking for
    the same count again could never mend a too-short answer)."""
    if got_tokens <= 0:
        return asked
    goal = (max(0.0, min_tokens) + max_tokens) / 2
    return max(5, round(asked * goal / got_tokens))


def retry_note(check: Check, asked: int) -> str:
    notes = []
    if any(p.startswith("too long") for p in check.problems):
        notes.append(f"Your previous version was too long ({count_words(check.text)} words): stay within the limit.")
    if any(p.startswith("too short") for p in check.problems):
        notes.append(f"Your previous version was too short ({count_words(check.text)} words): keep more of the details.")
    if check.missing and check.text:
        notes.append("Your previous version left out: " + ", ".join(check.missing) + ".")
    if any(p.startswith(("not prose", "empty")) for p in check.problems):
        notes.append("Write only the shortened passage, as plain sentences.")
    return (" " + " ".join(notes)) if notes else ""


def _join(text: str, chunks: Sequence[ProseChunk], pieces: Sequence[str]) -> str:
    """Compressed chunks in order, separated as the originals were (paragraph break, line break or space)."""
    out = []
    for chunk, piece in zip(chunks, pieces):
        if not piece:
            continue
        tail = chunk.text[len(chunk.text.rstrip()):]
        sep = "\n\n" if tail.count("\n") >= 2 else ("\n" if "\n" in tail else " ")
        out.append(piece.strip() + sep)
    return "".join(out).rstrip() + ("\n" if text.endswith("\n") else "")


def _usage(llm) -> dict:
    usage = getattr(llm, "usage", None)
    return usage.as_dict() if usage is not None and hasattr(usage, "as_dict") else {}


def _usage_delta(before: dict, after: dict) -> dict:
    return {k: round(v - before.get(k, 0), 6) if isinstance(v, (int, float)) else v for k, v in after.items()}


def compress_prose(text: str, ratio: float, llm, query: str = "", settings: ScopeSettings | None = None,
                   step: str = "scope", concurrency: int = 1) -> CompressionResult:
    """SCOPE-compress text to about `ratio` of its tokens with `llm` (a RecordingLLM)."""
    return ScopeCompressor(llm, settings, step, concurrency).compress(text, ratio, query)
