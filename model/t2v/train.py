"""`gpt4video train t2v`: train a small TextToVideoSDPipeline on shapes-world clips.

Why TextToVideoSDPipeline: it is the ModelScope/ZeroScope pipeline the worker already
serves, and every component (AutoencoderKL, UNet3DConditionModel, CLIPTextModel +
CLIPTokenizer, DDIM) can be built small from a config, so the result loads through the
same `DiffusionPipeline.from_pretrained` path as a real checkpoint.

Recipe (sizes in model/t2v/configs/shapes.json), chosen for two CPU cores:
- stage A trains the AutoencoderKL alone on single frames (weighted MSE so the small
  objects stay sharp, tiny KL), then fixes its latent scaling factor to 1 / std;
- every clip is encoded once; stage B trains the UNet3D and the text encoder jointly on
  those latents with the scheduler's v-prediction objective (zero terminal SNR, so
  sampling starts from the pure noise it was trained to remove), 10% empty captions for
  classifier-free guidance. Cross-attention sits in every down and up block.
Both stages run on `model.train.common.train_loop` (accelerate: the same code on a GPU;
tqdm; periodic validation loss; `--resume` from the last saved state; seeds). Stage B's
checkpoints are the whole pipeline, written with `save_pretrained` plus its profile.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, TextToVideoSDPipeline, UNet3DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from model.t2v.components import (
    CONFIGS_DIR,
    T2VArchitecture,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    load_architecture,
    training_noise_scheduler,
)
from model.t2v.data import ClipSet, render_clips, world_for
from model.t2v.losses import DenoiseLoss, VaeLoss, to_unit_range
from model.t2v.profiles import PROFILE_FILENAME, read_profile_overrides
from model.train.common import TrainConfig, add_run_arguments, configure_threads, train_loop, write_log

log = logging.getLogger(__name__)

ARCH_FILENAME = "g4v_t2v_architecture.json"


@dataclass(frozen=True)
class StageOptions:
    steps: int
    batch_size: int
    lr: float
    warmup_steps: int


def encode_ids(tokenizer, captions: list[str]) -> torch.Tensor:
    """Captions -> `(N, L)` token ids, padded as the pipeline pads them."""
    return tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length,
                     truncation=True, return_tensors="pt").input_ids


@torch.no_grad()
def encode_latents(vae: AutoencoderKL, clips: ClipSet, batch: int = 256, progress: bool = True) -> torch.Tensor:
    """Clips `(N, T, S, S, 3)` -> latents `(N, C, T, h, w)` times the VAE's scaling factor."""
    from tqdm import tqdm

    vae.eval()
    n, t = clips.frames.shape[:2]
    flat = torch.from_numpy(clips.frames.reshape(n * t, *clips.frames.shape[2:]))  # (N*T, S, S, 3)
    parts = []
    for i in tqdm(range(0, len(flat), batch), desc="encode clips", disable=not progress):
        x = to_unit_range(flat[i:i + batch]).to(vae.device)  # (b, 3, S, S)
        parts.append(vae.encode(x).latent_dist.mode().cpu())  # (b, C, h, w)
    z = torch.cat(parts)  # (N*T, C, h, w)
    z = z.reshape(n, t, *z.shape[1:]).permute(0, 2, 1, 3, 4).contiguous()  # (N, C, T, h, w)
    return z * vae.config.scaling_factor


def cached_latents(vae: AutoencoderKL, train: ClipSet, val: ClipSet, path: Path, progress: bool) -> torch.Tensor:
    """Train then val latents `(N, C, T, h, w)`, encoded once and kept in `path` for a resumed run.

    The cache is used only if it was made by this VAE (same weights digest) from clips
    with the same captions, else rebuilt.
    """
    key = {"vae": _digest(vae), "captions": _digest_text(train.captions + val.captions)}
    if path.is_file():
        cached = torch.load(path)
        if cached["key"] == key:
            return cached["latents"]
        log.info("latent cache %s is for another VAE or other clips: encoding again", path)
    # On a GPU machine the encoding runs there (tens of thousands of clips), then the VAE
    # goes back where it was: it is saved with every checkpoint.
    home = vae.device
    vae.to("cuda" if torch.cuda.is_available() else home)
    try:
        latents = torch.cat([encode_latents(vae, train, progress=progress),
                             encode_latents(vae, val, progress=progress)])  # (N, C, T, h, w), on the CPU
    finally:
        vae.to(home)
    torch.save({"key": key, "latents": latents}, path)
    return latents


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    h.update(repr(getattr(module, "config", {}).get("scaling_factor")).encode())
    return h.hexdigest()


def _digest_text(texts: list[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def _stage_finished(state_dir: Path, steps: int) -> bool:
    progress = state_dir / "progress.json"
    return progress.is_file() and json.loads(progress.read_text()).get("step", 0) >= steps


def train_vae(arch: T2VArchitecture, train: ClipSet, val: ClipSet, opts: StageOptions, args: argparse.Namespace,
              work: Path) -> tuple[AutoencoderKL, dict]:
    """Stage A; returns the trained VAE (its scaling factor set) and the stage's report."""
    vae_dir, state_dir = work / "vae", work / "vae.train-state"
    if args.resume and _stage_finished(state_dir, opts.steps) and (vae_dir / "config.json").is_file():
        log.info("stage A already done (%s): loading its VAE", vae_dir)
        report = json.loads((work / "vae-report.json").read_text())
        return AutoencoderKL.from_pretrained(vae_dir), report
    torch.manual_seed(args.seed)
    vae = build_vae(arch)
    frames = np.concatenate([train.frames.reshape(-1, *train.frames.shape[2:]),
                             val.frames.reshape(-1, *val.frames.shape[2:])])  # (F, S, S, 3)
    n_train = train.frames.shape[0] * train.frames.shape[1]
    module = VaeLoss(vae, torch.from_numpy(frames))

    def save(unwrapped: VaeLoss, step: int) -> None:
        unwrapped.vae.save_pretrained(vae_dir)

    result = train_loop(_loop_config(opts, args), module, list(range(n_train)), list(range(n_train, len(frames))),
                        save, state_dir=state_dir, resume=args.resume, desc="t2v stage A (vae)")
    vae = AutoencoderKL.from_pretrained(vae_dir)
    # Latents of unit variance, as the UNet's noise schedule assumes.
    sample = encode_latents(vae, ClipSet(train.captions[:64], train.frames[:64]), progress=False)
    std = float((sample / vae.config.scaling_factor).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(vae_dir)
    report = {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
              "val_loss": result.val_losses[-1][1], "wall_s": round(result.wall_s, 1),
              "scaling_factor": 1.0 / std}
    (work / "vae-report.json").write_text(json.dumps(report))
    return vae, report


def train_denoiser(arch: T2VArchitecture, vae: AutoencoderKL, train: ClipSet, val: ClipSet, opts: StageOptions,
                   args: argparse.Namespace, work: Path) -> dict:
    """Stage B; checkpoints write the whole pipeline to `args.out`. With `--continue-from`
    the UNet, text encoder and tokenizer start from that pipeline's (a fresh optimizer)."""
    torch.manual_seed(args.seed + 1)
    if args.continue_from is not None:
        tokenizer = CLIPTokenizer.from_pretrained(args.continue_from / "tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(args.continue_from / "text_encoder")
        unet = UNet3DConditionModel.from_pretrained(args.continue_from / "unet")
    else:
        tokenizer = build_tokenizer(arch)
        text_encoder = build_text_encoder(arch, tokenizer)
        unet = build_unet(arch)
    scheduler = build_scheduler(arch)
    latents = cached_latents(vae, train, val, work / "latents.pt", progress=not args.no_progress)  # (N, C, T, h, w)
    ids = encode_ids(tokenizer, train.captions + val.captions)  # (N, L)
    empty = encode_ids(tokenizer, [""])[0]  # (L,)
    module = DenoiseLoss(unet, text_encoder, training_noise_scheduler(scheduler), latents, ids, empty,
                         caption_dropout=args.caption_dropout)
    n_train = len(train.captions)

    # The profile (sampler defaults, limits): a continued pipeline keeps its source's, which
    # may have been tuned since (its guidance, say); a new one takes the recipe's.
    profile = args.continue_from / PROFILE_FILENAME if args.continue_from is not None else None
    if profile is None or not profile.is_file():
        profile = CONFIGS_DIR / "shapes.profile.json"

    def save(unwrapped: DenoiseLoss, step: int) -> None:
        save_pipeline(args.out, arch, TextToVideoSDPipeline(
            vae=vae, text_encoder=unwrapped.text_encoder, tokenizer=tokenizer, unet=unwrapped.unet,
            scheduler=scheduler), profile)

    result = train_loop(_loop_config(opts, args), module, list(range(n_train)),
                        list(range(n_train, len(latents))), save, state_dir=work / "denoiser.train-state",
                        resume=args.resume, desc="t2v stage B (unet3d + text)")
    return {"steps": result.steps, "first_loss": result.first_loss, "last_loss": result.last_loss,
            "val_losses": result.val_losses, "wall_s": round(result.wall_s, 1)}


def save_pipeline(out: Path, arch: T2VArchitecture, pipeline: TextToVideoSDPipeline, profile: Path) -> None:
    """`save_pretrained` into a sibling, then swap it in: a reader never sees half a pipeline.
    `profile`: the profile file written beside the weights (checked as the worker reads it)."""
    staging = out.with_name(f".{out.name}.saving")
    shutil.rmtree(staging, ignore_errors=True)
    pipeline.save_pretrained(staging)
    (staging / PROFILE_FILENAME).write_text(json.dumps(read_profile_overrides(profile), indent=2))
    (staging / ARCH_FILENAME).write_text(json.dumps(asdict(arch), indent=2))
    for kept in ("training_log.jsonl",):  # what an earlier run left beside the weights
        if (out / kept).is_file():
            shutil.copy2(out / kept, staging / kept)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def _loop_config(opts: StageOptions, args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(steps=opts.steps, batch_size=opts.batch_size, lr=opts.lr, warmup_steps=opts.warmup_steps,
                       eval_every=args.eval_every, eval_batches=args.eval_batches, save_every=args.save_every,
                       seed=args.seed, mixed_precision=args.mixed_precision, progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpt4video train t2v", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="shapes", help="architecture name in model/t2v/configs, or a .json path")
    parser.add_argument("--out", type=Path, required=True, help="pipeline directory to write")
    parser.add_argument("--work", type=Path, help="training state (default: runs/<out name>)")
    parser.add_argument("--stage", default="all", choices=("all", "vae"),
                        help="vae: stop after stage A (e.g. to train the VAE longer, then --resume)")
    parser.add_argument("--continue-from", type=Path,
                        help="a pipeline this command trained: keep its VAE (no stage A) and run stage B on "
                             "from its UNet and text encoder; its training log is carried over")
    parser.add_argument("--train-clips", type=int, default=4000)
    parser.add_argument("--val-clips", type=int, default=128)
    parser.add_argument("--two-object-prob", type=float, default=0.3)
    parser.add_argument("--vae-steps", type=int, default=600)
    parser.add_argument("--vae-batch-size", type=int, default=64, help="frames a VAE batch")
    parser.add_argument("--vae-lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=int, default=3000, help="stage B optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32, help="clips a stage B batch")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=100)
    parser.add_argument("--caption-dropout", type=float, default=0.1)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--eval-batches", type=int, default=4)
    parser.add_argument("--save-every", type=int, default=250, help="checkpoint every N steps (0: at the end)")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configure_threads(args.threads)
    started = time.perf_counter()
    arch = load_architecture(args.arch)
    work = args.work or Path("runs") / args.out.name
    work.mkdir(parents=True, exist_ok=True)
    world = world_for(arch.size, num_frames=8, two_object_prob=args.two_object_prob)
    train = render_clips("train", args.seed, args.train_clips, world, progress=not args.no_progress)
    val = render_clips("val", args.seed, args.val_clips, world, progress=not args.no_progress)

    if args.continue_from is not None:
        if args.continue_from.resolve() == args.out.resolve():
            parser.error("--continue-from must differ from --out (checkpoints replace --out while training)")
        if not (args.continue_from / "model_index.json").is_file():
            parser.error(f"--continue-from {args.continue_from}: no pipeline there (model_index.json)")
        args.out.mkdir(parents=True, exist_ok=True)
        if (args.continue_from / "training_log.jsonl").is_file():
            shutil.copy2(args.continue_from / "training_log.jsonl", args.out / "training_log.jsonl")
        vae = AutoencoderKL.from_pretrained(args.continue_from / "vae")
        vae_report: dict = {"from": str(args.continue_from)}
    else:
        vae, vae_report = train_vae(arch, train, val,
                                    StageOptions(args.vae_steps, args.vae_batch_size, args.vae_lr, 50), args, work)
    if args.stage == "vae":
        print(json.dumps({"stage_a_vae": vae_report}, indent=2))
        return 0
    unet_report = train_denoiser(arch, vae, train, val,
                                 StageOptions(args.steps, args.batch_size, args.lr, args.warmup_steps), args, work)
    report = {"command": "gpt4video train t2v " + " ".join(sys.argv[1:] if argv is None else argv),
              "arch": args.arch, "world": asdict(world), "train_clips": args.train_clips,
              "stage_a_vae": vae_report, "stage_b_denoiser": unet_report,
              "wall_s": round(time.perf_counter() - started, 1)}
    write_log(args.out / "training_log.jsonl", report)
    print(json.dumps(report, indent=2))
    return 0
