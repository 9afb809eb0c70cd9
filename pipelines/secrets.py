"""Keep API keys out of everything longsum writes: DB rows, logs, errors."""

from __future__ import annotations

import os
import re

SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "LONGSUM_API_KEY")
# Shapes of provider keys and bearer tokens, redacted even when not from our env.
_KEY_SHAPES = re.compile(
    r"(sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{8,}|(?i:bearer)\s+[A-Za-z0-9._\-]{8,}|(?i:x-api-key)[\"':\s=]+[A-Za-z0-9._\-]{8,})"
)


def redact(text: str) -> str:
    for var in SECRET_ENV_VARS:
        value = os.environ.get(var)
        if value and len(value) >= 4:
            text = text.replace(value, "***")
    return _KEY_SHAPES.sub("***", text)
