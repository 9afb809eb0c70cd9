"""BooookScore: the share of a summary's sentences that do not confuse a reader.

Chang et al. (2023), "BooookScore: A systematic exploration of book-length
summarization in the era of LLMs". A summary is split into sentences; each
sentence is checked for the eight coherence error types (entity omission,
event omission, causal omission, salience, discontinuity, duplication,
inconsistency, language) together with the question a reader would ask;
BooookScore = 1 - flagged sentences / all sentences, and a corpus's score is
the mean over its summaries.

The checker asks an LLM through `RecordingLLM` (every call journaled and
replayed from the cache):

* v1 (`prompts/booookscore_v1.txt`): one call per sentence, answered in two
  lines, "Types: ..." then "Questions: ..." (the verdict first, so an answer
  cut off at max_tokens still carries it).
* v2 (`prompts/booookscore_v2.txt`): one call per batch of sentences,
  answered with a JSON array.

Both templates put the shared part first (instructions, worked examples, the
whole summary) and the sentence(s) last, in the "(varies)" block, so
consecutive calls share their prefix: llama.cpp reuses its KV cache and API
providers their prompt caches.

Bad answers never crash the checker and are never silently counted as clean:
an answer that cannot be parsed is asked again (a bounded number of times,
with a reminder of the format and a new seed, so the request hash differs and
the cache does not replay the same bad answer), and a sentence still without a
usable answer is recorded as `unparseable`. The score is then computed over
the sentences that were judged, and `lower` (unparseable counted as flagged)
is stored beside it, with the count.

`import_released()` reads the annotation files released with the paper
(book -> sentence -> {sentence_num, sentence, questions, types}; a sentence
is flagged when it has questions or types) into the same tables.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import prompts
from pipelines.llm.base import LLMError, PromptTooLongError, fit_max_tokens
from pipelines.text import sentences as split_sentences
from scoring.asking import RetryPolicy, ask_until_parsed, cut_note, each, join_notes, reminder

ERROR_TYPES = (
    "entity omission", "event omission", "causal omission", "salience",
    "discontinuity", "duplication", "inconsistency", "language",
)
VERSIONS = ("v1", "v2")
TEMPLATES = {"v1": "booookscore_v1", "v2": "booookscore_v2"}
DEFAULT_MAX_ATTEMPTS = 3
V1_MAX_TOKENS = 40
# A v1 answer is two lines; a model that goes on (a base model inventing the
# next turn) is stopped at the blank line or the next "Sentence N:".
V1_STOP = ("\n\n", "\nSentence ")
V2_TOKENS_PER_SENTENCE = 60
V2_BATCH_SIZE = 6
RETRY_TEMPERATURE = 0.7

# Words an answer may use to say "no error".
_NONE = {
    "none", "no", "n/a", "na", "null", "nil", "nothing", "no error", "no errors", "no confusion",
    "no issue", "no issues", "no problem", "no problems", "no questions", "no question", "-", "--", "[]",
    "none.", "empty", "no error types", "not applicable", "clean", "ok",
}
_TYPE_PATTERNS = (
    ("entity omission", re.compile(r"entit|character omission|who is")),
    ("event omission", re.compile(r"event|plot omission")),
    ("causal omission", re.compile(r"caus|motiv|reason")),
    ("salience", re.compile(r"salien|trivial|irrelevan|unimportant")),
    ("discontinuity", re.compile(r"discontinu|continuity|abrupt|transition|jump")),
    ("duplication", re.compile(r"duplic|repet|repeat|redundan")),
    ("inconsistency", re.compile(r"inconsisten|contradict")),
    ("language", re.compile(r"language|grammar|grammatical|wording|fluen|unclear reference|ambigu")),
)
_TYPE_SPLIT = re.compile(r"\s*(?:[,;/|&+\n]|\band\b)\s*")


class CheckerError(ValueError):
    pass


# -- parsing -------------------------------------------------------------------


def _clean(text: str) -> str:
    return re.sub(r"[\s*_`\"'“”‘’.]+$", "", re.sub(r"^[\s*_`\"'“”‘’\[\]]+", "", text)).strip()


def _is_none(text: str | None) -> bool:
    if text is None:
        return True
    cleaned = _clean(str(text)).lower().strip("()[]{}. ")
    return cleaned in _NONE or cleaned == ""


@dataclass(frozen=True)
class ParsedTypes:
    types: tuple[str, ...]
    declared_none: bool
    unknown: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return bool(self.types) or (self.declared_none and not self.unknown)


def parse_types(raw) -> ParsedTypes:
    """Error types from free text or a JSON list; unknown names are kept apart."""
    if raw is None:
        return ParsedTypes((), True, ())
    if isinstance(raw, (list, tuple)):
        parts = [str(p) for p in raw]
        if not parts:
            return ParsedTypes((), True, ())
    else:
        text = _clean(str(raw))
        if not text:  # "Types:" with nothing after it (often an answer cut off): not a verdict
            return ParsedTypes((), False, ())
        if _is_none(text):
            return ParsedTypes((), True, ())
        parts = _TYPE_SPLIT.split(text)
    found, unknown, declared_none = [], [], False
    for part in parts:
        part = _clean(part).lower()
        if not part:
            continue
        if _is_none(part):
            declared_none = True
            continue
        names = [name for name, pattern in _TYPE_PATTERNS if pattern.search(part)]
        if not names:
            unknown.append(part[:60])
        for name in names:
            if name not in found:
                found.append(name)
    order = {name: i for i, name in enumerate(ERROR_TYPES)}
    return ParsedTypes(tuple(sorted(found, key=order.get)), declared_none and not found, tuple(unknown))


@dataclass(frozen=True)
class Judgement:
    """One parsed answer for one sentence."""

    types: tuple[str, ...]
    questions: str | None

    @property
    def flagged(self) -> bool:
        return bool(self.types) or bool(self.questions)


def _questions(raw) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, (list, tuple)):
        raw = " ".join(str(q) for q in raw if not _is_none(str(q)))
    text = " ".join(str(raw).split())
    return None if _is_none(text) else text


_LABEL = re.compile(
    r"^[\s>*#•\-\d.)]*\**\s*(?P<label>questions?|(?:error\s+)?types?)\s*\**\s*[:：]\s*\**(?P<rest>.*)$",
    re.IGNORECASE,
)
_TYPES_LABEL = re.compile(r"\**\s*(?:error\s+)?types?\s*\**\s*[:：]", re.IGNORECASE)
_MARKERS = " \t>*#•-0123456789.)"


def _split_inline_types(text: str) -> str:
    """Put a 'Types:' label that follows other text on a line of its own."""
    lines = []
    for line in text.split("\n"):
        match = _TYPES_LABEL.search(line)
        if match and line[:match.start()].strip(_MARKERS):
            lines += [line[:match.start()].rstrip(), line[match.start():]]
        else:
            lines.append(line)
    return "\n".join(lines)


def parse_v1(answer: str) -> tuple[Judgement | None, str | None]:
    """(judgement, None) or (None, why it could not be parsed)."""
    text = (answer or "").strip()
    if not text:
        return None, "empty answer"
    text = _split_inline_types(text.replace("\r", ""))
    fields: dict[str, list[str]] = {}
    current = None
    for line in text.split("\n"):
        match = _LABEL.match(line)
        if match:
            label = "types" if "type" in match.group("label").lower() else "questions"
            if label in fields:  # a second answer starts: keep the first
                break
            current = label
            fields[current] = [match.group("rest")]
        elif current is not None and line.strip():
            break  # one line per field; what follows is chatter
    if "types" not in fields:
        if "questions" not in fields and _is_none(text):
            return Judgement((), None), None
        return None, "no 'Types:' line"
    parsed = parse_types(" ".join(fields["types"]))
    if not parsed.valid:
        shown = ", ".join(parsed.unknown) or " ".join(fields["types"]).strip()
        return None, f"unknown error type(s): {shown[:80]}"
    return Judgement(parsed.types, _questions(" ".join(fields.get("questions", [])) or None)), None


_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)(?:```|$)", re.S)
_NUMBER = re.compile(r"\d+")


def _repair_json(text: str) -> str:
    text = text.replace("“", '"').replace("”", '"').replace("‘", "'").replace("’", "'")
    text = re.sub(r",\s*([}\]])", r"\1", text)
    text = re.sub(r"\bNone\b", "null", text)
    text = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", text))
    if '"' not in text and "'" in text:
        text = text.replace("'", '"')
    return text


def _loads(text: str):
    for candidate in (text, _repair_json(text)):
        try:
            return json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
    return None


def _balanced_objects(text: str) -> list[str]:
    """Every top-level {...} in text, respecting strings (a cut-off tail is dropped)."""
    out, depth, start, in_string, escape = [], 0, None, False, False
    for i, ch in enumerate(text):
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"':
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
            if depth == 0:
                out.append(text[start:i + 1])
    return out


def _json_objects(answer: str) -> list:
    text = (answer or "").strip()
    fenced = _FENCE.search(text)
    if fenced and fenced.group(1).strip():
        text = fenced.group(1).strip()
    starts = [i for i in (text.find("["), text.find("{")) if i >= 0]
    if starts:
        body = text[min(starts):]
        ends = [i for i in (body.rfind("]"), body.rfind("}")) if i >= 0]
        if ends:
            whole = _loads(body[:max(ends) + 1])
            if isinstance(whole, list):
                return whole
            if isinstance(whole, dict):
                if all(_NUMBER.fullmatch(str(k).strip()) for k in whole) and all(isinstance(v, dict) for v in whole.values()):
                    return [{"sentence": int(k), **v} for k, v in whole.items()]
                for key in ("sentences", "annotations", "results", "items"):
                    if isinstance(whole.get(key), list):
                        return whole[key]
                return [whole]
    objects = []
    for piece in _balanced_objects(text):
        obj = _loads(piece)
        if isinstance(obj, dict):
            objects.append(obj)
    return objects


def _first(obj: dict, *keys):
    for key in keys:
        for k, v in obj.items():
            if str(k).lower().replace("_", " ").strip() == key:
                return True, v
    return False, None


def parse_v2(answer: str, expected: Sequence[int]) -> tuple[dict[int, Judgement], str | None]:
    """Judgements by sentence number; the note says what was missing or wrong."""
    objects = [o for o in _json_objects(answer) if isinstance(o, dict)]
    if not objects:
        return {}, "no JSON object in the answer"
    expected = list(expected)
    numbered: list[tuple[int | None, dict]] = []
    for obj in objects:
        has, value = _first(obj, "sentence", "sentence num", "sentence number", "number", "id", "n", "index")
        number = None
        if has and value is not None:
            found = _NUMBER.search(str(value))
            number = int(found.group()) if found else None
        numbered.append((number, obj))
    if all(n is None for n, _ in numbered) and len(numbered) == len(expected):
        numbered = list(zip(expected, (o for _, o in numbered)))
    out, problems = {}, []
    for number, obj in numbered:
        if number not in expected or number in out:
            continue
        has_types, types = _first(obj, "types", "type", "error types", "errors", "error type")
        has_questions, questions = _first(obj, "questions", "question")
        if not has_types and not has_questions:
            problems.append(f"sentence {number}: no types")
            continue
        parsed = parse_types(types if has_types else None)
        if has_types and not parsed.valid:
            problems.append(f"sentence {number}: unknown type(s) {', '.join(parsed.unknown)[:60]}")
            continue
        out[number] = Judgement(parsed.types, _questions(questions))
    missing = [n for n in expected if n not in out]
    if missing:
        problems.insert(0, f"no usable answer for sentence(s) {', '.join(map(str, missing))}")
    return out, "; ".join(problems) or None


# -- the checker -----------------------------------------------------------------


@dataclass
class SentenceAnnotation:
    sentence_num: int
    sentence: str
    status: str  # ok | unparseable | imported
    types: tuple[str, ...] = ()
    questions: str | None = None
    attempts: int = 0
    answer: str | None = None  # the last raw answer
    request_hash: str | None = None
    note: str | None = None

    @property
    def flagged(self) -> bool | None:
        if self.status == "unparseable":
            return None
        return bool(self.types) or bool(self.questions)


@dataclass
class CheckResult:
    annotations: list[SentenceAnnotation]
    version: str
    config: dict = field(default_factory=dict)

    @property
    def n_sentences(self) -> int:
        return len(self.annotations)

    @property
    def n_flagged(self) -> int:
        return sum(1 for a in self.annotations if a.flagged)

    @property
    def n_unparseable(self) -> int:
        return sum(1 for a in self.annotations if a.status == "unparseable")

    @property
    def n_judged(self) -> int:
        return self.n_sentences - self.n_unparseable

    @property
    def score(self) -> float | None:
        """1 - flagged / judged sentences (None when no sentence was judged)."""
        return None if not self.n_judged else 1 - self.n_flagged / self.n_judged

    @property
    def lower(self) -> float | None:
        """The score with every unparseable sentence counted as flagged."""
        return None if not self.n_sentences else 1 - (self.n_flagged + self.n_unparseable) / self.n_sentences


_V1_REMINDERS = (
    "",
    "\n\nReply in exactly two lines, 'Types: ...' then 'Questions: ...', naming only error types from the list, or none.",
    "\n\nFormat reminder. Line 1: 'Types:' and the error types, or none. Line 2: 'Questions:' and the reader's question, or none.",
)
_V2_REMINDERS = (
    "",
    '\n\nReply with a JSON array only, one object per sentence above: {"sentence": N, "questions": ... or null, "types": [...]}.',
    '\n\nFormat reminder: a JSON array and nothing else; every sentence number above needs one object with "sentence", "questions" and "types".',
)


class BooookScoreChecker:
    """Annotates a summary's sentences through a RecordingLLM."""

    def __init__(
        self,
        llm,
        version: str = "v1",
        *,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        temperature: float = 0.0,
        retry_temperature: float = RETRY_TEMPERATURE,
        batch_size: int = V2_BATCH_SIZE,
        max_tokens: int | None = None,
        step: str = "booookscore",
        concurrency: int = 1,
    ):
        """`max_tokens` bounds the answer: per call for v1, per sentence of a batch for v2.
        `concurrency` calls (v1 sentences, v2 batches) are in flight at once: for
        API backends; a local llama.cpp model answers one at a time and gains
        more from the shared prompt prefix of consecutive calls."""
        if version not in VERSIONS:
            raise CheckerError(f"unknown BooookScore prompt version {version!r}; choose one of {', '.join(VERSIONS)}")
        if max_attempts < 1 or batch_size < 1 or concurrency < 1:
            raise CheckerError("max_attempts, batch_size and concurrency must be at least 1")
        self.llm = llm
        self.version = version
        self.template = TEMPLATES[version]
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self.step = step
        self.concurrency = concurrency
        self.policy = RetryPolicy(max_attempts, temperature, retry_temperature)

    def config(self) -> dict:
        backend = getattr(self.llm, "backend", None)
        return {
            "version": self.version, "template": self.template, "template_hash": prompts.load(self.template).sha256,
            "model": f"{backend.backend}:{backend.model}" if backend is not None else None,
            "max_attempts": self.policy.max_attempts, "temperature": self.policy.temperature,
            "retry_temperature": self.policy.retry_temperature,
            **({"batch_size": self.batch_size} if self.version == "v2" else {}),
        }

    def check(self, summary: str, first: int | None = None) -> CheckResult:
        """Judge every sentence of `summary`, or only its `first` ones (a cheap
        sample: each prompt still holds the whole summary)."""
        sentences = split_sentences(summary)[:first]
        annotations = [SentenceAnnotation(i + 1, s, "unparseable") for i, s in enumerate(sentences)]
        if self.version == "v1":
            self._each(lambda annotation: self.annotate_sentence(summary, annotation), annotations)
        else:
            self._check_v2(summary, annotations)
        return CheckResult(annotations, self.version, self.config())

    # v1: one sentence per call ------------------------------------------------

    def annotate_sentence(self, summary: str, annotation: SentenceAnnotation) -> None:
        """v1: annotate one sentence of `summary` in place (asking again while the answer does not parse)."""
        answer = ask_until_parsed(
            self.llm,
            lambda reminder: prompts.render(self.template, summary=summary, number=annotation.sentence_num,
                                            sentence=annotation.sentence, reminder=reminder),
            lambda text, prompt: parse_v1(text), policy=self.policy, reminders=_V1_REMINDERS,
            max_tokens=self.max_tokens or V1_MAX_TOKENS, step=f"{self.step}:s{annotation.sentence_num}", stop=V1_STOP)
        annotation.attempts, annotation.answer, annotation.request_hash = answer.attempts, answer.text, answer.request_hash
        annotation.note = answer.note
        if answer.value is not None:
            annotation.status, annotation.types, annotation.questions = "ok", answer.value.types, answer.value.questions

    # v2: batches of sentences, JSON answers -----------------------------------------

    def _check_v2(self, summary: str, annotations: list[SentenceAnnotation]) -> None:
        pending = list(annotations)
        for attempt in range(self.policy.max_attempts):
            if not pending:
                return
            batches = [pending[i:i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
            pending = [a for left in self._each(lambda batch: self._v2_batch(summary, batch, attempt), batches)
                       for a in left]

    def _each(self, work, items: list) -> list:
        return each(work, items, self.concurrency, "booookscore")

    def _v2_prompt(self, summary: str, batch: list[SentenceAnnotation], attempt: int):
        lines = "\n".join(f"{a.sentence_num}. {a.sentence}" for a in batch)
        return prompts.render(self.template, summary=summary, batch=lines, reminder=reminder(_V2_REMINDERS, attempt))

    def _v2_batch(self, summary: str, batch: list[SentenceAnnotation], attempt: int) -> list[SentenceAnnotation]:
        """Annotate what it can; return the sentences still without an answer."""
        prompt = self._v2_prompt(summary, batch, attempt)
        wanted = (self.max_tokens or V2_TOKENS_PER_SENTENCE) * len(batch) + 24
        backend = getattr(self.llm, "backend", None)
        if backend is not None and len(batch) > 1:
            try:
                room = fit_max_tokens(backend, prompt.messages, wanted)
            except PromptTooLongError:
                room = 0
            if room < wanted:  # the answer would not fit: smaller batches
                half = len(batch) // 2
                return self._v2_batch(summary, batch[:half], attempt) + self._v2_batch(summary, batch[half:], attempt)
        temperature, seed = self.policy.sampling(attempt)
        for a in batch:
            a.attempts = attempt + 1
        numbers = [a.sentence_num for a in batch]
        try:
            result = self.llm.complete(
                prompt, wanted, temperature=temperature, seed=seed,
                step=f"{self.step}:s{numbers[0]}-{numbers[-1]}#{attempt + 1}",
            )
        except PromptTooLongError as exc:
            for a in batch:
                a.note = f"prompt too long: {exc}"
            return []  # retrying cannot help
        except LLMError as exc:
            for a in batch:
                a.note = join_notes(a.note, f"#{attempt + 1}: {exc}")
            return batch
        judgements, why = parse_v2(result.text, numbers)
        left = []
        for a in batch:
            a.answer, a.request_hash = result.text, result.request_hash
            judgement = judgements.get(a.sentence_num)
            if judgement is None:
                a.note = join_notes(a.note, f"#{attempt + 1}: {why or 'no answer'}{cut_note(result)}")
                left.append(a)
            else:
                a.status, a.types, a.questions = "ok", judgement.types, judgement.questions
        return left


# -- the released annotations -------------------------------------------------------


@dataclass
class ReleasedBook:
    name: str
    annotations: list[SentenceAnnotation]

    @property
    def result(self) -> CheckResult:
        return CheckResult(self.annotations, "released")


def load_released(path: str | Path) -> list[ReleasedBook]:
    """The paper's released annotation format: book -> sentence -> fields."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckerError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict) or not data:
        raise CheckerError(f"{path}: expected an object of books, each an object of sentences")
    books = []
    for name, sentences in data.items():
        if not isinstance(sentences, dict):
            raise CheckerError(f"{path}: book {name!r} is not an object of sentences")
        annotations = []
        for key, entry in sentences.items():
            if not isinstance(entry, dict):
                raise CheckerError(f"{path}: book {name!r}: sentence entry is not an object")
            types = parse_types(entry.get("types")).types if entry.get("types") else ()
            raw_types = entry.get("types")
            annotation = SentenceAnnotation(
                sentence_num=int(entry.get("sentence_num") or len(annotations) + 1),
                sentence=str(entry.get("sentence") or key), status="imported", types=types,
                questions=_questions(entry.get("questions")) if entry.get("questions") else None,
            )
            if raw_types and not types:  # an annotator's type we do not know still flags the sentence
                annotation.note = f"unrecognised types: {raw_types}"
                annotation.questions = annotation.questions or str(raw_types)
            annotations.append(annotation)
        annotations.sort(key=lambda a: a.sentence_num)
        books.append(ReleasedBook(str(name), annotations))
    return books


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
