// Ovation dashboard: the status bar and the live trace list. No libraries, no network
// beyond this dashboard's own API.
"use strict";

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

// The per-run token the dashboard demands of every request that changes something: only its
// own pages have it (forms carry it in a hidden field).
function csrfToken() {
  const meta = document.querySelector('meta[name="ovation-csrf"]');
  return meta ? meta.content : "";
}

async function refreshStatus() {
  try {
    const status = await (await fetch("/api/status")).json();
    const bar = document.getElementById("status");
    const states = { compile_error: "error" };
    bar.className = states[status.state] || status.state;
    document.getElementById("status-text").textContent =
      status.state === "compile_error" ? "compile error: " + status.message : status.state.replace("_", " ");
    const link = document.getElementById("status-url");
    link.textContent = status.url;
    link.href = status.url;
  } catch (_) {
    document.getElementById("status").className = "stopped";
    document.getElementById("status-text").textContent = "dashboard unreachable";
  }
}

function traceRow(t) {
  const endpoint = t.rootService && t.rootEndpoint ? t.rootService + "." + t.rootEndpoint : t.rootName;
  return '<tr data-trace="' + esc(t.traceId) + '" class="new"><td><a href="/traces/' + esc(t.traceId) + '">' +
    esc(endpoint) + "</a></td><td>" + esc(t.start) + "</td><td>" + Number(t.durationMs).toFixed(2) +
    " ms</td><td>" + esc(t.spanCount) + '</td><td><span class="badge ' + esc(t.status) + '">' +
    esc(t.status) + "</span></td></tr>";
}

async function refreshTraces() {
  const rows = document.getElementById("trace-rows");
  if (!rows) return;
  const params = new URLSearchParams(new FormData(document.getElementById("filters")));
  for (const [key, value] of [...params]) if (!value) params.delete(key);
  try {
    const list = await (await fetch("/api/traces?" + params.toString())).json();
    const known = new Set([...rows.querySelectorAll("tr")].map((r) => r.dataset.trace));
    let html = "";
    for (const t of list.traces) {
      html += known.has(t.traceId) ? rows.querySelector('tr[data-trace="' + t.traceId + '"]').outerHTML.replace(' class="new"', "") : traceRow(t);
    }
    rows.innerHTML = html;
    const empty = document.getElementById("no-traces");
    if (empty) empty.hidden = list.traces.length > 0;
  } catch (_) { /* the next tick tries again */ }
}

refreshStatus();
setInterval(refreshStatus, 2000);
if (document.getElementById("trace-rows")) setInterval(refreshTraces, 1500);

// The API explorer: send the form through the dashboard, show the answer.
async function sendExplorer(event) {
  event.preventDefault();
  const form = event.target;
  const out = document.getElementById("response");
  const call = { service: form.dataset.service, endpoint: form.dataset.endpoint, params: {} };
  for (const input of form.querySelectorAll("[data-param]")) call.params[input.dataset.param] = input.value;
  const credential = form.querySelector("[data-credential]");
  if (credential && credential.value.trim()) call.credential = credential.value.trim();
  try {
    for (const field of ["body", "query"]) {
      const box = form.querySelector(`textarea[name="${field}"]`);
      if (box && box.value.trim()) call[field] = JSON.parse(box.value);
    }
  } catch (e) {
    const shown = out || document.getElementById("stream");
    shown.hidden = false;
    shown.innerHTML = '<p class="notice" id="response-error">Not JSON: ' + esc(e.message) + "</p>";
    return;
  }
  const raw = form.querySelector('textarea[name="raw"]');
  if (raw) {
    call.raw = raw.value;
    call.contentType = form.querySelector('input[name="content-type"]').value;
  }
  if (form.dataset.kind.startsWith("stream")) {
    openStream(call);
    return;
  }
  out.innerHTML = '<p class="muted">Sending…</p>';
  const answer = await (await fetch("/api/explorer", {
    method: "POST",
    headers: { "content-type": "application/json", "x-ovation-csrf": csrfToken() },
    body: JSON.stringify(call),
  })).json();
  if (answer.status === undefined) {
    out.innerHTML = '<p class="notice" id="response-error">' + esc(answer.message || "failed") + "</p>";
    return;
  }
  let body = answer.body;
  try { body = JSON.stringify(JSON.parse(answer.body), null, 2); } catch (_) { /* not JSON */ }
  const headers = Object.entries(answer.headers).map(([k, v]) => esc(k) + ": " + esc(v)).join("\n");
  const ok = answer.status < 400 ? "ok" : "error";
  out.innerHTML = '<p id="response-status"><span class="badge ' + ok + '">' + esc(answer.status) + "</span> in " +
    Number(answer.durationMs).toFixed(1) + ' ms · <a id="response-trace" href="/traces/' + esc(answer.traceId) +
    '">trace</a></p><h4>Body</h4><pre id="response-body">' + esc(body) + "</pre><h4>Headers</h4><pre>" + headers + "</pre>";
}
// A stream: a WebSocket to the dashboard, which opens the app's and relays both ways. The
// token rides in the query (a page's WebSocket cannot set headers).
let stream = null;
function openStream(call) {
  if (stream) stream.close();
  const box = document.getElementById("stream");
  const state = document.getElementById("stream-state");
  const list = document.getElementById("stream-messages");
  box.hidden = false;
  list.innerHTML = "";
  state.textContent = "Opening…";
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const query = new URLSearchParams({ call: JSON.stringify(call), csrf: csrfToken() });
  const ws = new WebSocket(`${scheme}//${location.host}/api/explorer/stream?${query}`);
  stream = ws;
  ws.onmessage = (event) => {
    const data = JSON.parse(event.data);
    // The dashboard's first message says the stream is open, with its trace.
    if (!ws.shown) {
      ws.shown = true;
      state.innerHTML = 'Open · <a id="stream-trace" href="/traces/' + esc(data.traceId) + '">trace</a>';
      return;
    }
    const li = document.createElement("li");
    li.className = "message";
    li.textContent = JSON.stringify(data);
    list.append(li);
  };
  ws.onclose = (event) => {
    if (stream === ws) stream = null;
    state.textContent = "Closed: " + event.code + (event.reason ? " " + event.reason : "");
  };
}
const streamSend = document.getElementById("stream-send");
if (streamSend) streamSend.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!stream) return;
  const text = streamSend.querySelector("textarea").value;
  try { JSON.parse(text); } catch (e) {
    document.getElementById("stream-state").textContent = "Not JSON: " + e.message;
    return;
  }
  stream.send(text);
});
const streamClose = document.getElementById("stream-close");
if (streamClose) streamClose.addEventListener("click", () => { if (stream) stream.close(1000); });

const explorerForm = document.getElementById("explorer");
if (explorerForm) explorerForm.addEventListener("submit", sendExplorer);
