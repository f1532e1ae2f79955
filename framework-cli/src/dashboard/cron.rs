//! The Cron page: every job with its schedule, service, next run and last runs (status,
//! duration, trace link), and its "Run now" button (forwarded to the app, signed); and
//! `GET /api/cron`, the same as JSON.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::html::{esc, percent_encode, shell};
use super::{Dashboard, app_silent, app_unavailable, current, refusal};

#[derive(Debug, serde::Deserialize)]
pub(super) struct CronQuery {
    started: Option<String>,
    error: Option<String>,
}

/// The app's `/__ovation/cron`: `{"jobs": [..]}`, or `None` if it does not answer.
async fn jobs(d: &Dashboard) -> Option<Vec<Value>> {
    let state = d.app_json("/__ovation/cron").await?.ok()?;
    state["jobs"].as_array().cloned()
}

/// `GET /api/cron`: `[{"name", "service", "schedule", "nextRun", "runs", "lastRun"}]`; 503
/// while the app does not answer.
pub(super) async fn api(State(d): State<Dashboard>) -> Response {
    let Some(jobs) = jobs(&d).await else {
        return app_unavailable();
    };
    let list: Vec<Value> = jobs
        .iter()
        .map(|j| {
            json!({
                "name": j["name"],
                "service": j["service"],
                "schedule": j["schedule"],
                "nextRun": j["nextRun"],
                "runs": j["runs"],
                "lastRun": j["lastRun"],
            })
        })
        .collect();
    axum::Json(list).into_response()
}

pub(super) async fn page(State(d): State<Dashboard>, Query(q): Query<CronQuery>) -> Response {
    let status = current(&d.status);
    let mut body = String::from("<h1>Cron jobs</h1>");
    if let Some(job) = &q.started {
        let _ = write!(
            body,
            "<p class=\"notice\" id=\"started\">Started <code>{}</code>.</p>",
            esc(job)
        );
    }
    if let Some(e) = &q.error {
        let _ = write!(body, "<p class=\"notice\">Run now failed: {}</p>", esc(e));
    }
    match jobs(&d).await {
        Some(jobs) => body.push_str(&render(&jobs, d.guard.token())),
        None => {
            body.push_str(&app_silent(&status.url));
        }
    }
    shell(&d, "Cron jobs", "cron", &status, &body).into_response()
}

fn run_row(run: &Value) -> String {
    let status = run["status"].as_str().unwrap_or_default();
    let when = run["tick"]
        .as_str()
        .map(|t| format!("tick {}", esc(t)))
        .unwrap_or_else(|| "run by hand".into());
    let duration = run["durationMs"]
        .as_i64()
        .map_or("running".into(), |ms| format!("{ms} ms"));
    let trace = run["traceId"]
        .as_str()
        .map(|t| format!("<a href=\"/traces/{0}\">trace</a>", esc(t)))
        .unwrap_or_default();
    let error = run["error"]
        .as_str()
        .map(|e| format!("<br><span class=\"error-text\">{}</span>", esc(e)))
        .unwrap_or_default();
    format!(
        "<tr class=\"run {status}\"><td><span class=\"status {status}\">{status}</span></td>\
         <td>{}<br><span class=\"muted\">{when}</span>{error}</td><td>{duration}</td><td>{trace}</td></tr>",
        esc(run["startedAt"].as_str().unwrap_or_default()),
        status = esc(status),
    )
}

/// The page's body from the app's jobs.
fn render(jobs: &[Value], token: &str) -> String {
    if jobs.is_empty() {
        return "<p class=\"muted\">The app declares no cron job (<code>ovation::cron!</code>).</p>"
            .into();
    }
    let mut out = String::from("<div class=\"cards\">");
    for j in jobs {
        let name = j["name"].as_str().unwrap_or_default();
        let _ = write!(
            out,
            "<section class=\"card\" id=\"cron-{id}\"><h2>{id}</h2>\
             <p class=\"muted\">{service} · <code>{schedule}</code> · next {next} · {runs} runs</p>\
             <form method=\"post\" action=\"/cron/{href}/run\"><input type=\"hidden\" name=\"csrf\" \
             value=\"{token}\"><button type=\"submit\" class=\"run-now\">Run now</button></form>",
            id = esc(name),
            href = percent_encode(name),
            service = esc(j["service"].as_str().unwrap_or_default()),
            schedule = esc(j["schedule"].as_str().unwrap_or_default()),
            next = esc(j["nextRun"].as_str().unwrap_or_default()),
            runs = j["runs"].as_i64().unwrap_or(0),
            token = esc(token),
        );
        let runs: Vec<&Value> = j["lastRun"]
            .as_object()
            .map(|_| &j["lastRun"])
            .into_iter()
            .chain(j["recentRuns"].as_array().into_iter().flatten())
            .collect();
        if runs.is_empty() {
            out.push_str("<p class=\"muted\">Not run yet.</p>");
        } else {
            out.push_str("<table class=\"attrs runs\">");
            for run in runs.iter().take(10) {
                out.push_str(&run_row(run));
            }
            out.push_str("</table>");
        }
        out.push_str("</section>");
    }
    out.push_str("</div>");
    out
}

/// "Run now": forwarded to the app, then back to the page with the outcome.
pub(super) async fn run(State(d): State<Dashboard>, Path(job): Path<String>) -> Response {
    let status = current(&d.status);
    let url = format!("{}/__ovation/cron/{}/run", status.url, percent_encode(&job));
    let Some(request) = d.internal(reqwest::Method::POST, &url, Vec::new()) else {
        return Redirect::to("/cron?error=the+app%27s+URL+is+not+valid").into_response();
    };
    let target = match request
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => format!("/cron?started={}", percent_encode(&job)),
        Ok(r) => format!("/cron?error={}", percent_encode(&refusal(r).await)),
        Err(_) => format!("/cron?error={}", percent_encode("the app does not answer")),
    };
    Redirect::to(&target).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_render_with_their_runs_escaped_and_a_run_now_form() {
        let jobs = vec![json!({
            "name": "expire-reservations", "service": "products", "schedule": "every 1m",
            "nextRun": "2026-12-04T10:01:00Z", "runs": 3,
            "lastRun": {"status": "failed", "tick": null, "startedAt": "2026-12-04T10:00:00Z",
                        "durationMs": 12, "error": "<b>boom</b>", "traceId": "abc"},
            "recentRuns": [{"status": "succeeded", "tick": "2026-12-04T09:59:00Z",
                            "startedAt": "2026-12-04T09:59:00Z", "durationMs": 8}],
        })];
        let html = render(&jobs, "tok");
        assert!(
            html.contains("action=\"/cron/expire-reservations/run\""),
            "{html}"
        );
        assert!(html.contains("value=\"tok\""));
        assert!(html.contains("&lt;b&gt;boom"), "escaped: {html}");
        assert!(html.contains("href=\"/traces/abc\""));
        assert!(html.contains("run by hand") && html.contains("tick 2026-12-04T09:59:00Z"));
        assert!(render(&[], "tok").contains("declares no cron job"));
    }
}
