"""A tiny checkpoint taught (by real fine-tuning) to give fixed replies to fixed prompts.

End-to-end tests need a model whose reply is known in advance, e.g. one that contains a
caption tag. Rather than mocking the engine, the tiny random checkpoint's LoRA and
abstractor are fine-tuned on a handful of (prompt, reply) pairs until greedy decoding
reproduces them, then saved with `save_checkpoint` and served by a real worker.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.checkpoint import load_checkpoint, save_checkpoint
from model.engine.base import Turn


def build_scripted_checkpoint(
    base_dir: Path, out_dir: Path, script: dict[str, str], steps: int = 400, seed: int = 0
) -> Path:
    torch.manual_seed(seed)
    model = load_checkpoint(base_dir, trainable_lora=True)
    model.set_training_mode(train_abstractor=False, train_lora=True)
    # Also train the base embeddings/head: a 64-wide random LLM learns fixed replies faster.
    model.llm.get_base_model().lm_head.requires_grad_(True)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=3e-3)
    sequences = [
        model.build_sequence((Turn("user", prompt), Turn("assistant", reply)), {}, add_generation_prompt=False)
        for prompt, reply in script.items()
    ]
    batch = model.collate(sequences)
    model.train()
    for _ in range(steps):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.002:
            break
    model.eval()
    return save_checkpoint(model, out_dir, model.config)
