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

/// A sparkline of `activity` (requests, deliveries, runs: `what`, plural) over the slots the
/// dashboard keeps: a bar per slot, its failed part in red, with the recent count beside it.
/// `None`: nothing was received for it yet.
pub(crate) fn sparkline(activity: Option<&crate::traces::metrics::Activity>, what: &str) -> String {
    use crate::traces::metrics::{SLOT, SLOTS};
    const WIDTH: u64 = 120;
    const HEIGHT: f64 = 20.0;
    let minutes = SLOT.as_secs() * SLOTS / 60;
    let slots = activity.map_or(&[][..], |a| &a.slots[..]);
    let count: u64 = slots.iter().map(|s| s.count).sum();
    let errors: u64 = slots.iter().map(|s| s.errors).sum();
    let peak = slots
        .iter()
        .map(|s| s.count.max(s.errors))
        .max()
        .unwrap_or(0)
        .max(1);
    let bar = WIDTH / SLOTS.max(1);
    let mut bars = String::new();
    for (i, slot) in slots.iter().enumerate() {
        let x = i as u64 * bar;
        for (n, class) in [(slot.count.max(slot.errors), "n"), (slot.errors, "e")] {
            if n > 0 {
                let h = (n as f64 / peak as f64 * HEIGHT).max(1.0);
                bars.push_str(&format!(
                    "<rect class=\"{class}\" x=\"{x}\" y=\"{y:.1}\" width=\"{w}\" height=\"{h:.1}\"/>",
                    y = HEIGHT - h,
                    w = bar,
                ));
            }
        }
    }
    let mean = {
        let (n, seconds) = slots.iter().fold((0u64, 0.0f64), |(n, s), slot| {
            (n + slot.count, s + slot.mean_ms * slot.count as f64)
        });
        if n > 0 { seconds / n as f64 } else { 0.0 }
    };
    let summary = if count == 0 {
        format!("no {what} in the last {minutes} minutes")
    } else {
        format!(
            "{count} {what}, {errors} failed, {mean:.1} ms on average, in the last {minutes} minutes"
        )
    };
    format!(
        "<span class=\"activity\"><svg class=\"spark\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"{WIDTH}\" height=\"{HEIGHT}\" role=\"img\" data-count=\"{count}\" \
         data-errors=\"{errors}\"><title>{title}</title><line x1=\"0\" y1=\"{HEIGHT}\" \
         x2=\"{WIDTH}\" y2=\"{HEIGHT}\"/>{bars}</svg><span class=\"muted\">{label}</span></span>",
        title = esc(&summary),
        label = if count == 0 {
            String::new()
        } else if errors == 0 {
            format!("{count}")
        } else {
            format!("{count} · {errors} failed")
        },
    )
}
