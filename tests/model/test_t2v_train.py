"""`gpt4video train t2v` on tiny sizes: the losses fall, and the saved directory is a
pipeline that `DiffusionPipeline.from_pretrained` loads and renders with."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, TextToVideoSDPipeline

from model.t2v.train import main as train_main

ARGS = ["--arch", "tiny", "--train-clips", "8", "--val-clips", "4", "--vae-steps", "12", "--vae-batch-size", "8",
        "--vae-lr", "3e-3", "--steps", "12", "--batch-size", "4", "--lr", "3e-3", "--warmup-steps", "1",
        "--eval-every", "4", "--save-every", "6", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("t2v-train")
    out = root / "pipeline"
    assert train_main([*ARGS, "--out", str(out), "--work", str(root / "work")]) == 0
    log = [json.loads(line) for line in (out / "training_log.jsonl").read_text().splitlines()]
    return out, log[-1]


def test_a_few_steps_lower_both_losses(trained: tuple[Path, dict]) -> None:
    _, report = trained
    vae = report["stage_a_vae"]
    assert vae["last_loss"] < vae["first_loss"]
    val = [loss for _, loss in report["stage_b_denoiser"]["val_losses"]]
    # Validation draws the same noise every pass, so the passes compare.
    assert val[-1] < val[0], val


def test_saved_pipeline_loads_and_renders_the_asked_shape(trained: tuple[Path, dict]) -> None:
    out, _ = trained
    pipeline = DiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert isinstance(pipeline, TextToVideoSDPipeline)
    pipeline.set_progress_bar_config(disable=True)
    frames = pipeline("a red circle moves up", num_frames=4, height=32, width=24, num_inference_steps=2,
                      generator=torch.Generator().manual_seed(0), output_type="np").frames
    assert np.asarray(frames).shape == (1, 4, 32, 24, 3)
    assert (out / "g4v_t2v_profile.json").is_file()


def test_resume_continues_from_the_saved_state(trained: tuple[Path, dict], tmp_path: Path) -> None:
    out, report = trained
    work = out.parent / "work"
    more = [a if a != "12" or i != ARGS.index("--steps") + 1 else "14" for i, a in enumerate(ARGS)]
    assert train_main([*more, "--out", str(out), "--work", str(work), "--resume"]) == 0
    last = json.loads((out / "training_log.jsonl").read_text().splitlines()[-1])
    assert last["stage_a_vae"] == report["stage_a_vae"]  # stage A was done: not run again
    assert last["stage_b_denoiser"]["steps"] == 14
    assert [s for s, _ in last["stage_b_denoiser"]["val_losses"]][-1] == 14


def test_continue_from_keeps_the_vae_and_trains_the_denoiser_on(trained: tuple[Path, dict], tmp_path: Path) -> None:
    from diffusers import AutoencoderKL, UNet3DConditionModel

    source = tmp_path / "source"
    shutil.copytree(trained[0], source)
    # A profile tuned after training (the guidance chosen by a sweep) travels on.
    tuned = json.loads((source / "g4v_t2v_profile.json").read_text()) | {"default_guidance_scale": 7.5}
    (source / "g4v_t2v_profile.json").write_text(json.dumps(tuned))
    out = tmp_path / "continued"
    earlier = (source / "training_log.jsonl").read_text().splitlines()
    assert train_main([*ARGS, "--out", str(out), "--work", str(tmp_path / "work"),
                       "--continue-from", str(source)]) == 0
    log = (out / "training_log.jsonl").read_text().splitlines()
    assert log[:-1] == earlier  # the source's history, then this run
    assert json.loads(log[-1])["stage_a_vae"] == {"from": str(source)}  # no stage A
    for name, module in (("vae", AutoencoderKL), ("unet", UNet3DConditionModel)):
        before = module.from_pretrained(source / name).state_dict()
        after = module.from_pretrained(out / name).state_dict()
        same = all(torch.equal(before[k], after[k]) for k in before)
        assert same is (name == "vae"), name  # the VAE is kept, the UNet trained on
    assert isinstance(DiffusionPipeline.from_pretrained(out, local_files_only=True), TextToVideoSDPipeline)
    assert json.loads((out / "g4v_t2v_profile.json").read_text()) == tuned
    with pytest.raises(SystemExit):
        train_main([*ARGS, "--out", str(out), "--continue-from", str(out)])
