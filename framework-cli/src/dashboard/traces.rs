//! The Traces page (the live list, filtered by service, endpoint and status) and a trace's
//! waterfall.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::html::{esc, shell};
use super::{Dashboard, current};
use crate::traces::ListQuery;

pub(super) async fn list(State(d): State<Dashboard>, Query(filter): Query<ListQuery>) -> Response {
    let status = current(&d.status);
    let list = d.store.list(&filter).await.unwrap_or_default();
    let services = d.store.root_services().await.unwrap_or_default();
    let option = |value: &str, selected: Option<&String>| {
        let sel = if selected.is_some_and(|s| s == value) {
            " selected"
        } else {
            ""
        };
        format!("<option value=\"{v}\"{sel}>{v}</option>", v = esc(value))
    };
    let mut body = String::from("<h1>Traces</h1>");
    let dropped = d.store.dropped();
    let plural = |n: u64, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
    if dropped.spans > 0 || dropped.requests > 0 {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"dropped\">The trace store turned away {} and {} it could \
             not take (docs/tracing.md): sample less under heavy load.</p>",
            plural(dropped.spans, "span"),
            plural(dropped.requests, "request"),
        );
    }
    if dropped.in_app > 0 {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"dropped-in-app\">The app dropped {} before sending \
             them: its export queue was full (docs/tracing.md). Sample less under heavy load.</p>",
            plural(dropped.in_app, "span"),
        );
    }
    body.push_str("<form id=\"filters\" class=\"filters\">");
    let _ = write!(
        body,
        "<label>Service <select name=\"service\"><option value=\"\">all</option>{}</select></label>\
         <label>Endpoint <input name=\"endpoint\" value=\"{}\" placeholder=\"any\"></label>\
         <label>Status <select name=\"status\"><option value=\"\">all</option>{}{}</select></label>\
         <button type=\"submit\">Filter</button></form>",
        services
            .iter()
            .map(|s| option(s, filter.service.as_ref()))
            .collect::<String>(),
        esc(filter.endpoint.as_deref().unwrap_or_default()),
        option("ok", filter.status.as_ref()),
        option("error", filter.status.as_ref()),
    );
    body.push_str(
        "<table class=\"traces\"><thead><tr><th>Endpoint</th><th>Started</th><th>Duration</th>\
         <th>Spans</th><th>Status</th></tr></thead><tbody id=\"trace-rows\">",
    );
    for t in &list {
        body.push_str(&trace_row(t));
    }
    body.push_str("</tbody></table>");
    if list.is_empty() {
        body.push_str(
            "<p id=\"no-traces\" class=\"muted\">No traces yet: send a request to the app.</p>",
        );
    }
    shell(&d, "Traces", "traces", &status, &body).into_response()
}

/// One row of the trace list (the page's script renders the same from the API).
fn trace_row(t: &Value) -> String {
    let id = t["traceId"].as_str().unwrap_or_default();
    let endpoint = match (t["rootService"].as_str(), t["rootEndpoint"].as_str()) {
        (Some(s), Some(e)) => format!("{s}.{e}"),
        _ => t["rootName"].as_str().unwrap_or_default().to_owned(),
    };
    let status = t["status"].as_str().unwrap_or_default();
    format!(
        "<tr data-trace=\"{id}\"><td><a href=\"/traces/{id}\">{endpoint}</a></td><td>{start}</td>\
         <td>{duration:.2} ms</td><td>{spans}</td><td><span class=\"badge {status}\">{status}</span></td></tr>",
        id = esc(id),
        endpoint = esc(&endpoint),
        start = esc(t["start"].as_str().unwrap_or_default()),
        duration = t["durationMs"].as_f64().unwrap_or(0.0),
        spans = t["spanCount"].as_i64().unwrap_or(0),
        status = esc(status),
    )
}

pub(super) async fn trace(State(d): State<Dashboard>, Path(trace_id): Path<String>) -> Response {
    let status = current(&d.status);
    let valid = trace_id.len() == 32 && trace_id.bytes().all(|b| b.is_ascii_hexdigit());
    let spans = if valid {
        d.store
            .trace(&trace_id.to_ascii_lowercase())
            .await
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    if spans.is_empty() {
        let body = format!(
            "<h1>No such trace</h1><p class=\"muted\">There is no trace <code>{}</code> \
             (traces are kept for 24 hours).</p><p><a href=\"/traces\">All traces</a></p>",
            esc(&trace_id)
        );
        return (
            StatusCode::NOT_FOUND,
            shell(&d, "No such trace", "traces", &status, &body),
        )
            .into_response();
    }
    shell(
        &d,
        "Trace",
        "traces",
        &status,
        &render_waterfall(&trace_id, &spans),
    )
    .into_response()
}

/// A trace as a waterfall: spans in depth-first call order, each with a bar on the trace's
/// time axis; a click opens its attributes and logs.
pub(super) fn render_waterfall(trace_id: &str, spans: &[Value]) -> String {
    let start = spans
        .iter()
        .filter_map(|s| s["startNs"].as_i64())
        .min()
        .unwrap_or(0);
    let end = spans
        .iter()
        .filter_map(|s| Some(s["startNs"].as_i64()? + (s["durationMs"].as_f64()? * 1e6) as i64))
        .max()
        .unwrap_or(start)
        .max(start + 1);
    let total = (end - start) as f64;
    let ids: Vec<&str> = spans.iter().filter_map(|s| s["id"].as_str()).collect();
    // Depth-first from the roots (spans whose parent is not in the trace).
    let mut ordered: Vec<(usize, &Value)> = Vec::new();
    let mut stack: Vec<(usize, &Value)> = spans
        .iter()
        .filter(|s| !s["parent"].as_str().is_some_and(|p| ids.contains(&p)))
        .rev()
        .map(|s| (0, s))
        .collect();
    while let Some((depth, span)) = stack.pop() {
        ordered.push((depth, span));
        let children = spans.iter().filter(|c| c["parent"] == span["id"]).rev();
        stack.extend(children.map(|c| (depth + 1, c)));
    }
    let mut out = format!(
        "<h1>Trace <code>{}</code></h1><p class=\"muted\">{} spans · {:.2} ms</p>\
         <div class=\"waterfall\" id=\"waterfall\">",
        esc(trace_id),
        spans.len(),
        total / 1e6
    );
    for (depth, s) in ordered {
        let offset = (s["startNs"].as_i64().unwrap_or(start) - start) as f64 / total * 100.0;
        let width = (s["durationMs"].as_f64().unwrap_or(0.0) * 1e6 / total * 100.0).max(0.3);
        let kind = s["kind"].as_str().unwrap_or_default();
        let service = s["service"]
            .as_str()
            .or(s["process"].as_str())
            .unwrap_or_default();
        let mut details = String::from("<table class=\"attrs\">");
        if let Some(attrs) = s["attributes"].as_object() {
            for (k, v) in attrs {
                let v = v
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| v.to_string());
                let _ = write!(
                    details,
                    "<tr><th>{}</th><td><code>{}</code></td></tr>",
                    esc(k),
                    esc(&v)
                );
            }
        }
        details.push_str("</table>");
        if let Some(events) = s["events"].as_array().filter(|e| !e.is_empty()) {
            details.push_str("<h4>Logs</h4><ul class=\"logs\">");
            for e in events {
                let fields: String = e["attributes"]
                    .as_object()
                    .map(|a| {
                        a.iter()
                            .filter(|(k, _)| !k.starts_with("code.") && *k != "target")
                            .map(|(k, v)| format!(" {}={}", esc(k), esc(&v.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                let _ = write!(
                    details,
                    "<li><span class=\"muted\">{}</span> {}<span class=\"muted\">{}</span></li>",
                    esc(e["time"].as_str().unwrap_or_default()),
                    esc(e["name"].as_str().unwrap_or_default()),
                    fields
                );
            }
            details.push_str("</ul>");
        }
        let _ = write!(
            out,
            "<details class=\"span {kind} {status}\"><summary>\
             <span class=\"label\" style=\"padding-left:{indent}rem\"><span class=\"kind\">{kind}</span> \
             {name} <span class=\"muted\">{service}</span></span>\
             <span class=\"track\"><span class=\"bar\" style=\"left:{offset:.3}%;width:{width:.3}%\"></span></span>\
             <span class=\"ms\">{ms:.2} ms</span></summary>{details}</details>",
            kind = esc(kind),
            status = esc(s["status"].as_str().unwrap_or_default()),
            indent = depth as f64 * 1.1,
            name = esc(s["name"].as_str().unwrap_or_default()),
            service = esc(service),
            ms = s["durationMs"].as_f64().unwrap_or(0.0),
        );
    }
    out.push_str("</div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_from_the_app_is_escaped() {
        assert_eq!(
            super::super::html::esc("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
        let html = render_waterfall(
            "t",
            &[
                json!({"id": "a", "parent": null, "name": "<img src=x>", "kind": "server",
                     "startNs": 0, "durationMs": 1.0, "attributes": {"k": "<b>"}, "events": []}),
            ],
        );
        assert!(!html.contains("<img"), "{html}");
        assert!(html.contains("&lt;img src=x&gt;"));
    }
}
