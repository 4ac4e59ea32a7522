"""Several training runs in one process (the recipe runs its stages in-process)."""

from __future__ import annotations

from model.train.common import TrainConfig, make_accelerator


def test_runs_in_one_process_may_use_different_mixed_precision() -> None:
    # The recipe's stage 0 runs in fp32 and its stage 1 in bf16 in the same process;
    # accelerate used to refuse the second Accelerator ("AcceleratorState has already
    # been initialized and cannot be changed").
    first = make_accelerator(TrainConfig(mixed_precision="no"))
    assert first.mixed_precision == "no"
    second = make_accelerator(TrainConfig(mixed_precision="bf16", grad_accum=2))
    assert second.mixed_precision == "bf16"
    assert second.gradient_accumulation_steps == 2
    third = make_accelerator(TrainConfig(mixed_precision="no"))
    assert third.mixed_precision == "no"
