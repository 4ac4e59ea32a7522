"""The OpenAPI document against the running service: schemathesis (`--checks all`, a
bounded deterministic run) finds no failure; every error status is declared with the
error schema; 405 says Allow; /docs renders from local assets."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.app.conftest import Service
from tests.app.surface.conftest import KEY

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

CONFIG = Path(__file__).with_name("schemathesis.toml")
BUDGET_S = 120


def test_schemathesis_finds_no_failures(service: Service, tmp_path: Path) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    report = tmp_path / "schemathesis.txt"
    started = time.monotonic()
    with report.open("w") as out:
        proc = subprocess.run(
            [str(cli), "--no-color", "--config-file", str(CONFIG), "run", f"{service.base_url}/openapi.json",
             "--checks", "all", "--max-examples", "5", "--generation-deterministic", "--no-shrink",
             "--request-timeout", "30", "--header", f"Authorization: Bearer {KEY}"],
            stdout=out, stderr=subprocess.STDOUT, timeout=BUDGET_S + 60, check=False, cwd=tmp_path)
    elapsed = time.monotonic() - started
    text = report.read_text()
    summary = text[text.rfind("SUMMARY"):]
    log.info("schemathesis: %.0f s\n%s", elapsed, summary)
    assert proc.returncode == 0, text[-8000:]
    assert re.search(r"\d+ generated", summary) and "failure" not in summary.split("Test cases:")[-1], summary
    assert elapsed < BUDGET_S, f"the contract run took {elapsed:.0f} s (budget {BUDGET_S} s)"


def test_every_error_status_has_the_error_schema(service: Service) -> None:
    spec = httpx.get(f"{service.base_url}/openapi.json").json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            errors = {s: r for s, r in operation["responses"].items() if s[0] in "45"}
            assert {"500", "503"} <= set(errors), (method, path)
            expected = "OpenAIError" if path.startswith(("/v1/chat/completions", "/v1/models")) else "ErrorEnvelope"
            for status, response in errors.items():
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.endswith(f"/{expected}"), (method, path, status)
    upload = spec["paths"]["/v1/videos"]["post"]
    assert {"401", "413", "415", "422"} <= set(upload["responses"])
    understand = spec["paths"]["/v1/videos/understand"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert understand["schema"]["required"] == ["prompt"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]


def test_405_names_every_method_of_the_resource(service: Service) -> None:
    with service.client(KEY) as c:
        r = c.put("/v1/jobs/abc")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
        assert r.headers["allow"] == "DELETE, GET"
        assert c.put("/v1/videos/understand").headers["allow"] == "POST"


def test_docs_are_served_from_local_assets(service: Service) -> None:
    with service.client() as c:
        page = c.get("/docs")
        assert page.status_code == 200
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        assert assets and not [a for a in assets if a.startswith(("http://", "https://", "//"))], assets
        for asset in assets:
            assert c.get(asset).status_code == 200, asset
        assert c.get("/redoc").status_code == 200
