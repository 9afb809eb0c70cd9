"""Defaults shared by the CLI, the library and the flows (light: the CLI
reads these at start-up)."""

import os

# BooookScore's ratio of words to tokens, used to turn token limits into the
# word counts that prompts ask for.
WORDS_PER_TOKEN = 0.65
DEFAULT_SUMMARY_WORDS = 585  # = BooookScore's default 900-token summary limit
DEFAULT_CHUNK_TOKENS = 2048
# The embedded Qwen2.5-Coder-1.5B-Instruct unless $LONGSUM_MODEL names another
# spec (e.g. `llamacpp:gemma-3-270m`, the fast tiny model the tests use).
DEFAULT_MODEL = os.environ.get("LONGSUM_MODEL", "").strip() or "llamacpp"
