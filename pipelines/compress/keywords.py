"""Keywords a compressed chunk must keep (SCOPE's keyword maintaining).

Three kinds, found with plain rules (no NER model is available offline):

- named entities: words written capitalised in the middle of sentences
  throughout the document and rarely in lower case (names, places, ships,
  titles) — sentence-initial capitals alone do not count;
- numbers: digit runs, with decimals, thousands separators or a percent sign
  (not a numbered heading's line, an enumerator such as "1)" or "(2)", or a
  citation key such as "(Littell et al., 2017)");
- salient terms: the chunk's content words weighted by tf-idf over the
  document's chunks (frequent here, rare elsewhere).

`pick` ranks a chunk's candidates (the most frequent entities, then numbers,
then the other entities, then salient terms) and keeps as many as the
chunk's target length can carry.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from pipelines.text import split_sentences

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being below
    between both but by can could did do does doing down during each even ever every few for from further
    had has have having he her here hers herself him himself his how however i if in into is it its itself
    just least less let like made make many may me might more most much must my myself never no nor not now
    of off often on once one only or other others our ours ourselves out over own perhaps quite rather said
    same say says see seemed shall she should since so some still such than that the their theirs them
    themselves then there these they this those though through thus to too under until up upon us very was
    we were what whatever when where whether which while who whom whose why will with within without would
    yes yet you your yours yourself yourselves mr mrs miss sir oh ah well back came come go going got know
    knew look looked looking thought think way went get two three first last next new old good great little
    long right time thing things something nothing anything everything man men woman women day days eyes
    hand hands head face voice moment again away enough around toward towards across along behind beside
    """.split()
)

_WORD = re.compile(r"[A-Za-z][A-Za-z'’\-]*[A-Za-z]|[A-Za-z]")
_NUMBER = re.compile(r"(?<![\w.,])\d[\d,]*(?:\.\d+)?%?(?![\w])")
# Not facts a rewrite must repeat: a numbered heading's line ("3 Methods", "2.1
# Related Work": the rewrite is told to write no title) and an enumerator
# ("provides 1) the stem and 2) ...", "(1) stems"), which a rewrite in prose drops.
_NUMBERED_HEADING = re.compile(r"^[ \t]*\d+(?:\.\d+)*\.?[ \t]+[A-Z][^\n.!?]{0,80}$", re.MULTILINE)
_ENUMERATOR = re.compile(r"\(\d{1,2}\)|(?<![\w(.,])\d{1,2}\)")
# ... nor a citation key: a parenthesis of author-year references ("(Bucholtz,
# 2021)", "(Littell et al., 2017; Qi, 2020)", "(2017)" after a name in the text).
_YEAR = r"(?:1[5-9]|20)\d\d[a-z]?"
_CITATION = re.compile(r"\((?:[^()\n]{0,80}?,\s*)?" + _YEAR + r"(?:\s*[;,]\s*[^()\n]{0,80}?" + _YEAR + r")*\)")


def _without_markers(chunk: str) -> str:
    """The chunk with its numbered headings, enumerators and citation keys blanked out (for keyword candidates)."""
    return _CITATION.sub(" ", _ENUMERATOR.sub(" ", _NUMBERED_HEADING.sub(" ", chunk)))


@dataclass
class DocumentVocabulary:
    """Document-wide facts the per-chunk keyword choice needs."""

    proper: dict[str, str] = field(default_factory=dict)  # lower -> most common capitalised form
    chunk_frequency: Counter = field(default_factory=Counter)  # lower word -> chunks containing it
    n_chunks: int = 1


def vocabulary(text: str, chunks: Sequence[str]) -> DocumentVocabulary:
    capital_mid: Counter = Counter()
    capital_any: Counter = Counter()
    lower: Counter = Counter()
    forms: dict[str, Counter] = {}
    for sentence in split_sentences(text):
        for n, match in enumerate(_WORD.finditer(sentence)):
            word = match.group()
            key = _key(word)
            if word[0].isupper():
                capital_any[key] += 1
                forms.setdefault(key, Counter())[_strip_possessive(word)] += 1
                if n > 0:  # not the sentence's first word
                    capital_mid[key] += 1
            else:
                lower[key] += 1
    proper = {
        key: forms[key].most_common(1)[0][0]
        for key in capital_any
        if capital_mid[key] >= 1 and capital_any[key] >= 2 * lower[key] and key not in STOPWORDS
        and len(key) > 1 and not _first_person(key)
    }
    frequency: Counter = Counter()
    for chunk in chunks:
        frequency.update({_key(w) for w in _WORD.findall(chunk)})
    return DocumentVocabulary(proper=proper, chunk_frequency=frequency, n_chunks=max(1, len(chunks)))


def candidates(chunk: str, vocab: DocumentVocabulary) -> tuple[list[str], list[str], list[str]]:
    """(entities, numbers, salient terms) of a chunk, each best first (numbered
    headings, enumerators and citation keys left out)."""
    chunk = _without_markers(chunk)
    words = [_key(w) for w in _WORD.findall(chunk)]
    counts = Counter(words)
    first_seen = {w: i for i, w in reversed(list(enumerate(words)))}
    entities = sorted((w for w in counts if w in vocab.proper), key=lambda w: (-counts[w], first_seen[w]))
    numbers = list(dict.fromkeys(m.group().rstrip(",") for m in _NUMBER.finditer(chunk)))
    scored = []
    for w, tf in counts.items():
        if w in vocab.proper or w in STOPWORDS or len(w) < 4:
            continue
        idf = math.log((1 + vocab.n_chunks) / (1 + vocab.chunk_frequency.get(w, 0))) + 1
        scored.append((tf * idf, -first_seen[w], w))
    salient = [w for _, _, w in sorted(scored, reverse=True) if counts[w] >= 2]
    return [vocab.proper[w] for w in entities], numbers, salient


def pick(chunk: str, vocab: DocumentVocabulary, limit: int) -> list[str]:
    """At most `limit` keywords: entities first, then numbers, then salient terms."""
    if limit <= 0:
        return []
    entities, numbers, salient = candidates(chunk, vocab)
    head = math.ceil(limit * 0.6)
    out: list[str] = []
    for group in (entities[:head], numbers, entities[head:], salient):
        for word in group:
            if len(out) >= limit:
                return out
            if word.lower() not in {o.lower() for o in out}:
                out.append(word)
    return out


def present(keyword: str, text: str) -> bool:
    """The keyword appears in text as a whole word (any case; possessives count)."""
    pattern = r"(?<![\w])" + re.escape(keyword) + r"(?![\w])"
    if re.search(pattern, text, re.IGNORECASE):
        return True
    if _NUMBER.fullmatch(keyword) and "," in keyword:
        return present(keyword.replace(",", ""), text)
    return False


def missing(keywords: Sequence[str], text: str) -> list[str]:
    return [k for k in keywords if not present(k, text)]


def _first_person(key: str) -> bool:
    return key == "i" or key.startswith(("i'", "i’"))


def _key(word: str) -> str:
    return _strip_possessive(word).lower()


def _strip_possessive(word: str) -> str:
    for suffix in ("'s", "’s"):
        if word.endswith(suffix):
            return word[: -len(suffix)]
    return word.rstrip("'’-")


# --- words of identifiers (LongCodeZip matches plain-English queries to code names) ---

_NAME_PART = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")
# Longest first; each leaves a stem of at least three letters.
_SUFFIXES = ("ations", "ation", "ings", "ing", "ers", "ies", "ied", "ed", "er", "es", "s", "e", "y")


def name_parts(identifier: str) -> list[str]:
    """An identifier's words, lower case: snake_case and camelCase split
    (``_SubParsersAction`` -> sub, parsers, action; ``add_argument`` -> add, argument)."""
    return [p.lower() for p in _NAME_PART.findall(identifier)]


def stem(word: str) -> str:
    """A light English stem, the same for a word's usual forms: ``add``,
    ``added``, ``adding`` -> ``ad``; ``parser``, ``parse``, ``parsing`` ->
    ``pars``; ``subparsers`` -> ``subpars``; ``formatter``, ``format`` ->
    ``format``. A doubled final consonant is undoubled, so that a stripped
    suffix and a bare word meet (``added`` -> ``add`` -> ``ad``, like ``add``)."""
    word = word.lower()
    if word.endswith("sses"):  # classes, processes
        word = word[:-2]
    elif not word.endswith("ss"):  # class, process: not plurals
        for suffix in _SUFFIXES:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                word = word[: -len(suffix)] + ("i" if suffix in ("ies", "ied", "y") else "")
                break
    if len(word) >= 3 and word[-1] == word[-2] and word[-1] not in "aeiou":
        word = word[:-1]
    return word


def name_stems(identifier: str) -> set[str]:
    """Stems of an identifier's words and of each pair of adjacent words
    joined (``SubParsers`` meets ``subparsers``)."""
    parts = name_parts(identifier)
    joined = [a + b for a, b in zip(parts, parts[1:])]
    return {stem(p) for p in parts + joined if len(p) > 1}


def query_stems(text: str, stopwords: frozenset[str] = frozenset()) -> set[str]:
    """Stems of a query's words (identifiers split into words), less
    stopwords: what a plain-English question asks about."""
    out = set()
    for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text):
        for part in name_parts(token) + ([token.lower()] if "_" not in token else []):
            if len(part) > 2 and part not in STOPWORDS and part not in stopwords:
                out.add(stem(part))
    return out
