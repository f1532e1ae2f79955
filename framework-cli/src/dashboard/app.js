// Ovation dashboard: the status bar and the live trace list. No libraries, no network
// beyond this dashboard's own API.
"use strict";

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
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
