"""T2VBackend on the tiny pipeline, in process: loading, parameter checks, generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model.t2v import (
    InvalidVideoParams,
    MemoryOptions,
    T2VBackend,
    T2VConfigError,
    T2VModelNotFound,
)
from model.t2v.profiles import PROFILE_FILENAME
from model.t2v.tiny import TINY_PROFILE


@pytest.fixture(scope="module")
def backend(tiny_t2v_dir: Path) -> T2VBackend:
    torch.set_num_threads(1)
    return T2VBackend.load(tiny_t2v_dir)


def test_tiny_pipeline_loads_through_from_pretrained(backend: T2VBackend) -> None:
    assert backend.pipeline_class == "TextToVideoSDPipeline"
    assert backend.profile == TINY_PROFILE  # read back from the saved profile file


def test_generate_returns_requested_frames_and_reports_every_step(backend: T2VBackend) -> None:
    params = backend.validate({"num_frames": 5, "height": 24, "width": 40,
                               "num_inference_steps": 3, "seed": 11})
    steps: list[tuple[int, int]] = []
    frames = backend.generate("a dog on a beach", params, on_step=lambda i, n: steps.append((i, n)))
    assert frames.shape == (5, 24, 40, 3)
    assert frames.dtype == np.uint8
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_same_seed_same_video_other_seed_other_video(backend: T2VBackend) -> None:
    first = backend.generate("a cat", backend.validate({"seed": 1}))
    again = backend.generate("a cat", backend.validate({"seed": 1}))
    other = backend.generate("a cat", backend.validate({"seed": 2}))
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)


def test_missing_parameters_take_the_profile_defaults(backend: T2VBackend) -> None:
    params = backend.validate({})
    assert (params.num_frames, params.height, params.width) == (8, 32, 32)
    assert (params.fps, params.num_inference_steps) == (8, 2)
    assert 0 <= params.seed < 2**32  # drawn at random and reported back


@pytest.mark.parametrize(("requested", "parameter", "phrase"), [
    ({"num_frames": 100}, "num_frames", "between 1 and 16"),
    ({"num_frames": 0}, "num_frames", "between 1 and 16"),
    ({"height": 36}, "height", "multiple of 8 between 16 and 64"),
    ({"width": 128}, "width", "multiple of 8 between 16 and 64"),
    ({"fps": 0}, "fps", "allowed 1..60"),
    ({"num_inference_steps": 1000}, "num_inference_steps", "allowed 1..200"),
    ({"guidance_scale": -1.0}, "guidance_scale", "allowed 0..30.0"),
    ({"seed": -5}, "seed", "allowed 0..4294967295"),
    ({"num_frames": "8"}, "num_frames", "must be an integer"),
    ({"frames": 8}, "frames", "unknown video parameter"),
])
def test_bad_parameters_name_the_field_and_its_range(
    backend: T2VBackend, requested: dict, parameter: str, phrase: str
) -> None:
    with pytest.raises(InvalidVideoParams) as caught:
        backend.validate(requested)
    assert caught.value.parameter == parameter
    assert parameter in str(caught.value)
    assert phrase in str(caught.value)


def test_a_directory_without_model_index_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(T2VModelNotFound, match=r"model_index\.json"):
        T2VBackend.load(tmp_path)


def test_cpu_offload_on_a_cpu_device_is_a_config_error(tiny_t2v_dir: Path) -> None:
    with pytest.raises(T2VConfigError, match="T2V_CPU_OFFLOAD"):
        T2VBackend.load(tiny_t2v_dir, device="cpu", options=MemoryOptions(cpu_offload=True))


def test_vae_slicing_and_tiling_switch_the_vae(tiny_t2v_dir: Path) -> None:
    backend = T2VBackend.load(tiny_t2v_dir, options=MemoryOptions(vae_slicing=True,
                                                                  vae_tiling=True))
    assert backend.pipeline.vae.use_slicing and backend.pipeline.vae.use_tiling


def test_a_profile_file_with_unknown_keys_is_rejected(tiny_t2v_dir: Path, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(tiny_t2v_dir, tmp_path / "pipeline"))
    (copy / PROFILE_FILENAME).write_text(json.dumps({"max_frames": 10}))
    with pytest.raises(T2VConfigError, match="max_frames"):
        T2VBackend.load(copy)
