"""Fixes for two upstream vLLM bugs that the project's engine reaches with LoRA enabled.

vLLM calls `register()` in each of its processes (entry point group
`vllm.general_plugins`, see vllm/plugins/__init__.py), before the model runner exists.
Each fix is a no-op where it is not needed, and idempotent (vLLM may load plugins more
than once in a process). `VLLM_PLUGINS=""` disables the plugin; GPT4VIDEO_VLLM_FIXES
picks single fixes (see `register`).

1. vLLM issue 51122 (fix proposed in PR 51123, not merged as of vLLM 0.33):
   `enable_prompt_embeds=True` + `enable_lora=True` on a model whose `embed_tokens` is
   LoRA-wrapped (LLaMA declares `embedding_modules`). In `GPUModelRunner._preprocess`
   (also the CPU runner's), a step holding a prompt_embeds prefill beside token-id rows
   embeds only the gathered token-id rows, while the punica LoRA metadata indexes rows of
   the whole batch: on a GPU `illegal memory access` kills the EngineCore; on the CPU
   `einsum(): subscript b has size ... does not broadcast`. The fix embeds the whole
   scheduled batch (ids at prompt_embeds rows zeroed, as the multimodal branch above it
   does) and hands back the token-id rows, so the LoRA metadata lines up.

2. vLLM PR 48421 (open): the CPU LoRA ops (vllm/lora/ops/torch_ops/lora_ops.py) index the
   stacked adapters with `token_lora_indices`, where -1 means "no LoRA"; -1 selects the
   *last* adapter slot, so a base-model request batched beside a LoRA request silently
   gets the adapter. The fix clamps the index and zeroes the delta of -1 rows, as the
   Triton kernels' early exit does. CPU platform only.
"""

from __future__ import annotations

import functools
import logging
import os
from typing import Any

log = logging.getLogger("gpt4video_vllm_fixes")

_MARK = "_gpt4video_fixed"
# vLLM releases whose CPU LoRA ops have the -1 bug (PR 48421); the reimplemented ops
# below are copies of theirs plus the mask, so they are only swapped in where they match.
_LORA_OPS_FIXED_FOR = ("0.32.", "0.33.")


def register() -> None:
    """vLLM's plugin hook: apply every fix this process needs.

    GPT4VIDEO_VLLM_FIXES (comma-separated, default "51122,48421") picks the fixes, so a
    test can show what each one prevents."""
    wanted = os.environ.get("GPT4VIDEO_VLLM_FIXES", "51122,48421").split(",")
    if "51122" in wanted:
        _fix_prompt_embeds_with_lora()
    if "48421" in wanted:
        _fix_cpu_lora_ops_no_lora_index()


# -- 1. vLLM issue 51122 ----------------------------------------------------------------------


def _fix_prompt_embeds_with_lora() -> None:
    from vllm.v1.worker import gpu_model_runner

    runner_cls = gpu_model_runner.GPUModelRunner
    original = runner_cls._preprocess
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def _preprocess(self: Any, scheduler_output: Any, num_input_tokens: int, *args: Any, **kwargs: Any):
        if not (self.lora_config and self.enable_prompt_embeds) or self.supports_mm_inputs:
            return original(self, scheduler_output, num_input_tokens, *args, **kwargs)
        import torch

        num_scheduled = scheduler_output.total_num_scheduled_tokens
        model = self.model
        embed = model.embed_input_ids

        def embed_whole_batch(input_ids: torch.Tensor | None = None, *eargs: Any, **ekwargs: Any):
            if eargs or ekwargs or input_ids is None or input_ids.shape[0] == num_scheduled:
                return embed(input_ids, *eargs, **ekwargs)  # already the whole batch
            # The buggy call: `input_ids` are the token-id rows gathered out of the batch.
            is_token_ids = torch.from_numpy(self.is_token_ids.np[:num_scheduled]).to(
                self.input_ids.gpu.device)  # (N,) bool
            safe_ids = torch.where(is_token_ids, self.input_ids.gpu[:num_scheduled], 0)  # (N,)
            whole = embed(input_ids=safe_ids)  # (N, D): row i is batch row i, as LoRA expects
            return whole[is_token_ids]  # (n_token_rows, D), in the order of the gather

        model.embed_input_ids = embed_whole_batch
        try:
            return original(self, scheduler_output, num_input_tokens, *args, **kwargs)
        finally:
            del model.embed_input_ids  # back to the class's method

    setattr(_preprocess, _MARK, True)
    runner_cls._preprocess = _preprocess
    log.debug("gpt4video fix for vLLM issue 51122 (prompt_embeds + LoRA) applied")


# -- 2. vLLM PR 48421 -------------------------------------------------------------------------


def _fix_cpu_lora_ops_no_lora_index() -> None:
    import vllm
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return  # the GPU path uses the Triton kernels, which skip -1 rows
    if not vllm.__version__.startswith(_LORA_OPS_FIXED_FOR):
        log.warning("vLLM %s: the fix for PR 48421 (CPU LoRA ops, index -1) is written for %s and "
                    "is not applied; check whether that release still needs it",
                    vllm.__version__, "/".join(v + "x" for v in _LORA_OPS_FIXED_FOR))
        return
    from vllm.lora.ops import torch_ops
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    if getattr(lora_ops.bgmv_shrink, _MARK, False):
        return
    fixed = {"bgmv_shrink": _bgmv_shrink, "bgmv_expand": _bgmv_expand,
             "bgmv_expand_slice": _bgmv_expand_slice}
    for name, fn in fixed.items():
        setattr(fn, _MARK, True)
        # lora_ops' sgmv_* call these through its globals; the others imported the names.
        for module in (lora_ops, torch_ops, punica_cpu):
            if hasattr(module, name):
                setattr(module, name, fn)
    log.debug("gpt4video fix for vLLM PR 48421 (CPU LoRA ops, index -1) applied")


def _select(lora_weights: Any, lora_indices: Any, dtype: Any):
    """The adapter of each row, and which rows have none (index -1)."""
    no_lora = lora_indices < 0  # (B,)
    selected = lora_weights[lora_indices.clamp(min=0)].to(dtype=dtype)  # (B, [1,] O, I)
    if len(selected.shape) == 4:
        selected = selected.squeeze(dim=1)
    return selected, no_lora


def _bgmv_expand(inputs, lora_b_weights, output_tensor, lora_indices_tensor, add_inputs=True):
    import torch

    selected, no_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    outputs = outputs.masked_fill(no_lora[:, None], 0)  # (B, O)
    limit = output_tensor.shape[0]
    if outputs.shape[0] == 1 and output_tensor.shape[0] != 1:
        limit = 1
    common_len = min(outputs.shape[1], output_tensor.shape[1])
    if add_inputs:
        output_tensor[:, :common_len] += outputs[:limit, :common_len]
    else:
        output_tensor[:, :common_len] = outputs[:limit, :common_len]


def _bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
    import torch

    selected, no_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    outputs = outputs.masked_fill(no_lora[:, None], 0)  # (B, O)
    output_tensor[:, : outputs.shape[1]] = scaling * outputs[:]


def _bgmv_expand_slice(inputs, lora_b_weights, output_tensor, lora_indices_tensor, slice_offset,
                       slice_size, add_inputs=True):
    import torch

    selected, no_lora = _select(lora_b_weights, lora_indices_tensor, output_tensor.dtype)
    outputs = torch.einsum("bi, boi -> bo", inputs.to(dtype=output_tensor.dtype), selected)
    outputs = outputs.masked_fill(no_lora[:, None], 0)  # (B, O)
    if add_inputs:
        output_tensor[:, slice_offset: slice_offset + slice_size] += outputs[:]
    else:
        output_tensor[:, slice_offset: slice_offset + slice_size] = outputs[:]
