"""The checkpoint's LoRA merged into a copy of its base LLM, for vLLM (VLLM_LORA_MODE=merged).

vLLM then serves a plain LLaMA: no `enable_lora`, so neither vLLM issue 51122
(prompt_embeds + LoRA kills the EngineCore under concurrency) nor PR 48421 (CPU LoRA ops
apply the adapter to base-model rows) is reachable, and decoding runs without the LoRA
kernels (and, on the CPU backend, with compilation left on).

The merge (PEFT `merge_and_unload`) runs once per (base, adapter) pair: the result is
kept under a cache directory, keyed by the adapter's bytes and the base's files, and
reused by every later start. It is written to a temporary directory and renamed into
place, so workers that start together never see half a model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

_COMPLETE = "gpt4video-merged.json"  # written last: a directory without it is not used
# The base's weights are replaced by the merged ones; every other file (tokenizer, chat
# template, generation config) is copied as it is.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


class MergeError(RuntimeError):
    """The adapter could not be merged into the base; the message says why."""


def merge_key(llm_dir: Path, lora_dir: Path) -> str:
    """Identifies a merge: the adapter's bytes, the base's config bytes, and the base's
    weight files by name, size and modification time (hashing a 7B base would take a minute)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(lora_dir).iterdir() if p.is_file()):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    for path in sorted(p for p in Path(llm_dir).iterdir() if p.is_file()):
        if path.name.endswith(_WEIGHT_SUFFIXES):
            stat = path.stat()
            digest.update(f"{path.name}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        else:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:24]


def merged_llm_dir(llm_dir: Path, lora_dir: Path, cache_dir: Path) -> Path:
    """The directory of `llm_dir` with `lora_dir` merged in, built on first use."""
    llm_dir, lora_dir, cache_dir = Path(llm_dir), Path(lora_dir), Path(cache_dir)
    key = merge_key(llm_dir, lora_dir)
    target = cache_dir / key
    if (target / _COMPLETE).is_file():
        log.info("merged LLM (base %s + LoRA %s) from cache %s", llm_dir, lora_dir, target)
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("merging LoRA %s into base %s (once; cached at %s)", lora_dir, llm_dir, target)
    work = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache_dir))
    try:
        _merge_into(llm_dir, lora_dir, work)
        (work / _COMPLETE).write_text(json.dumps(
            {"base": str(llm_dir), "lora": str(lora_dir), "key": key}, indent=2))
        try:
            os.rename(work, target)
        except OSError:  # another process finished the same merge first
            if not (target / _COMPLETE).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _merge_into(llm_dir: Path, lora_dir: Path, out: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    try:
        base = AutoModelForCausalLM.from_pretrained(llm_dir, dtype="auto", device_map=None)
        dtype = base.dtype
        # Merge in float32 (W + s * B @ A once, without rounding the delta to 16 bit),
        # save in the base's own dtype.
        base = base.to(torch.float32)
        merged = PeftModel.from_pretrained(base, lora_dir).merge_and_unload()
    except Exception as exc:
        raise MergeError(f"could not merge the LoRA adapter {lora_dir} into {llm_dir}: {exc}. "
                         "Check that the adapter was trained on this base, or set "
                         "VLLM_LORA_MODE=lora to serve it unmerged") from exc
    merged.to(dtype).save_pretrained(out, safe_serialization=True)
    for path in llm_dir.iterdir():
        if path.is_file() and not path.name.endswith(_WEIGHT_SUFFIXES) and path.name not in _WEIGHT_INDEXES \
                and not (out / path.name).exists():
            shutil.copy2(path, out / path.name)
    # save_pretrained rewrote config.json; the base's own one says what the LLM is.
    shutil.copy2(llm_dir / "config.json", out / "config.json")
