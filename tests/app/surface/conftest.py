"""One service for the tests of the service's outer surfaces (OpenAI-compatible routes,
the OpenAPI contract, /metrics), started once for this package: real Redis, the real API
and LLM worker on the scripted checkpoint, with API keys and a metrics token set."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.app.conftest import Service, running_service

KEY = "surface-key-a"
OTHER_KEY = "surface-key-b"
METRICS_TOKEN = "surface-metrics-token"
# MAX_MESSAGES x MAX_PROMPT_CHARS fit the tiny model's context (2048 tokens), so every
# conversation the schema admits is one the model can take (no context_too_long 422);
# MAX_NEW_TOKENS_LIMIT keeps the contract run's longest replies short on a shared CPU.
SURFACE_ENV = {"API_KEYS": f"{KEY},{OTHER_KEY}", "METRICS_TOKEN": METRICS_TOKEN,
               "MAX_UPLOAD_BYTES": str(1024 * 1024), "SERVED_MODEL_NAME": "gpt4video-test",
               "MAX_MESSAGES": "4", "MAX_PROMPT_CHARS": "300", "MAX_NEW_TOKENS_LIMIT": "48"}


@pytest.fixture(scope="package")
def service(scripted_checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(scripted_checkpoint_dir, tmp_path_factory.mktemp("surface"), SURFACE_ENV) as svc:
        yield svc
