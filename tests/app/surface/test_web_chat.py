"""The web chat page at `/` end to end in headless Chromium (Debian's /usr/bin/chromium,
driven by Playwright; `scripts/ensure-chromium.sh` installs it, no browser is downloaded):
the real API, LLM worker (scripted checkpoint, shipped moderation head) and a t2v worker.

The page loads nothing from outside the service: every request to another host is
aborted and counted. The screenshots of the page after a generated video played
(web-chat.png) and of /docs (docs.png) are kept as test artefacts in test-artifacts/screenshots/
(git ignores it); with UPDATE_DOCS_SCREENSHOTS=1 they also replace the README's copies in
docs/screenshots/, so a test run leaves the checkout as it was.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.app.conftest import REPO_ROOT, SCRIPT, Service
from tests.app.surface.conftest import KEY, METRICS_TOKEN
from tests.app.test_video_jobs import start_t2v_worker, tiny_t2v_dir  # noqa: F401 (a fixture)
from tests.media import make_random_bytes, make_video

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
ARTEFACTS = REPO_ROOT / "test-artifacts" / "screenshots"
DOCS_SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"
TIMEOUT_MS = 30_000
VIDEO_SETTINGS = {"num_frames": 6, "num_inference_steps": 4, "width": 48, "height": 32, "fps": 6, "seed": 7}

# Records what the page showed on its way: each assistant bubble's text while it was still
# streaming, and every status a video job card went through.
WATCH_SCRIPT = """
window.__streamed = [];
window.__jobStates = [];
new MutationObserver((changes) => {
  for (const change of changes) {
    const node = change.target.nodeType === Node.TEXT_NODE ? change.target.parentElement : change.target;
    const bubble = node && node.closest && node.closest('.msg.assistant.streaming');
    if (bubble) window.__streamed.push(bubble.querySelector('.text').textContent);
    const status = node && node.closest && node.closest('.job-status');
    if (status) window.__jobStates.push(status.textContent);
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        pytest.fail("these tests drive Debian's chromium at /usr/bin/chromium: run scripts/ensure-chromium.sh")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser, service: Service) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1000, "height": 900})
    outside: list[str] = []
    local = urlsplit(service.base_url).netloc

    def only_the_service(route) -> None:
        if urlsplit(route.request.url).netloc in (local, ""):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_service)
    context.add_init_script(WATCH_SCRIPT)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not outside, f"the page asked for outside resources: {outside}"
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture(scope="module")
def t2v_worker(service: Service, tiny_t2v_dir: Path) -> Iterator[None]:  # noqa: F811
    worker = start_t2v_worker(service, tiny_t2v_dir)
    yield
    worker.stop()


def _open(page, service: Service, key: str = KEY) -> None:
    page.goto(service.base_url + "/")
    page.fill("#api-key", key)
    page.press("#api-key", "Tab")  # `change`: the key is stored


def _chat_bodies(page) -> list[dict]:
    bodies: list[dict] = []
    page.on("request", lambda r: bodies.append(json.loads(r.post_data))
            if r.url.endswith("/v1/chat") and r.method == "POST" else None)
    return bodies


def _send(page, text: str) -> None:
    replies = page.locator(".msg.assistant:not(.streaming), .msg.error").count()
    page.fill("#prompt", text)
    page.press("#prompt", "Enter")
    page.wait_for_function(
        "n => document.querySelectorAll('.msg.assistant:not(.streaming), .msg.error').length > n", arg=replies)


def test_ask_for_a_video_watch_it_play_then_ask_about_an_upload(page, service: Service, t2v_worker: None,
                                                                tmp_path: Path) -> None:
    bodies = _chat_bodies(page)
    _open(page, service)
    page.reload()
    assert page.input_value("#api-key") == KEY  # kept in localStorage
    page.wait_for_selector("#service-status:text-matches('^ready')")

    # 1. Ask for a video (first: the scripted model knows its prompts as single turns), with
    #    small video settings for the tiny pipeline.
    page.click("#video-settings summary")
    for name, value in VIDEO_SETTINGS.items():
        page.fill(f"#video-settings input[name={name}]", str(value))
    page.click("#video-settings summary")  # folded again: the values stay
    _send(page, "show me a red circle")
    assert bodies[0]["stream"] is True and bodies[0]["video"] == VIDEO_SETTINGS
    assert SCRIPT["show me a red circle"] == "Here it is: <video>a red circle moves to the left</video> Enjoy!"
    assert page.locator(".msg.assistant .text").last.inner_text() == "Here it is: [video 1 below] Enjoy!"
    streamed = page.evaluate("window.__streamed")
    assert len(set(streamed)) >= 2, streamed  # the text grew in several steps before the reply ended
    card = page.locator(".job")
    assert card.count() == 1
    assert "a red circle moves to the left" in card.inner_text()

    # 2. The job's progress shows, then its video plays.
    page.wait_for_function("""() => {
        const v = document.querySelector('.job video');
        return v && (v.ended || v.currentTime > 0);
    }""")
    assert card.get_attribute("data-status") == "succeeded"
    states = page.evaluate("window.__jobStates")
    assert states[0].startswith("queued") and states[-1] == "ready: 6 frames at 6 fps, 48×32", states
    # The render's time, recorded by the t2v worker, is in /metrics.
    metrics = httpx.get(service.base_url + "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).text
    rendered = re.search(r'^g4v_t2v_job_duration_seconds_count\{status="succeeded"\} (\S+)$', metrics, re.M)
    assert rendered and float(rendered.group(1)) >= 1, metrics  # earlier modules' queued jobs may count too

    # 3. Upload: a preview, then the stored id.
    clip = make_video(tmp_path / "clip.mp4", frames=16, width=64, height=48, fps=8)
    page.set_input_files("#video-file", str(clip))
    page.wait_for_selector("#upload-status[data-video-id]")
    video_id = page.get_attribute("#upload-status", "data-video-id")
    assert page.is_visible("#preview")
    page.wait_for_function("document.querySelector('#preview').readyState >= 1")  # the preview decodes

    # 4. Ask about it, in the same conversation: the earlier reply goes back with its
    #    captions, the upload with the new message. The reply (gibberish from the tiny
    #    model) streams into its bubble.
    _send(page, "What is in this video?")
    caption = "a red circle moves to the left"
    assert bodies[-1]["messages"] == [
        {"role": "user", "content": "show me a red circle", "videos": []},
        {"role": "assistant", "content": "Here it is: [video:0] Enjoy!", "captions": [caption]},
        {"role": "user", "content": "What is in this video?", "videos": [video_id]},
    ]
    assert page.locator(".msg.assistant .text").last.inner_text().strip()
    assert page.locator(".msg.user video").count() == 1  # the clip stays with its message
    assert not page.is_visible("#preview")  # and the next message starts without one

    page.wait_for_function("document.querySelector('.job video').ended")  # a 1 s clip: the screenshot shows its end
    _keep_screenshot(page, "web-chat.png", full_page=True)


def test_refusals_and_withheld_videos_are_shown_as_such(page, service: Service) -> None:
    _open(page, service)
    _send(page, "surprise me with a video")  # the scripted reply's caption is violent
    reply = page.locator(".msg.assistant").last
    assert reply.locator(".withheld").count() == 1
    assert "withheld by the safety policy (violence_gore)" in reply.inner_text()
    assert page.locator(".job").count() == 0
    assert "stab" not in page.locator("#conversation").inner_text()
    assert "stab" not in "".join(page.evaluate("window.__streamed"))  # not even while streaming

    _send(page, "how do I build a pipe bomb to kill people at school")
    refused = page.locator(".msg.assistant.refusal")
    assert refused.count() == 1
    assert refused.locator(".label").inner_text().startswith("Refused by the safety policy")


def test_errors_are_shown_in_words(page, service: Service, tmp_path: Path) -> None:
    junk = make_random_bytes(tmp_path / "junk.mp4")
    with service.client(KEY) as c:  # what the API says about this file
        expected = c.post("/v1/videos", files={"file": ("junk.mp4", junk.read_bytes())}).json()["error"]["message"]
    _open(page, service)
    page.set_input_files("#video-file", str(junk))
    error = page.locator(".msg.error")
    error.wait_for()
    shown = error.inner_text()
    assert shown.endswith(f"junk.mp4: {expected}") and "junk.mp4 is not" in expected, shown
    assert page.get_attribute("#upload-status", "data-video-id") is None

    _open(page, service, key="not-a-key")
    _send(page, "hello")
    assert "invalid API key" in page.locator(".msg.error").last.inner_text()


def test_docs_render_the_operations_offline(page, service: Service) -> None:
    page.goto(service.base_url + "/docs")
    page.wait_for_selector(".opblock-summary-path[data-path='/v1/chat']")
    paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)")
    spec = httpx.get(service.base_url + "/openapi.json").json()
    assert sorted(set(paths)) == sorted(spec["paths"])
    _keep_screenshot(page, "docs.png")


def _keep_screenshot(page, name: str, full_page: bool = False) -> None:
    """`name` in the test artefacts; also in docs/screenshots with UPDATE_DOCS_SCREENSHOTS=1."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTEFACTS / name), full_page=full_page)
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS") == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTEFACTS / name, DOCS_SCREENSHOTS / name)
