"""Build a complete, tiny, randomly initialised text-to-video pipeline and save it.

The result is a real `TextToVideoSDPipeline` directory (model_index.json, UNet3D, VAE,
CLIP text encoder, a byte-level BPE tokenizer written here, DDIM scheduler) that the
worker loads through the same `DiffusionPipeline.from_pretrained` path as a real
checkpoint. Seeded, so two builds with the same seed hold identical weights. It renders
noise-like video in well under a second per job on a CPU: for tests and the local default.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from model.t2v.components import build_pipeline, load_architecture
from model.t2v.profiles import PipelineProfile, write_profile

log = logging.getLogger(__name__)

# Its sizes are model/t2v/configs/tiny.json. What it can do fast: 32x32, 8 frames, a few
# steps. VAE /2 and one UNet downsampling -> sides must be a multiple of 4; 8 keeps a margin.
TINY_PROFILE = PipelineProfile(
    default_num_frames=8, min_num_frames=1, max_num_frames=16,
    default_height=32, default_width=32, min_size=16, max_size=64, size_multiple=8,
    default_fps=8, max_fps=60, default_steps=2, max_steps=200,
    default_guidance_scale=7.5, max_guidance_scale=30.0,
)


def build_tiny_t2v_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """Save a tiny TextToVideoSDPipeline (plus its profile) to `out_dir`; return `out_dir`."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    pipeline = build_pipeline(load_architecture("tiny"))
    pipeline.save_pretrained(out_dir)
    write_profile(out_dir, TINY_PROFILE)
    log.info("tiny text-to-video pipeline written to %s", out_dir)
    return out_dir


def ensure_tiny_t2v_pipeline(out_dir: Path, seed: int = 0) -> Path:
    """Build the tiny pipeline into `out_dir` unless one is there; safe for concurrent callers.

    Builds into a temporary sibling and renames it into place, so a reader never sees a
    half-written pipeline and the loser of a race simply discards its copy.
    """
    out_dir = Path(out_dir)
    if (out_dir / "model_index.json").is_file():
        return out_dir
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        build_tiny_t2v_pipeline(staging, seed=seed)
        os.rename(staging, out_dir)
    except OSError:
        if not (out_dir / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """`build-tiny-t2v OUT_DIR [--seed N]`."""
    parser = argparse.ArgumentParser(prog="build-tiny-t2v", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="directory to write the pipeline into")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = build_tiny_t2v_pipeline(args.out_dir, seed=args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
