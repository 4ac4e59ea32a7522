"""A worker whose frame checker flags everything: the job is refused and nothing is served."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gpt4video.jobs import JobStatus, JobStore
from tests.workers.conftest import WorkerProcess, is_final, submit, wait_for

pytestmark = pytest.mark.slow


def test_a_flagged_video_is_refused_and_never_written(
    start_worker: Callable[..., WorkerProcess], store: JobStore, data_dir: Path
) -> None:
    start_worker("--frame-checker", "tests.workers.checkers:flag_everything")
    record = submit(store, num_frames=12, height=32, width=32)
    done = wait_for(store, record.id, is_final)

    assert done.status == JobStatus.REFUSED
    assert done.result is None
    assert done.error is not None
    assert (done.error["type"], done.error["code"]) == ("refused", "unsafe_output")
    # The checker saw a handful of evenly sampled frames (8 of 12), not the whole clip.
    assert "test-flag-8x32x32x3" in done.error["message"]
    outputs = data_dir / "outputs"
    assert not outputs.exists() or list(outputs.iterdir()) == []
