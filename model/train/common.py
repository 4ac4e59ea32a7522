"""The training loop shared by every stage.

One loop, CPU or GPU(s): `accelerate` handles devices, bf16 (on GPUs that support it),
multi-GPU data parallelism and gradient accumulation, so the GPU run is this same code.
A stage supplies a module whose `forward(items) -> scalar loss` (so DDP sees the
forward), the training and validation items, and a `save` callback that writes a
checkpoint in the server's format.

Deterministic and resumable: epoch `e` visits the items in the order of a permutation
seeded by `(seed, e)`, so a resumed run recomputes where it was from the step count
saved next to the optimizer state.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from torch import nn
from tqdm import tqdm

log = logging.getLogger(__name__)

STATE_FILE = "progress.json"


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 1000  # optimizer steps
    batch_size: int = 16  # items a micro-batch (a process)
    grad_accum: int = 1  # micro-batches an optimizer step
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    max_grad_norm: float = 1.0
    eval_every: int = 100  # optimizer steps between validation passes (0: only at the end)
    eval_batches: int = 8  # validation micro-batches a pass
    save_every: int = 0  # optimizer steps between checkpoints (0: only at the end)
    seed: int = 0
    mixed_precision: str = "auto"  # auto: bf16 on a CUDA GPU that supports it, else no
    progress: bool = True


@dataclass
class TrainResult:
    steps: int
    train_losses: list[float] = field(default_factory=list)  # one per optimizer step
    val_losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss)
    wall_s: float = 0.0

    @property
    def first_loss(self) -> float:
        return self.train_losses[0] if self.train_losses else math.nan

    @property
    def last_loss(self) -> float:
        tail = self.train_losses[-10:]
        return float(np.mean(tail)) if tail else math.nan


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every `train_loop` command shares: seed, precision, resume, threads, progress."""
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "bf16", "fp16"))
    parser.add_argument("--resume", action="store_true", help="continue from the saved training state")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice)")
    parser.add_argument("--no-progress", action="store_true")


def configure_threads(threads: int | None) -> None:
    """CPU threads for torch; 1 is fastest on a shared machine (busy-waiting threads thrash)."""
    if threads:
        torch.set_num_threads(threads)


def cpu_computes_bf16() -> bool:
    """Whether oneDNN runs bf16 on this CPU's own instructions (AVX512 / AMX).

    Elsewhere (AVX2 only) bf16 autocast is emulated: a stage-2 step took ~170 s instead of
    a few seconds in fp32 on a 2-core AVX2 EPYC.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def pick_mixed_precision(requested: str) -> str:
    """`auto`: bf16 on a GPU that supports it or a CPU that computes it natively, else fp32."""
    if requested != "auto":
        if requested == "bf16" and not torch.cuda.is_available() and not cpu_computes_bf16():
            log.warning("bf16 was asked for, but this CPU has no native bf16 (oneDNN emulates it, many "
                        "times slower than fp32): use --mixed-precision auto or no")
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_computes_bf16() else "no"


def make_accelerator(cfg: TrainConfig) -> Accelerator:
    """A fresh Accelerator for one training run.

    accelerate keeps its state (mixed precision, devices, accumulation) in process-wide
    singletons and refuses a second Accelerator whose settings differ. A process here can
    run several stages one after another (`gpt4video train shapes-default`: stage 0 in
    fp32, stage 1 in bf16), so each run starts from a cleared state, as accelerate's own
    test suite does between tests. A distributed process group, if any, is left alone.
    """
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    return Accelerator(
        mixed_precision=pick_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.grad_accum,
        cpu=not torch.cuda.is_available(),
    )


def warmup_cosine(cfg: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine

    return factor


def micro_batches(
    n_items: int, cfg: TrainConfig, start_micro: int, rank: int = 0, world: int = 1
) -> Iterator[list[int]]:
    """Endless seeded epochs of index batches for this process, from micro-batch `start_micro`."""
    per_epoch = n_items // (cfg.batch_size * world)
    if per_epoch == 0:
        raise TrainingError(
            f"{n_items} training items cannot fill one batch of {cfg.batch_size} x {world} processes; "
            "lower --batch-size or add data"
        )
    micro = start_micro
    while True:
        epoch, offset = divmod(micro, per_epoch)
        order = np.random.default_rng([cfg.seed, epoch]).permutation(n_items)
        start = (offset * world + rank) * cfg.batch_size
        yield [int(i) for i in order[start:start + cfg.batch_size]]
        micro += 1


def _read_progress(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def train_loop(
    cfg: TrainConfig,
    module: nn.Module,
    train_items: Sequence[Any],
    val_items: Sequence[Any],
    save: Callable[[nn.Module, int], None],
    state_dir: Path | None = None,
    resume: bool = False,
    desc: str = "train",
    accelerator: Accelerator | None = None,
) -> TrainResult:
    """Train `module`'s parameters that require grad; call `save(unwrapped, step)` to checkpoint."""
    started = time.perf_counter()
    accelerator = accelerator or make_accelerator(cfg)
    set_seed(cfg.seed)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise TrainingError("nothing to train: no parameter requires grad")
    # A module may split its parameters into groups with their own learning rates.
    groups = module.param_groups(cfg.lr) if hasattr(module, "param_groups") else [{"params": params}]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg))
    # The scheduler is stepped by hand once an optimizer step (accelerate would step it
    # once a process), so the schedule is the same on one CPU and on N GPUs.
    module, optimizer = accelerator.prepare(module, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    result = TrainResult(steps=cfg.steps)
    step = 0
    if resume and state_dir is not None and (progress := _read_progress(state_dir)) is not None:
        accelerator.load_state(str(state_dir))
        step = int(progress["step"])
        result.train_losses = list(progress.get("train_losses", []))
        result.val_losses = [tuple(v) for v in progress.get("val_losses", [])]
        log.info("%s: resumed at step %d from %s", desc, step, state_dir)

    def checkpoint(at: int) -> None:
        accelerator.wait_for_everyone()
        if state_dir is not None:
            accelerator.save_state(str(state_dir))
        if accelerator.is_main_process:
            save(accelerator.unwrap_model(module), at)
            if state_dir is not None:
                progress = {"step": at, "config": asdict(cfg), "train_losses": result.train_losses,
                            "val_losses": result.val_losses}
                (state_dir / STATE_FILE).write_text(json.dumps(progress))

    def validate() -> float:
        if not val_items:
            return math.nan
        module.eval()
        losses = []
        with torch.no_grad():
            for i in range(0, min(len(val_items), cfg.eval_batches * cfg.batch_size), cfg.batch_size):
                losses.append(float(module(list(val_items[i:i + cfg.batch_size]))))
        module.train()
        return float(np.mean(losses))

    batches = micro_batches(len(train_items), cfg, step * cfg.grad_accum,
                            accelerator.process_index, accelerator.num_processes)
    bar = tqdm(total=cfg.steps, initial=step, desc=desc,
               disable=not (cfg.progress and accelerator.is_main_process), dynamic_ncols=True)
    module.train()
    while step < cfg.steps:
        accumulated = 0.0
        for _ in range(cfg.grad_accum):
            items = [train_items[i] for i in next(batches)]
            with accelerator.accumulate(module):
                loss = module(items)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
                optimizer.step()
                if accelerator.sync_gradients:
                    scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            accumulated += float(loss.detach()) / cfg.grad_accum
        step += 1
        result.train_losses.append(accumulated)
        bar.update(1)
        bar.set_postfix(loss=f"{result.last_loss:.4f}")
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
            val = validate()
            result.val_losses.append((step, val))
            log.info("%s step %d: train loss %.4f, val loss %.4f", desc, step, result.last_loss, val)
        if cfg.save_every and step % cfg.save_every == 0 and step < cfg.steps:
            checkpoint(step)
    bar.close()
    val = validate()
    result.val_losses.append((step, val))
    log.info("%s done at step %d: train loss %.4f, val loss %.4f", desc, step, result.last_loss, val)
    checkpoint(step)
    result.wall_s = time.perf_counter() - started
    return result


def write_log(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (stage, steps, losses, wall time) to a training log."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(record) + "\n")
