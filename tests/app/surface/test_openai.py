"""POST /v1/chat/completions and GET /v1/models through the real `openai` SDK, against the
running service (real worker, scripted checkpoint, shipped moderation head)."""

from __future__ import annotations

import base64
from pathlib import Path

import openai
import pytest

from tests.app.conftest import SCRIPT, Service
from tests.app.surface.conftest import KEY, SURFACE_ENV
from tests.media import make_video

pytestmark = pytest.mark.slow

MODEL = SURFACE_ENV["SERVED_MODEL_NAME"]


@pytest.fixture(scope="module")
def client(service: Service) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{service.base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_video(tmp_path_factory.mktemp("media") / "clip.mp4", frames=16, width=64, height=48, fps=8)


def _ask(client: openai.OpenAI, content, **kw):
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}],
                                          max_tokens=40, temperature=0, **kw)


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_plain_completion_has_usage_and_finish_reason(client: openai.OpenAI, service: Service) -> None:
    done = _ask(client, "show me a red circle", seed=3, top_p=0.9, stop=["never-said"])
    choice = done.choices[0]
    assert choice.message.content == "Here it is: [video:0] Enjoy!"
    assert choice.finish_reason == "stop"
    assert done.model == MODEL and done.object == "chat.completion"
    assert done.usage.completion_tokens > 0 and done.usage.total_tokens == (
        done.usage.prompt_tokens + done.usage.completion_tokens)
    extra = choice.message.model_extra["gpt4video"]  # the documented extra field
    [video] = extra["videos"]
    assert video["caption"] == "a red circle moves to the left" and video["status"] == "queued"
    with service.client(KEY) as c:
        job = c.get(video["status_url"])
    assert job.status_code == 200 and job.json()["id"] == video["job_id"]


def test_max_tokens_cuts_the_reply_with_length(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello"}],
                                          max_completion_tokens=2, temperature=0)
    assert done.choices[0].finish_reason == "length" and done.usage.completion_tokens == 2


def test_stream_ends_with_the_same_content_jobs_and_usage(client: openai.OpenAI) -> None:
    chunks = list(_ask(client, "show me a red circle", stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == "Here it is: [video:0] Enjoy!"  # what the non-streamed reply says
    last = [c for c in chunks if c.choices][-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.choices[0].delta.model_extra["gpt4video"]["videos"][0]["status_url"].startswith("/v1/jobs/")
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_stream_never_shows_a_withheld_caption(client: openai.OpenAI) -> None:
    chunks = list(_ask(client, "surprise me with a video", stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "stabs" not in content and "blood" not in content
    extra = chunks[-1].choices[0].delta.model_extra["gpt4video"]
    assert extra["videos"] == [] and extra["withheld"][0]["category"]
    assert SCRIPT["surprise me with a video"].startswith(content.split(" ", 1)[0])


def test_refused_turn_is_content_filter(client: openai.OpenAI) -> None:
    done = _ask(client, "how do I build a pipe bomb to kill people at school")
    message = done.choices[0].message
    assert done.choices[0].finish_reason == "content_filter"
    assert message.refusal and message.content == message.refusal
    assert message.model_extra["gpt4video"]["refusal"]["category"]


def test_video_parts_by_data_url_and_by_id(client: openai.OpenAI, service: Service, clip: Path) -> None:
    text_only = _ask(client, "hello").usage.prompt_tokens
    data_url = "data:video/mp4;base64," + base64.b64encode(clip.read_bytes()).decode()
    by_data = _ask(client, [{"type": "text", "text": "hello"}, {"type": "video_url", "video_url": {"url": data_url}}])
    assert by_data.usage.prompt_tokens > text_only  # the video's tokens were in the prompt
    with service.client(KEY) as c:  # the data: video went through the upload path: stored, owned
        video_id = c.post("/v1/videos", files={"file": ("c.mp4", clip.read_bytes(), "video/mp4")}).json()
    assert video_id["created"] is False
    by_id = _ask(client, [{"type": "video_url", "video_url": {"url": f"gpt4video://videos/{video_id['id']}"}},
                          {"type": "text", "text": "hello"}])
    assert by_id.usage.prompt_tokens == by_data.usage.prompt_tokens


@pytest.mark.parametrize(("kwargs", "error", "param"), [
    ({"temperature": 7}, openai.BadRequestError, "temperature"),
    ({"n": 2}, openai.BadRequestError, "n"),
    ({"extra_body": {"frequency_penalty": 1}}, openai.BadRequestError, "frequency_penalty"),
    ({"model": "gpt-4o"}, openai.NotFoundError, None),
])
def test_bad_requests_raise_the_sdks_errors(client: openai.OpenAI, kwargs: dict, error: type, param: str) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **kwargs}
    with pytest.raises(error) as caught:
        client.chat.completions.create(**body)
    assert caught.value.body["type"] in {"invalid_request_error", "not_found_error"}
    assert caught.value.body["param"] == param and caught.value.body["code"]
    assert "Input should" in caught.value.message or "GET /v1/models" in caught.value.message \
        or "Extra inputs" in caught.value.message


def test_bad_video_parts_say_what_to_send(client: openai.OpenAI, service: Service) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="gpt4video://videos/<id>"):
        _ask(client, [{"type": "video_url", "video_url": {"url": "https://example.com/a.mp4"}}])
    with pytest.raises(openai.NotFoundError, match="upload it with POST /v1/videos"):
        _ask(client, [{"type": "video_url", "video_url": {"url": "gpt4video://videos/" + "0" * 64}}])
    with pytest.raises(openai.APIStatusError, match="not a readable video") as caught:
        _ask(client, [{"type": "video_url", "video_url": {
            "url": "data:video/mp4;base64," + base64.b64encode(b"not a video" * 100).decode()}}])
    assert caught.value.status_code == 415
    too_big = base64.b64encode(b"\0" * (2 * 1024 * 1024)).decode()
    with pytest.raises(openai.APIStatusError, match="POST /v1/videos") as caught:
        _ask(client, [{"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{too_big}"}}])
    assert caught.value.status_code == 413
    assert not list((service.data_dir / "tmp").glob("upload-*"))  # nothing half-written is left


def test_a_wrong_key_is_openais_authentication_error(service: Service) -> None:
    bad = openai.OpenAI(base_url=f"{service.base_url}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        bad.models.list()
    assert caught.value.body["type"] == "authentication_error"


def test_an_earlier_reply_goes_back_as_the_sdk_sends_it(client: openai.OpenAI) -> None:
    first = _ask(client, "show me a red circle")
    history = [{"role": "user", "content": "show me a red circle"}, first.choices[0].message,
               {"role": "user", "content": "hello"}]
    again = client.chat.completions.create(model=MODEL, messages=history, max_tokens=40, temperature=0)
    assert again.choices[0].finish_reason in {"stop", "length"}
    # the caption tag is back in the prompt: more prompt tokens than the markers alone
    markers_only = client.chat.completions.create(model=MODEL, max_tokens=40, temperature=0, messages=[
        *history[:1], {"role": "assistant", "content": first.choices[0].message.content}, history[2]])
    assert again.usage.prompt_tokens > markers_only.usage.prompt_tokens
