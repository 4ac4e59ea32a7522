"""`pick_mixed_precision`: bf16 only where the hardware computes it; emulated bf16 is never the default."""

from __future__ import annotations

import logging

import pytest
import torch

from model.train import common
from model.train.common import pick_mixed_precision


@pytest.fixture
def cpu_only(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return monkeypatch


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "no")])
def test_auto_takes_bf16_on_a_cpu_only_where_it_is_native(cpu_only, native: bool, expected: str) -> None:
    cpu_only.setattr(common, "cpu_computes_bf16", lambda: native)
    assert pick_mixed_precision("auto") == expected


def test_an_explicit_choice_is_kept_and_emulated_bf16_is_warned_about(cpu_only, caplog) -> None:
    cpu_only.setattr(common, "cpu_computes_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger=common.__name__):
        assert pick_mixed_precision("bf16") == "bf16"
    assert "no native bf16" in caplog.text
    caplog.clear()
    assert pick_mixed_precision("no") == "no" and not caplog.text

