// The web chat page: upload a video, talk about it, watch the videos the reply asks for.
// Plain browser JavaScript over the service's own API (README: "Web chat"):
//   POST /v1/videos          the upload; its id goes into the next user message's `videos`
//   POST /v1/chat            stream=true: server-sent `delta` events, then `done` (the reply) or `error`
//   GET  /v1/jobs/<id>       each generated video's status and progress, polled until it ends
//   GET  /v1/jobs/<id>/video the MP4, fetched with the API key and played from a blob URL
// The history sent with each turn is the user messages as sent and each reply's `message`
// as it came (its `captions` keep the model's own caption tags). Errors are shown in the
// words of the error envelope, {"error": {"type", "message", "code"}}.
"use strict";

const KEY_STORAGE = "gpt4video.apiKey";
const POLL_MS = 500;
const FINAL_JOB_STATES = new Set(["succeeded", "failed", "refused", "expired", "canceled"]);

const $ = (id) => document.getElementById(id);
const state = { history: [], videoId: null, previewUrl: null, busy: false };

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function authHeaders(extra = {}) {
  const key = $("api-key").value.trim();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

// The error envelope's message (and what to do on a 401), or the HTTP status in words.
async function errorText(response) {
  let message = `the service answered ${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) message = body.error.message;
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) message += " (enter a key of the service's API_KEYS above)";
  return message;
}

function scrollDown() { window.scrollTo(0, document.body.scrollHeight); }

function showError(message) {
  const node = el("div", "msg error");
  node.setAttribute("role", "alert");
  node.append(el("span", "label", "Error"), el("span", "text", message));
  $("conversation").append(node);
  scrollDown();
  return node;
}

// --- the upload -------------------------------------------------------------------------
function detach() {
  state.videoId = null;
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = null;
  $("preview").hidden = true;
  $("preview").removeAttribute("src");
  $("detach").hidden = true;
  $("upload-status").textContent = "";
  $("video-file").value = "";
}

async function upload(file) {
  detach();
  state.previewUrl = URL.createObjectURL(file);
  const preview = $("preview");
  preview.src = state.previewUrl;
  preview.hidden = false;
  $("upload-status").textContent = `uploading ${file.name}…`;
  const form = new FormData();
  form.append("file", file);
  let response;
  try {
    response = await fetch("/v1/videos", { method: "POST", headers: authHeaders(), body: form });
  } catch (err) {
    detach();
    showError(`the upload did not reach the service: ${err.message}`);
    return;
  }
  if (!response.ok) {
    const message = await errorText(response);
    detach();
    $("upload-status").textContent = "upload refused";
    showError(`${file.name}: ${message}`);
    return;
  }
  const stored = await response.json();
  state.videoId = stored.id;
  const info = stored.info;
  $("upload-status").textContent =
    `${file.name}: ${info.duration_s.toFixed(1)} s, ${info.width}×${info.height}, attached to your next message`;
  $("upload-status").dataset.videoId = stored.id;
  $("detach").hidden = false;
}

// --- server-sent events from a fetch body -------------------------------------------------
async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

// --- the conversation ------------------------------------------------------------------
function videoSettings() {
  const params = {};
  for (const input of $("video-settings").querySelectorAll("input")) {
    if (input.value !== "") params[input.name] = Number(input.value);
  }
  return params;
}

function addUserMessage(message, previewUrl) {
  const node = el("div", "msg user");
  node.append(el("span", "text", message.content));
  if (previewUrl) {
    const clip = el("video");
    Object.assign(clip, { src: previewUrl, muted: true, controls: true, playsInline: true, preload: "auto" });
    node.append(clip);
  }
  $("conversation").append(node);
  scrollDown();
  return node;
}

// The reply's text, with each [video:N] marker shown as a pointer to its video below.
function renderText(node, content) {
  node.replaceChildren();
  for (const [i, part] of content.split(/\[video:(\d+)\]/).entries()) {
    if (i % 2 === 0) node.append(part);
    else node.append(el("span", "marker", `[video ${Number(part) + 1} below]`));
  }
}

function finishReply(node, reply) {
  node.classList.remove("streaming");
  renderText(node.querySelector(".text"), reply.message.content);
  if (reply.refusal) {
    node.classList.add("refusal");
    node.prepend(el("span", "label", `Refused by the safety policy (${reply.refusal.category})`));
  }
  for (const hit of reply.withheld) {
    node.append(el("div", "withheld", `A video was withheld by the safety policy (${hit.category}); it was not made.`));
  }
  if (reply.finish_reason === "length") node.append(el("span", "note", "(the reply hit the token limit)"));
  reply.videos.forEach((job, index) => node.append(jobCard(job, index)));
}

async function send(content) {
  const previewUrl = state.videoId ? state.previewUrl : null;
  const message = { role: "user", content, videos: state.videoId ? [state.videoId] : [] };
  const body = { messages: [...state.history, message], stream: true };
  const video = videoSettings();
  if (Object.keys(video).length) body.video = video;
  const userNode = addUserMessage(message, previewUrl);
  let response;
  try {
    response = await fetch("/v1/chat", {
      method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body),
    });
  } catch (err) {
    userNode.remove();
    showError(`the message did not reach the service: ${err.message}`);
    return;
  }
  if (!response.ok) {
    userNode.classList.add("unsent");
    showError(await errorText(response));
    return;
  }
  // Sent: the attached video now lives in the history; the next message starts without one.
  state.videoId = null;
  state.previewUrl = null;
  $("preview").hidden = true;
  $("detach").hidden = true;
  $("upload-status").textContent = "";
  $("video-file").value = "";

  const node = el("div", "msg assistant streaming");
  const text = el("span", "text");
  node.append(text);
  $("conversation").append(node);
  try {
    for await (const { event, data } of sseEvents(response.body)) {
      if (event === "delta") {
        text.textContent += data.text;
        scrollDown();
      } else if (event === "done") {
        finishReply(node, data);
        state.history.push(message, data.message);
        scrollDown();
        return;
      } else if (event === "error") {
        node.remove();
        showError(data.error.message);
        return;
      }
    }
    node.remove();
    showError("the reply stream ended before the reply was complete; send the message again");
  } catch (err) {
    node.remove();
    showError(`the reply stream broke off: ${err.message}; send the message again`);
  }
}

// --- generated videos ------------------------------------------------------------------
function jobCard(job, index) {
  const card = el("div", "job");
  card.dataset.jobId = job.job_id;
  const status = el("span", "job-status", job.status);
  const progress = el("progress");
  progress.max = 1;
  progress.value = 0;
  card.append(el("div", "", `Video ${index + 1}: `), el("span", "caption", job.caption), el("br"), status, progress);
  pollJob(card, job.status_url, status, progress);
  return card;
}

async function pollJob(card, url, status, progress) {
  for (;;) {
    let response;
    try {
      response = await fetch(url, { headers: authHeaders() });
    } catch (err) {
      status.textContent = `lost contact with the service (${err.message}); retrying`;
      await new Promise((done) => setTimeout(done, POLL_MS * 4));
      continue;
    }
    if (!response.ok) {
      card.classList.add("failed");
      status.textContent = await errorText(response);
      progress.remove();
      return;
    }
    const job = await response.json();
    card.dataset.status = job.status;
    if (job.progress.total > 0) {
      progress.max = job.progress.total;
      progress.value = job.progress.step;
    }
    const steps = job.progress.total ? ` (step ${job.progress.step} of ${job.progress.total})` : "";
    status.textContent = job.status + steps;
    if (job.status === "succeeded") {
      progress.remove();
      await play(card, job, status);
      return;
    }
    if (FINAL_JOB_STATES.has(job.status)) {
      card.classList.add(job.status);
      progress.remove();
      const what = job.status === "refused" ? "withheld by the safety check" : job.status;
      status.textContent = job.error ? `${what}: ${job.error.message}` : what;
      return;
    }
    await new Promise((done) => setTimeout(done, POLL_MS));
  }
}

async function play(card, job, status) {
  const response = await fetch(job.result.url, { headers: authHeaders() });
  if (!response.ok) {
    card.classList.add("failed");
    status.textContent = await errorText(response);
    return;
  }
  const clip = el("video");
  Object.assign(clip, {
    src: URL.createObjectURL(await response.blob()), muted: true, autoplay: true, controls: true, playsInline: true,
  });
  const r = job.result;
  status.textContent = `ready: ${r.frames} frames at ${r.fps} fps, ${r.width}×${r.height}`;
  card.append(clip);
  scrollDown();
}

// --- the page ----------------------------------------------------------------------------
async function checkService() {
  const line = $("service-status");
  try {
    const response = await fetch("/readyz");
    if (response.ok) {
      const body = await response.json();
      line.textContent = `ready (${body.llm_workers} LLM worker${body.llm_workers === 1 ? "" : "s"})`;
    } else {
      line.textContent = `not ready: ${await errorText(response)}`;
    }
  } catch (err) {
    line.textContent = `the service does not answer: ${err.message}`;
  }
}

function setBusy(busy) {
  state.busy = busy;
  $("send").disabled = busy;
}

document.addEventListener("DOMContentLoaded", () => {
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("change", () => localStorage.setItem(KEY_STORAGE, key.value.trim()));
  $("video-file").addEventListener("change", (event) => {
    const [file] = event.target.files;
    if (file) upload(file);
  });
  $("detach").addEventListener("click", detach);
  $("new-chat").addEventListener("click", () => {
    state.history = [];
    $("conversation").replaceChildren();
  });
  $("composer").addEventListener("submit", async (event) => {
    event.preventDefault();
    const content = $("prompt").value.trim();
    if (!content || state.busy) return;
    $("prompt").value = "";
    setBusy(true);
    try {
      await send(content);
    } finally {
      setBusy(false);
    }
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  checkService();
});
