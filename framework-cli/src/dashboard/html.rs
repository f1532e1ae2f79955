//! The shell every dashboard page shares (navigation, status bar, the token its forms carry),
//! and the escaping of whatever goes into it.

use axum::response::{Html, IntoResponse, Response};

use super::{AppState, AppStatus, Dashboard};

/// `text` with HTML's special characters escaped.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(super) fn shell(
    d: &Dashboard,
    title: &str,
    active: &str,
    status: &AppStatus,
    body: &str,
) -> Html<String> {
    let nav: String = [
        ("services", "Services"),
        ("explorer", "API explorer"),
        ("traces", "Traces"),
        ("architecture", "Architecture"),
        ("databases", "Databases"),
        ("pubsub", "Pub/Sub"),
        ("cron", "Cron"),
        ("workflows", "Workflows"),
    ]
    .iter()
    .map(|(href, label)| {
        let class = if *href == active {
            " class=\"active\""
        } else {
            ""
        };
        format!("<a href=\"/{href}\"{class}>{label}</a>")
    })
    .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"ovation-csrf\" content=\"{token}\">\
         <title>{title} · Ovation</title><link rel=\"stylesheet\" href=\"/assets/style.css\"></head>\
         <body><header><span class=\"brand\">Ovation</span><nav>{nav}</nav></header>\
         <main>{body}</main>{bar}<script src=\"/assets/app.js\"></script></body></html>",
        title = esc(title),
        bar = status_bar(status),
        token = esc(d.guard.token()),
    ))
}

fn status_bar(status: &AppStatus) -> String {
    let (class, text) = match &status.state {
        AppState::Starting => ("starting", "starting".to_owned()),
        AppState::Running => ("running", "running".to_owned()),
        AppState::Rebuilding => ("rebuilding", "rebuilding".to_owned()),
        AppState::CompileError { message } => ("error", format!("compile error: {message}")),
        AppState::Stopped => ("stopped", "stopped".to_owned()),
    };
    format!(
        "<footer id=\"status\" class=\"{class}\"><span class=\"dot\"></span>\
         <span id=\"status-text\">{}</span><a id=\"status-url\" href=\"{url}\">{url}</a></footer>",
        esc(&text),
        url = esc(&status.url),
    )
}

pub(super) fn not_running(
    d: &Dashboard,
    status: &AppStatus,
    title: &str,
    active: &str,
) -> Response {
    let body = format!(
        "<h1>{}</h1><p class=\"notice\">The app at <code>{}</code> does not answer yet.</p>",
        esc(title),
        esc(&status.url)
    );
    shell(d, title, active, status, &body).into_response()
}

/// `text` with everything but RFC 3986's unreserved characters percent-encoded: safe in a
/// path segment or a query value.
pub(crate) fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
