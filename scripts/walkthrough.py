"""Run the README's walk-through against a running service and print what it answered.

    make up                                   # in one terminal
    .venv/bin/python scripts/walkthrough.py   # in another (BASE_URL, API_KEY optional)

Writes three unseen shapes clips (`gpt4video data shapes --seed 7`), uploads one, asks
about it, chats (an everyday question, a video request, a follow-up about the upload),
then polls the video job until it ends. Every request and the reply the model gave are
printed, so the README's examples can be refreshed from a real run.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("walkthrough")


def show(title: str, reply: httpx.Response, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    body = reply.json()
    shown = {k: body[k] for k in keys if k in body} if keys else body
    log.info("%s -> %d %s", title, reply.status_code, json.dumps(shown, ensure_ascii=False))
    reply.raise_for_status()
    return body


def chat(client: httpx.Client, title: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body = {"messages": messages, "max_new_tokens": 96, "temperature": 0,
            "video": {"num_frames": 8, "fps": 8, "seed": 1}}
    return show(title, client.post("/v1/chat", json=body), ("message", "captions", "videos", "withheld", "refusal"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", default=os.environ.get("BASE_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("API_KEY"))
    parser.add_argument("--job-timeout", type=float, default=300.0, help="seconds to wait for the video job")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    headers = {"authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with tempfile.TemporaryDirectory() as tmp, httpx.Client(base_url=args.base_url, headers=headers,
                                                            timeout=180) as client:
        subprocess.run([sys.executable, "-m", "gpt4video.cli", "data", "shapes", "--out", tmp, "--seed", "7",
                        "--train", "0", "--val", "0", "--test", "3", "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        record = json.loads((Path(tmp) / "test.jsonl").read_text().splitlines()[0])
        clip = Path(tmp) / record["video"]
        log.info("clip %s: %s", clip.name, record["caption"])
        with clip.open("rb") as f:
            upload = show("upload", client.post("/v1/videos", files={"file": (clip.name, f, "video/mp4")}))
        video_id = upload["id"]
        show("understand", client.post("/v1/videos/understand", data={
            "video_id": video_id, "prompt": "What colour is the shape, and where is it going?",
            "max_new_tokens": "48"}), ("message",))
        chat(client, "chat: everyday", [{"role": "user", "content": "Hi! What is the capital of France?"}])
        asked = chat(client, "chat: a video", [{"role": "user",
                                                 "content": "Show me a video of a red circle moving to the left."}])
        first = [{"role": "user", "content": "What shape is in this video?", "videos": [video_id]}]
        answer = chat(client, "chat: about the upload", first)
        second = [*first, answer["message"],
                  {"role": "user", "content": "Now make me a clip of a blue square sliding to the right."}]
        made = chat(client, "chat: a new video", second)
        follow_up = {"role": "user", "content": "And which way does the shape in my video move?"}
        third = [*second, made["message"], follow_up]
        chat(client, "chat: back to the upload", third)
        for video in [*asked.get("videos", []), *made.get("videos", [])]:
            deadline = time.monotonic() + args.job_timeout
            while True:
                job = client.get(video["status_url"]).json()
                if job["status"] not in ("queued", "running") or time.monotonic() > deadline:
                    break
                time.sleep(2)
            log.info("job %s -> %s", video["job_id"], json.dumps(
                {k: job.get(k) for k in ("status", "progress", "result", "error")}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
