"""The language model: a transformers causal LM (LLaMA family) carrying a PEFT LoRA.

The adapter is a plain PEFT LoRA (no `modules_to_save`) so vLLM can load the same
directory. Reference: r=16, alpha=16, dropout 0.1 on q_proj and v_proj.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LLMConfig:
    # transformers model + tokenizer dir (relative to the checkpoint, or absolute); unused with `base`
    path: str | None = "llm"
    dtype: str = "float32"
    # A named base built from a registry package (`model.bases`), kept frozen and not
    # stored in the checkpoint; `base_sha256` is its source's hash, checked at load.
    base: str | None = None
    base_sha256: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.base is None):
            raise ValueError("llm: give exactly one of `path` (a directory) and `base` (a named base)")


@dataclass(frozen=True)
class LoRASettings:
    path: str = "lora"  # PEFT adapter dir (relative to the checkpoint, or absolute)
    r: int = 16
    alpha: int = 16
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"llm.dtype {name!r} is not one of {sorted(DTYPES)}")
    return DTYPES[name]


def load_base_llm(path: Path, dtype: str, device: str) -> tuple[nn.Module, PreTrainedTokenizerBase]:
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), local_files_only=True)
    return model.to(device), tokenizer


@contextlib.contextmanager
def _no_peft_checkpointing_warning() -> Iterator[None]:
    """PEFT 0.21 reads transformers 5's deprecated `is_gradient_checkpointing` when it wraps a
    model, a FutureWarning about library internals in every worker start; only that one is muted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def attach_new_lora(base: nn.Module, cfg: LoRASettings) -> PeftModel:
    lora = LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM",
    )
    with _no_peft_checkpointing_warning():
        return get_peft_model(base, lora)


def load_lora(base: nn.Module, adapter_dir: Path, trainable: bool = False) -> PeftModel:
    with _no_peft_checkpointing_warning():
        return PeftModel.from_pretrained(base, adapter_dir, is_trainable=trainable)


def base_state_dict(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    """The base model's own weights, with PEFT's wrapping undone (for saving the base)."""
    base = peft_model.get_base_model()
    clean: dict[str, torch.Tensor] = {}
    for name, tensor in base.state_dict().items():
        if "lora_" in name:
            continue
        clean[name.replace(".base_layer.", ".")] = tensor
    return clean


class EmbeddingTableOnly(nn.Module):
    """Stands in for the LLM where only its input embedding table is needed.

    The vLLM worker builds prompt embeddings (text + spliced video tokens) itself while
    vLLM holds the real LLM; loading the whole model a second time would double its GPU
    memory (13 GB for LLaMA-7B in fp16) and starve vLLM.
    """

    def __init__(self, embeddings: nn.Embedding) -> None:
        super().__init__()
        self.embed_tokens = embeddings

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def forward(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("this model was loaded with llm_weights='embeddings': it can only embed tokens")


def load_embedding_table(path: Path, dtype: str, device: str) -> tuple[EmbeddingTableOnly, PreTrainedTokenizerBase]:
    """Read just `*embed_tokens.weight` from the LLM's safetensors (sharded or not)."""
    import json

    from safetensors import safe_open

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        candidates = [(k, path / f) for k, f in weight_map.items() if k.endswith("embed_tokens.weight")]
    else:
        single = path / "model.safetensors"
        if not single.is_file():
            raise FileNotFoundError(f"{path}: no model.safetensors(.index.json) to read the embedding table from")
        with safe_open(str(single), framework="pt") as fh:
            candidates = [(k, single) for k in fh.keys() if k.endswith("embed_tokens.weight")]  # noqa: SIM118
    if not candidates:
        raise KeyError(f"{path}: no '*embed_tokens.weight' tensor in the LLM weights")
    key, file = candidates[0]
    with safe_open(str(file), framework="pt", device="cpu") as fh:
        weight = fh.get_tensor(key)  # (V, D)
    table = nn.Embedding.from_pretrained(weight.to(torch_dtype(dtype)), freeze=True)
    return EmbeddingTableOnly(table).to(device), tokenizer
