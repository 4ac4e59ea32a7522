"""The whole service with ENGINE=vllm: the API, LLM workers on the vllm engine and a t2v
worker, as subprocesses on real Redis, pass the hf service's end-to-end cases (tests/app):
upload, understand, chat, streaming, a caption rendered by the t2v worker, and the takeover
of a killed worker's request. On whatever vLLM is installed: its CPU backend in CI
(`make test-vllm`, from .venv-vllm; every process runs from that venv), a GPU where lent.

The cases are the tests/app functions themselves, collected here with this module's
settings (`SERVICE_ENV`, read by the `service` fixture) and its checkpoint: the same
scripted replies (`tests.app.conftest.SCRIPT`, taught by fine-tuning) on a tiny LLM of head
size 32, which vLLM's CPU attention accepts (it rejects the suite's head size 16).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here (make vllm-env, or pip install .[gpu])")
pytestmark = [pytest.mark.gpu, pytest.mark.slow]

from tests.app import conftest as app_conftest  # noqa: E402
from tests.app import test_e2e, test_faults, test_video_jobs  # noqa: E402
from tests.app.conftest import SCRIPT, Service  # noqa: E402

# The shared fixtures and cases, collected here: they run with this module's SERVICE_ENV
# and checkpoint, in the order they are assigned (pytest collects in definition order).
service = app_conftest.service
video_file = test_e2e.video_file
tiny_t2v_dir = test_video_jobs.tiny_t2v_dir
test_health_and_readiness = test_e2e.test_health_and_readiness
test_upload_is_content_addressed_and_probed = test_e2e.test_upload_is_content_addressed_and_probed
test_understand_an_uploaded_video = test_e2e.test_understand_an_uploaded_video
test_chat_with_video_reference = test_e2e.test_chat_with_video_reference
test_reply_caption_becomes_a_queued_job = test_e2e.test_reply_caption_becomes_a_queued_job
test_streaming_chat_sends_deltas_then_the_result = test_e2e.test_streaming_chat_sends_deltas_then_the_result

ON_GPU = torch.cuda.is_available()
SERVICE_ENV = {
    "ENGINE": "vllm",
    "DEVICE": "cuda" if ON_GPU else "cpu",
    # float32 on the CPU: the scripted replies come out as the hf engine gives them.
    "VLLM_DTYPE": "float16" if ON_GPU else "float32",
    "VLLM_MAX_MODEL_LEN": "1024", "VLLM_MAX_NUM_SEQS": "16", "VLLM_GPU_MEMORY_UTILIZATION": "0.3",
    "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENFORCE_EAGER": "true",  # no compile warm-up: a quicker start
    "LLM_REQUEST_TIMEOUT_S": "60",
}
# A vLLM worker loads the checkpoint, then starts vLLM: its EngineCore and CPU worker are
# spawned processes that import vLLM again (minutes on 2 cores shared with other work).
WORKER_START_TIMEOUT_S = 600
# The taken-over request waits for the second worker to start.
TAKEOVER_TIMEOUT_S = WORKER_START_TIMEOUT_S


@pytest.fixture(scope="session")
def scripted_checkpoint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from model.tiny import TinySizes, build_tiny_checkpoint
    from tests.scripted import build_scripted_checkpoint

    sizes = TinySizes(llm_heads=2, llm_kv_heads=1)  # head size 32 at the suite's width
    base = build_tiny_checkpoint(tmp_path_factory.mktemp("tiny-head32"), seed=0, sizes=sizes)
    return build_scripted_checkpoint(base, tmp_path_factory.mktemp("scripted-head32"), SCRIPT)


def test_the_worker_serves_with_vllm(service: Service) -> None:
    worker = service.workers[0]
    log = worker.log_path.read_text(errors="replace")  # all of it: log() is the tail
    assert "engine: vllm" in log and "vLLM engine up on" in log, worker.log()


def test_concurrent_requests_all_get_their_scripted_reply(service: Service) -> None:
    """The hf case counts the worker's batches (BatchingEngine); vLLM batches inside itself,
    so here: 8 requests at once, each answered with its own reply."""
    name = service.workers[0].name
    time.sleep(1.2)  # let the last heartbeat publish the stats of earlier tests
    before = service.worker_stats(name)["requests"]
    prompts = ["hello", "show me a red circle", "make a knife video", "hello"] * 2

    def ask(prompt: str) -> tuple[int, str]:
        with service.client() as c:
            r = c.post("/v1/chat", json={"messages": [{"role": "user", "content": prompt}], "max_new_tokens": 40})
            return r.status_code, r.json()["message"]["content"] if r.status_code == 200 else r.text

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, prompts))
    assert [code for code, _ in answers] == [200] * 8, answers
    assert answers[0][1] == answers[3][1] == SCRIPT["hello"]
    assert answers[1][1] == "Here it is: [video:0] Enjoy!"
    time.sleep(1.2)  # one heartbeat publishes the stats
    assert service.worker_stats(name)["requests"] - before == 8


def test_killed_worker_requests_are_taken_over(service: Service, tmp_path: Path,
                                               request: pytest.FixtureRequest) -> None:
    """After the cases that expect the first worker: it kills that one, a second one serves."""
    test_faults.test_killed_worker_requests_are_taken_over(service, tmp_path, request)


# The render goes to a t2v worker that joins service.workers, so it comes after the cases
# that count the LLM workers.
test_caption_is_rendered_and_served = test_video_jobs.test_caption_is_rendered_and_served
