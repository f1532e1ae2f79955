//! The Pub/Sub page: messages per topic; delivered, pending and dead per subscription; dead
//! letters with their last error, and the redrive buttons (forwarded to the app, signed).

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use super::html::{esc, percent_encode, shell};
use super::{Dashboard, current, refusal};
use crate::guard::form_field;

#[derive(Debug, serde::Deserialize)]
pub(super) struct PubSubQuery {
    redriven: Option<u64>,
    error: Option<String>,
}

pub(super) async fn page(State(d): State<Dashboard>, Query(q): Query<PubSubQuery>) -> Response {
    let status = current(&d.status);
    let state: Option<Value> = d.app_json("/__ovation/pubsub").await.and_then(Result::ok);
    let mut body = String::from("<h1>Pub/Sub</h1>");
    if let Some(n) = q.redriven {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"redriven\">Put {n} message{} back for delivery.</p>",
            if n == 1 { "" } else { "s" }
        );
    }
    if let Some(e) = &q.error {
        let _ = write!(body, "<p class=\"notice\">Redrive failed: {}</p>", esc(e));
    }
    let Some(state) = state else {
        body.push_str(&super::app_silent(&status.url));
        return shell(&d, "Pub/Sub", "pubsub", &status, &body).into_response();
    };
    body.push_str(&render_pubsub(&state, d.guard.token()));
    shell(&d, "Pub/Sub", "pubsub", &status, &body).into_response()
}

/// The Pub/Sub page's body from the app's `/__ovation/pubsub`.
pub(super) fn render_pubsub(state: &Value, token: &str) -> String {
    let mut out = String::from(
        "<h3>Topics</h3><table class=\"traces\"><thead><tr><th>Topic</th><th>Service</th>\
         <th>Published (24 h)</th></tr></thead><tbody>",
    );
    for t in state["topics"].as_array().into_iter().flatten() {
        let _ = write!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
            esc(t["name"].as_str().unwrap_or_default()),
            esc(t["service"].as_str().unwrap_or_default()),
            t["published"]
                .as_u64()
                .map_or("—".into(), |n| n.to_string()),
        );
    }
    out.push_str("</tbody></table><h3>Subscriptions</h3><div class=\"cards\">");
    for s in state["subscriptions"].as_array().into_iter().flatten() {
        let name = s["name"].as_str().unwrap_or_default();
        let stat = |k: &str| s["stats"][k].as_u64().unwrap_or(0);
        let _ = write!(
            out,
            "<section class=\"card\" id=\"subscription-{id}\"><h2>{id}</h2>\
             <p class=\"muted\"><code>{topic}</code> → {service}</p>\
             <p class=\"counts\"><span>delivered <b>{}</b></span> <span>pending <b>{}</b></span> \
             <span class=\"dead\">dead <b>{}</b></span></p>",
            stat("delivered"),
            stat("pending"),
            stat("dead"),
            id = esc(name),
            topic = esc(s["topic"].as_str().unwrap_or_default()),
            service = esc(s["service"].as_str().unwrap_or_default()),
        );
        let dead = s["deadLetters"].as_array().cloned().unwrap_or_default();
        if !dead.is_empty() {
            let action = format!("/pubsub/{}/redrive", esc(name));
            let token = format!(
                "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
                esc(token)
            );
            let _ = write!(
                out,
                "<form method=\"post\" action=\"{action}\">{token}<button type=\"submit\" class=\"redrive-all\">\
                 Redrive all {}</button></form><table class=\"attrs dead-letters\">",
                dead.len()
            );
            for d in dead {
                let id = d["message_id"].as_str().unwrap_or_default();
                let payload = d["payload"].to_string();
                let preview: String = payload.chars().take(120).collect();
                let _ = write!(
                    out,
                    "<tr data-message=\"{id}\"><td><code>{id}</code><br><span class=\"muted\">{} · {} attempts</span>\
                     <br><code>{}</code><br><span class=\"error-text\">{}</span></td><td>\
                     <form method=\"post\" action=\"{action}\">{token}<input type=\"hidden\" name=\"messageId\" \
                     value=\"{id}\"><button type=\"submit\" class=\"redrive\">Redrive</button></form></td></tr>",
                    esc(d["published_at"].as_str().unwrap_or_default()),
                    d["attempts"].as_u64().unwrap_or(0),
                    esc(&preview),
                    esc(d["last_error"].as_str().unwrap_or_default()),
                    id = esc(id),
                );
            }
            out.push_str("</table>");
        }
        out.push_str("</section>");
    }
    out.push_str("</div>");
    out
}

/// The redrive buttons: forwarded to the app, then back to the page with the outcome.
pub(super) async fn redrive(
    State(d): State<Dashboard>,
    Path(subscription): Path<String>,
    form: axum::body::Bytes,
) -> Response {
    let status = current(&d.status);
    // The form's one field, `messageId` (absent for "redrive all").
    let message_id = form_field(&form, "messageId");
    let body = match message_id.filter(|m| !m.is_empty()) {
        Some(id) => serde_json::json!({ "messageId": id }),
        None => serde_json::json!({}),
    };
    let url = format!(
        "{}/__ovation/pubsub/{}/redrive",
        status.url,
        percent_encode(&subscription)
    );
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let answer = match d.internal(reqwest::Method::POST, &url, body) {
        Some(request) => {
            request
                .header(header::CONTENT_TYPE, "application/json")
                .timeout(std::time::Duration::from_secs(10))
                .send()
                .await
        }
        None => return Redirect::to("/pubsub?error=the+app%27s+URL+is+not+valid").into_response(),
    };
    let target = match answer {
        Ok(r) if r.status().is_success() => {
            let n = r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["redriven"].as_u64())
                .unwrap_or(0);
            format!("/pubsub?redriven={n}")
        }
        Ok(r) => format!("/pubsub?error={}", percent_encode(&refusal(r).await)),
        Err(_) => format!(
            "/pubsub?error={}",
            percent_encode("the app does not answer")
        ),
    };
    Redirect::to(&target).into_response()
}
