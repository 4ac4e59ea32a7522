"""Where the local default models come from when none is configured.

LLM checkpoint: MODEL_DIR if set; else the trained small checkpoint shipped in the
repository (`model/checkpoints/shapes-small`) if present; else a tiny random one built
once under DATA_DIR/models/tiny. Building goes to a temporary directory that is renamed
into place, so concurrent starters never see half a checkpoint.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from gpt4video.settings import Settings

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "model" / "checkpoints" / "shapes-small"


class ModelDirError(RuntimeError):
    """MODEL_DIR points at something that is not a checkpoint."""


def resolve_model_dir(settings: Settings) -> Path:
    if settings.model_dir is not None:
        if not (settings.model_dir / "gpt4video.json").is_file():
            raise ModelDirError(
                f"MODEL_DIR={settings.model_dir} is not a GPT4Video checkpoint (no gpt4video.json); "
                "unset it to use the local default, or build one with `gpt4video build-tiny DIR`"
            )
        return settings.model_dir
    if (SHIPPED_CHECKPOINT / "gpt4video.json").is_file():
        return SHIPPED_CHECKPOINT
    return ensure_tiny_checkpoint(settings.data_dir / "models" / "tiny")


def bases_dir(settings: Settings) -> Path:
    """Where named base LLMs are built (`gpt4video build-base`): BASES_DIR, else DATA_DIR/models/bases."""
    return settings.bases_dir or settings.data_dir / "models" / "bases"


def ensure_base_for(checkpoint_dir: Path, settings: Settings) -> Path | None:
    """Build the named base a checkpoint rests on, once (`make install` already does it);
    None for a checkpoint that carries its own LLM."""
    import json

    llm = json.loads((checkpoint_dir / "gpt4video.json").read_text()).get("llm", {})
    if not llm.get("base"):
        return None
    from model.bases import build_base

    return build_base(llm["base"], bases_dir(settings))


def ensure_tiny_checkpoint(target: Path) -> Path:
    if (target / "gpt4video.json").is_file():
        return target
    from model.tiny import build_tiny_checkpoint

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    log.info("building the tiny local checkpoint at %s", target)
    build_tiny_checkpoint(tmp)
    try:
        os.rename(tmp, target)
    except OSError:  # someone else finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
