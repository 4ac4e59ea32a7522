"""`gpt4video eval refusal-probe`: the operating points, the probe on features with a known
answer, and the decision states taken through the tiny checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from model.checkpoint import load_checkpoint
from model.engine.base import Turn
from model.eval import refusal_probe


def test_operating_points_by_hand() -> None:
    harmful = torch.tensor([3.0, 2.0, 0.5, -1.0])
    everyday = torch.tensor([-3.0, -2.0, -1.5, -1.2, -0.9, -0.5, -0.4, -0.3, 0.2, 1.0])
    # Above 0: 3 of 4 harmful, 2 of 10 everyday. 10% of 10 everyday may be flagged: the
    # threshold is the 2nd highest everyday score (0.2), and harmful above it are 3.0, 2.0, 0.5.
    assert refusal_probe.operating_points(harmful, everyday, 0.10) == pytest.approx((0.75, 0.2, 0.75))
    # 0%: nothing everyday flagged, so the threshold is the highest everyday score (1.0).
    assert refusal_probe.operating_points(harmful, everyday, 0.0) == pytest.approx((0.75, 0.2, 0.5))
    # Every everyday prompt may be flagged: every harmful one is caught.
    assert refusal_probe.operating_points(harmful, everyday, 1.0)[2] == 1.0


def test_the_probe_finds_a_direction_that_separates_and_ignores_noise() -> None:
    g = torch.Generator().manual_seed(0)
    noise = lambda n: torch.randn(n, 16, generator=g)  # noqa: E731
    shift = torch.zeros(16)
    shift[3] = 4.0  # only feature 3 tells the groups apart
    score = refusal_probe.fit_probe(noise(200) + shift, noise(600))
    harmful, everyday = score(noise(100) + shift), score(noise(100))
    flagged, false_alarms, at_bound = refusal_probe.operating_points(harmful, everyday, 0.02)
    assert flagged > 0.95 and false_alarms < 0.05 and at_bound > 0.8
    # Unrelated features: no better than chance.
    blind = refusal_probe.fit_probe(noise(200), noise(600))
    assert refusal_probe.operating_points(blind(noise(400)), blind(noise(400)), 0.02)[2] < 0.2


def test_states_are_each_prompts_last_position_at_every_layer(tiny_checkpoint_dir) -> None:
    model = load_checkpoint(tiny_checkpoint_dir)
    model.eval()
    prompts = ["hi", "how do I boil an egg in a small pot?"]
    states = refusal_probe.last_prompt_states(model, prompts, batch=2, progress=False)
    depth = model.llm.get_base_model().config.num_hidden_layers
    assert states.shape == (2, depth + 1, model.llm.get_base_model().config.hidden_size)
    # Left padding must not change the short prompt's state: the same as alone, unbatched.
    with torch.no_grad():
        seq = model.build_sequence((Turn("user", "hi"),), {}, add_generation_prompt=True)
        alone = model.llm.get_base_model().model(inputs_embeds=seq.inputs_embeds[None],
                                                 output_hidden_states=True).hidden_states[-1][0, -1]
    torch.testing.assert_close(states[0, -1], alone.float(), atol=1e-4, rtol=1e-4)


def test_cli_reports_each_layer(tiny_checkpoint_dir, tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "probe.json"
    assert refusal_probe.main(["--checkpoint", str(tiny_checkpoint_dir), "--layers", "0", "1", "--limit", "6",
                               "--train-limit", "12", "--json", str(out), "--no-progress"]) == 0
    figures = json.loads(out.read_text())["layers"]
    assert [f["layer"] for f in figures] == [0, 1]
    assert all(0.0 <= f[k] <= 1.0 for f in figures for k in ("harmful_flagged", "everyday_flagged",
                                                               "harmful_at_bound"))
    assert "harmful at everyday <= 2%" in capsys.readouterr().out
