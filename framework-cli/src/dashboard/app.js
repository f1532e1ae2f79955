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
    out.innerHTML = '<p class="notice" id="response-error">Not JSON: ' + esc(e.message) + "</p>";
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
const explorerForm = document.getElementById("explorer");
if (explorerForm) explorerForm.addEventListener("submit", sendExplorer);
