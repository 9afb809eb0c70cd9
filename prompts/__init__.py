"""Prompt templates, one file per step, loaded by name.

A template file is a sequence of messages, each introduced by a header line:

    ### system
    ...
    ### user
    ...
    ### user (varies)
    ...

Placeholders are `${name}`. Values are inserted verbatim and never
re-expanded; a value's copies of the fence tags the templates use around
document text are defanged, so a document cannot close its own fence.
Messages before the first "(varies)" block are the prompt's shared prefix:
identical across the calls of one step, so llama.cpp's KV reuse and the API
providers' prompt caches apply to them.
"""

from __future__ import annotations

import functools
import hashlib
import re
import string
from dataclasses import dataclass
from importlib import resources

_HEADER = re.compile(r"^### (system|user|assistant)( \(varies\))?[ \t]*$", re.MULTILINE)
# Tags the templates use to fence data; a value must not be able to close one.
_FENCE_TAG = re.compile(
    r"<(/?)\s*(document|excerpt|summary|summaries|story_so_far|new_excerpt|sentence|text|code|passages)\s*>",
    re.IGNORECASE,
)


class PromptError(KeyError):
    pass


@dataclass(frozen=True)
class RenderedPrompt:
    template: str
    template_hash: str
    messages: tuple[dict, ...]
    cache_prefix_messages: int


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    text: str

    @functools.cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @functools.cached_property
    def _blocks(self) -> list[tuple[str, bool, string.Template]]:
        headers = list(_HEADER.finditer(self.text))
        if not headers:
            raise PromptError(f"prompt {self.name!r} has no '### system|user' header")
        blocks = []
        for here, nxt in zip(headers, headers[1:] + [None]):
            body = self.text[here.end():nxt.start() if nxt else len(self.text)].strip("\n")
            blocks.append((here.group(1), bool(here.group(2)), string.Template(body)))
        return blocks

    def render(self, **values: object) -> RenderedPrompt:
        safe = {k: v if isinstance(v, Fenced) else defang(str(v)) for k, v in values.items()}
        messages, prefix = [], None
        for i, (role, varies, body) in enumerate(self._blocks):
            if varies and prefix is None:
                prefix = i
            try:
                content = body.substitute(safe)
            except KeyError as exc:
                raise PromptError(f"prompt {self.name!r} needs a value for {exc.args[0]!r}") from None
            messages.append({"role": role, "content": content})
        return RenderedPrompt(
            template=self.name, template_hash=self.sha256, messages=tuple(messages),
            cache_prefix_messages=prefix or 0,
        )


class Fenced(str):
    """A value that holds fences longsum wrote itself around data it defanged
    (a variable number of passages, say): rendered as it is."""

    @classmethod
    def around(cls, tag: str, data: str) -> "Fenced":
        return cls(f"<{tag}>\n{defang(data)}\n</{tag}>")


def defang(value: str) -> str:
    """Make copies of fence tags inside data inert (`<excerpt>` -> `‹excerpt›`)."""
    return _FENCE_TAG.sub(lambda m: f"‹{m.group(1)}{m.group(2)}›", value)


def load(name: str) -> PromptTemplate:
    # Read at every use, not cached: a long-running `serve` process sees an
    # edited template at once (and its new hash keys new LLM calls).
    try:
        text = resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PromptError(f"no prompt template named {name!r}") from None
    return PromptTemplate(name=name, text=text)


def render(name: str, **values: object) -> RenderedPrompt:
    return load(name).render(**values)


def snippet(name: str) -> str:
    """A plain text file from prompts/ used as a value inside another template."""
    return resources.files(__package__).joinpath(f"{name}.txt").read_text(encoding="utf-8").strip()
