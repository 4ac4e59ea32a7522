"""`gpt4video eval t2v` end to end on the tiny random pipeline (pixel judge only)."""

from __future__ import annotations

import json
from pathlib import Path

from model.t2v.eval import main
from model.t2v.tiny import build_tiny_t2v_pipeline


def test_the_report_names_the_sampler_it_rendered_with(tmp_path: Path) -> None:
    # A figure is only comparable with another rendered at the same steps and guidance.
    pipeline = build_tiny_t2v_pipeline(tmp_path / "pipeline", seed=0)
    out = tmp_path / "report.json"
    assert main(["--pipeline", str(pipeline), "--single", "2", "--pairs", "1", "--size", "16", "--frames", "4",
                 "--steps", "2", "--guidance", "2.5", "--no-understanding", "--no-progress", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sampler"] == {"steps": 2, "guidance_scale": 2.5}
    assert report["judges"]["pixel"]["generated"]["1"]["videos"] == 2
    assert report["judges"]["pixel"]["generated"]["2"]["videos"] == 1
    assert report["judges"]["pixel"]["real"]["1"] == {"colour": 1.0, "shape": 1.0, "motion": 1.0, "videos": 2}
    assert report["render_s"]["videos"] == 3
