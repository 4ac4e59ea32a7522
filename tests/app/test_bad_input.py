"""Bad input gets a clear error envelope with the right status, and loses nothing."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.app.conftest import Service
from tests.media import make_audio_only, make_random_bytes, make_truncated_mp4, make_video

pytestmark = pytest.mark.slow

KEY_A, KEY_B = "key-alpha-123", "key-bravo-456"
SERVICE_ENV = {"API_KEYS": f"{KEY_A},{KEY_B}", "MAX_UPLOAD_BYTES": str(256 * 1024)}


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"type", "message", "code"}, body
    assert body["error"]["message"]
    return body["error"]


def _stored_files(service: Service) -> list[Path]:
    return [p for p in service.data_dir.rglob("*") if p.is_file()]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad-media")
    return {
        "good": make_video(d / "good.mp4", frames=8, width=32, height=32, fps=8),
        "random": make_random_bytes(d / "random.mp4", size=4096),
        "truncated": make_truncated_mp4(d / "truncated.mp4"),
        "audio": make_audio_only(d / "audio.m4a"),
    }


def test_missing_or_wrong_api_key_is_401(service: Service) -> None:
    with service.client() as c:
        err = _error(c.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello"}]}), 401)
        assert err["code"] == "missing_api_key"
    with service.client("not-a-key") as c:
        assert _error(c.get("/v1/jobs/abc"), 401)["code"] == "invalid_api_key"


def test_oversize_upload_is_413_and_writes_nothing(service: Service) -> None:
    before = _stored_files(service)
    with service.client(KEY_A) as c:
        err = _error(c.post("/v1/videos", files={"file": ("big.mp4", b"\0" * (600 * 1024), "video/mp4")}), 413)
    assert err["code"] == "upload_too_large"
    assert _stored_files(service) == before


def test_oversize_chunked_upload_without_length_is_413(service: Service) -> None:
    """No Content-Length: the cap must hold while streaming."""
    before = _stored_files(service)
    boundary = "xyzzy"

    def body():
        yield f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'.encode()
        for _ in range(100):
            yield b"\0" * 8192
        yield f"\r\n--{boundary}--\r\n".encode()

    with service.client(KEY_A) as c:
        r = c.post("/v1/videos", content=body(), headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert _error(r, 413)["code"] == "upload_too_large"
    assert _stored_files(service) == before


@pytest.mark.parametrize(("kind", "status"), [("random", 415), ("truncated", 415), ("audio", 415)])
def test_undecodable_uploads_are_rejected(service: Service, media: dict[str, Path], kind: str, status: int) -> None:
    before = _stored_files(service)
    with service.client(KEY_A) as c:
        err = _error(c.post("/v1/videos", files={"file": (f"{kind}.mp4", media[kind].read_bytes(), "video/mp4")}),
                     status)
    assert err["code"] in {"corrupt_video", "no_video_stream"}
    # The message names the file the client sent, never the server's temporary file.
    assert f"{kind}.mp4" in err["message"] and "upload-" not in err["message"], err["message"]
    assert _stored_files(service) == before


def test_not_multipart_is_415(service: Service) -> None:
    with service.client(KEY_A) as c:
        err = _error(c.post("/v1/videos", content=b"raw", headers={"content-type": "video/mp4"}), 415)
    assert err["code"] == "expected_multipart"


def test_path_traversal_filename_is_never_used(service: Service, media: dict[str, Path]) -> None:
    evil = "../../../../tmp/evil-upload.mp4"
    with service.client(KEY_A) as c:
        r = c.post("/v1/videos", files={"file": (evil, media["good"].read_bytes(), "video/mp4")})
    assert r.status_code == 201, r.text
    video_id = r.json()["id"]
    assert not Path("/tmp/evil-upload.mp4").exists()
    names = {p.name for p in _stored_files(service)}
    assert f"{video_id}.video" in names
    assert not any("evil" in n for n in names)


def test_other_keys_resources_are_404(service: Service, media: dict[str, Path]) -> None:
    with service.client(KEY_A) as a:
        vid = a.post("/v1/videos", files={"file": ("g.mp4", media["good"].read_bytes(), "video/mp4")}).json()["id"]
        chat = a.post("/v1/chat", json={"messages": [{"role": "user", "content": "show me a red circle"}],
                                        "max_new_tokens": 40})
        assert chat.status_code == 200, chat.text
        job_id = chat.json()["videos"][0]["job_id"]
        assert a.get(f"/v1/jobs/{job_id}").status_code == 200
    with service.client(KEY_B) as b:
        assert _error(b.get(f"/v1/jobs/{job_id}"), 404)["code"] == "job_not_found"
        assert _error(b.get(f"/v1/jobs/{job_id}/video"), 404)["code"] == "job_not_found"
        r = b.post("/v1/chat", json={"messages": [{"role": "user", "content": "hello", "videos": [vid]}]})
        assert _error(r, 404)["code"] == "video_not_found"


def test_unknown_job_is_404(service: Service) -> None:
    with service.client(KEY_A) as c:
        assert _error(c.get("/v1/jobs/does-not-exist"), 404)["code"] == "job_not_found"
        assert _error(c.get("/v1/nothing-here"), 404)["type"] == "not_found"


@pytest.mark.parametrize("payload", [
    {"messages": []},
    {"messages": [{"role": "user", "content": "hi"}], "temperature": 9.0},
    {"messages": [{"role": "user", "content": "hi"}], "max_new_tokens": 0},
    {"messages": [{"role": "user", "content": "hi"}], "top_p": 0},
    {"messages": [{"role": "robot", "content": "hi"}]},
    {"messages": [{"role": "user", "content": "hi"}], "video": {"num_frames": 100000}},
    {"messages": [{"role": "assistant", "content": "hi"}]},
    {"messages": [{"role": "assistant", "content": "hi", "videos": ["a" * 64]}, {"role": "user", "content": "x"}]},
    {"messages": [{"role": "user", "content": "hi"}], "unknown_field": 1},
])
def test_out_of_range_parameters_are_422(service: Service, payload: dict) -> None:
    with service.client(KEY_A) as c:
        err = _error(c.post("/v1/chat", json=payload), 422)
    assert err["type"] == "invalid_request" or err["type"] == "unprocessable"


def test_malformed_json_is_422(service: Service) -> None:
    with service.client(KEY_A) as c:
        r = c.post("/v1/chat", content=b"{not json", headers={"content-type": "application/json"})
    _error(r, 422)


def test_understand_needs_prompt_and_video(service: Service, media: dict[str, Path]) -> None:
    with service.client(KEY_A) as c:
        r = c.post("/v1/videos/understand", files={"file": ("g.mp4", media["good"].read_bytes(), "video/mp4")})
        assert _error(r, 422)["code"] == "missing_prompt"
        r = c.post("/v1/videos/understand", data={"prompt": "what is it?"})
        assert _error(r, 422)["code"] == "missing_video"
        r = c.post("/v1/videos/understand", data={"prompt": "what?", "video_id": "f" * 64})
        assert _error(r, 404)["code"] == "video_not_found"
        r = c.post("/v1/videos/understand", data={"prompt": "what?", "video_id": "f" * 64, "temperature": "hot"})
        assert _error(r, 422)["code"] == "validation_error"
