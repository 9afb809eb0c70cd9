"""Defaults shared by the CLI, the library and the flows (no imports: the CLI
reads these at start-up)."""

# BooookScore's ratio of words to tokens, used to turn token limits into the
# word counts that prompts ask for.
WORDS_PER_TOKEN = 0.65
DEFAULT_SUMMARY_WORDS = 585  # = BooookScore's default 900-token summary limit
DEFAULT_CHUNK_TOKENS = 2048
DEFAULT_MODEL = "llamacpp"
