"""Where the trained text-to-video pipeline ships in the repository.

`gpt4video train t2v --out model/checkpoints/t2v-shapes` rebuilds it; the t2v worker
loads it when T2V_MODEL_DIR is unset (and builds the tiny random pipeline only when this
directory is absent).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_T2V_PIPELINE = Path(__file__).resolve().parents[1] / "checkpoints" / "t2v-shapes"
