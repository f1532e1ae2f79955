//! The Workflows page: the app's workflows with counts of their runs by state, and the latest
//! runs; a run's page: its steps with their input, output, attempts, errors and undos, its
//! trace, and "Retry" for a failed run (forwarded to the app, signed); and `GET /api/workflows`,
//! the list as JSON.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::Value;

use super::html::{esc, percent_encode, shell};
use super::{Dashboard, app_silent, app_unavailable, current, refusal};

#[derive(Debug, serde::Deserialize)]
pub(super) struct ListQuery {
    workflow: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct RunQuery {
    retried: Option<String>,
    error: Option<String>,
}

async fn state(d: &Dashboard, workflow: Option<&str>) -> Option<Value> {
    let path = match workflow {
        Some(w) => format!("/__ovation/workflows?workflow={}", percent_encode(w)),
        None => "/__ovation/workflows".into(),
    };
    d.app_json(&path).await?.ok()
}

/// `GET /api/workflows`: `{"workflows": [{"name", "service"}], "counts": [..], "runs": [..]}`;
/// 503 while the app does not answer.
pub(super) async fn api(State(d): State<Dashboard>, Query(q): Query<ListQuery>) -> Response {
    match state(&d, q.workflow.as_deref()).await {
        Some(state) => axum::Json(state).into_response(),
        None => app_unavailable(),
    }
}

pub(super) async fn page(State(d): State<Dashboard>, Query(q): Query<ListQuery>) -> Response {
    let status = current(&d.status);
    let mut body = String::from("<h1>Workflows</h1>");
    match state(&d, q.workflow.as_deref()).await {
        Some(state) => body.push_str(&render_list(&state, q.workflow.as_deref())),
        None => {
            body.push_str(&app_silent(&status.url));
        }
    }
    shell(&d, "Workflows", "workflows", &status, &body).into_response()
}

fn state_badge(state: &str) -> String {
    format!("<span class=\"status {0}\">{0}</span>", esc(state))
}

fn render_list(state: &Value, filter: Option<&str>) -> String {
    let workflows = state["workflows"].as_array().cloned().unwrap_or_default();
    if workflows.is_empty() {
        return "<p class=\"muted\">The app declares no workflow (<code>#[ovation::workflow]</code>).</p>"
            .into();
    }
    let counts = state["counts"].as_array().cloned().unwrap_or_default();
    let mut out = String::from("<div class=\"cards\">");
    for w in &workflows {
        let name = w["name"].as_str().unwrap_or_default();
        let by_state: Vec<String> = counts
            .iter()
            .filter(|c| c["workflow"] == name)
            .map(|c| {
                format!(
                    "{} {}",
                    c["runs"].as_i64().unwrap_or(0),
                    state_badge(c["state"].as_str().unwrap_or_default())
                )
            })
            .collect();
        let _ = write!(
            out,
            "<section class=\"card\" id=\"workflow-{id}\"><h2><a href=\"/workflows?workflow={href}\">{id}</a></h2>\
             <p class=\"muted\">{service}</p><p>{counts}</p></section>",
            id = esc(name),
            href = percent_encode(name),
            service = esc(w["service"].as_str().unwrap_or_default()),
            counts = if by_state.is_empty() {
                "no runs yet".into()
            } else {
                by_state.join(" · ")
            },
        );
    }
    out.push_str("</div>");
    let runs = state["runs"].as_array().cloned().unwrap_or_default();
    let _ = write!(
        out,
        "<h2>Latest runs{}</h2>",
        filter
            .map(|f| format!(
                " of <code>{}</code> (<a href=\"/workflows\">all</a>)",
                esc(f)
            ))
            .unwrap_or_default()
    );
    if runs.is_empty() {
        out.push_str("<p class=\"muted\">No runs.</p>");
        return out;
    }
    out.push_str("<table class=\"attrs runs\" id=\"runs\"><tr><th>run</th><th>workflow</th><th>state</th><th>started</th><th>executions</th></tr>");
    for r in &runs {
        let id = r["id"].as_str().unwrap_or_default();
        let state = r["state"].as_str().unwrap_or_default();
        let error = r["error"]["message"]
            .as_str()
            .map(|e| format!("<br><span class=\"error-text\">{}</span>", esc(e)))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr class=\"run {cls}\"><td><a href=\"/workflows/runs/{href}\"><code>{id}</code></a></td>\
             <td>{workflow}</td><td>{badge}{error}</td><td>{started}</td><td>{executions}</td></tr>",
            cls = esc(state),
            href = percent_encode(id),
            id = esc(id),
            workflow = esc(r["workflow"].as_str().unwrap_or_default()),
            badge = state_badge(state),
            started = esc(r["createdAt"].as_str().unwrap_or_default()),
            executions = r["executions"].as_i64().unwrap_or(1),
        );
    }
    out.push_str("</table>");
    out
}

/// JSON, compact and escaped, for a table cell.
fn json_cell(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    let text = v.to_string();
    let shown = match text.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    };
    format!("<code>{}</code>", esc(&shown))
}

pub(super) async fn run(
    State(d): State<Dashboard>,
    Path(id): Path<String>,
    Query(q): Query<RunQuery>,
) -> Response {
    let status = current(&d.status);
    let mut body = format!(
        "<p><a href=\"/workflows\">Workflows</a></p><h1>Run <code>{}</code></h1>",
        esc(&id)
    );
    if q.retried.is_some() {
        body.push_str("<p class=\"notice\" id=\"retried\">Retried from its failed step.</p>");
    }
    if let Some(e) = &q.error {
        let _ = write!(body, "<p class=\"notice\">Retry failed: {}</p>", esc(e));
    }
    match d
        .app_json(&format!(
            "/__ovation/workflows/runs/{}",
            percent_encode(&id)
        ))
        .await
    {
        Some(Ok(run)) => body.push_str(&render_run(&run, d.guard.token())),
        Some(Err(refused)) => {
            let _ = write!(body, "<p class=\"notice\">{}</p>", esc(&refused));
        }
        None => {
            body.push_str(&app_silent(&status.url));
        }
    }
    shell(&d, "Workflow run", "workflows", &status, &body).into_response()
}

fn render_run(run: &Value, token: &str) -> String {
    let state = run["state"].as_str().unwrap_or_default();
    let id = run["id"].as_str().unwrap_or_default();
    let mut out = format!(
        "<p>{badge} <code>{workflow}</code> of {service} · started {started} · {executions} execution(s){trace}</p>",
        badge = state_badge(state),
        workflow = esc(run["workflow"].as_str().unwrap_or_default()),
        service = esc(run["service"].as_str().unwrap_or_default()),
        started = esc(run["createdAt"].as_str().unwrap_or_default()),
        executions = run["executions"].as_i64().unwrap_or(1),
        trace = run["traceId"]
            .as_str()
            .map(|t| format!(" · <a href=\"/traces/{0}\">trace</a>", esc(t)))
            .unwrap_or_default(),
    );
    if let Some(e) = run["error"].as_object() {
        let _ = write!(
            out,
            "<p class=\"error-text\" id=\"run-error\">{}: {}</p>",
            esc(e.get("code").and_then(Value::as_str).unwrap_or_default()),
            esc(e.get("message").and_then(Value::as_str).unwrap_or_default())
        );
    }
    if state == "failed" {
        let _ = write!(
            out,
            "<form method=\"post\" action=\"/workflows/runs/{href}/retry\"><input type=\"hidden\" \
             name=\"csrf\" value=\"{token}\"><button type=\"submit\" class=\"retry\">Retry from the failed step</button></form>",
            href = percent_encode(id),
            token = esc(token),
        );
    }
    let _ = write!(
        out,
        "<h2>Input</h2><p>{}</p>{}",
        json_cell(&run["input"]),
        run["output"]
            .is_null()
            .then(String::new)
            .unwrap_or_else(|| format!("<h2>Output</h2><p>{}</p>", json_cell(&run["output"])))
    );
    let steps = run["steps"].as_array().cloned().unwrap_or_default();
    out.push_str("<h2>Steps</h2>");
    if steps.is_empty() {
        out.push_str("<p class=\"muted\">No step recorded yet.</p>");
        return out;
    }
    out.push_str(
        "<table class=\"attrs steps\" id=\"steps\"><tr><th>#</th><th>step</th><th>state</th>\
         <th>attempts</th><th>input</th><th>output / error</th><th>undo</th></tr>",
    );
    for s in &steps {
        let state = s["state"].as_str().unwrap_or_default();
        let outcome = match s["error"].as_object() {
            Some(e) => format!(
                "<span class=\"error-text\">{}: {}</span>",
                esc(e.get("code").and_then(Value::as_str).unwrap_or_default()),
                esc(e.get("message").and_then(Value::as_str).unwrap_or_default())
            ),
            None => json_cell(&s["output"]),
        };
        let undo = if s["compensatedAt"].is_string() {
            format!(
                "undone {}",
                esc(s["compensatedAt"].as_str().unwrap_or_default())
            )
        } else if let Some(e) = s["undoError"]["message"].as_str() {
            format!(
                "<span class=\"error-text\">{} failed: {}</span>",
                s["undoAttempts"].as_i64().unwrap_or(0),
                esc(e)
            )
        } else {
            String::new()
        };
        let _ = write!(
            out,
            "<tr class=\"step {cls}\"><td>{pos}</td><td><code>{name}</code> <span class=\"muted\">{kind}</span></td>\
             <td>{badge}</td><td>{attempts}</td><td>{input}</td><td>{outcome}</td><td>{undo}</td></tr>",
            cls = esc(state),
            pos = s["position"].as_i64().unwrap_or(0),
            name = esc(s["name"].as_str().unwrap_or_default()),
            kind = esc(s["kind"].as_str().unwrap_or_default()),
            badge = state_badge(state),
            attempts = s["attempts"].as_i64().unwrap_or(0),
            input = json_cell(&s["input"]),
        );
    }
    out.push_str("</table>");
    out
}

/// "Retry": forwarded to the app, then back to the run's page with the outcome.
pub(super) async fn retry(State(d): State<Dashboard>, Path(id): Path<String>) -> Response {
    let status = current(&d.status);
    let run_page = format!("/workflows/runs/{}", percent_encode(&id));
    let url = format!(
        "{}/__ovation/workflows/runs/{}/retry",
        status.url,
        percent_encode(&id)
    );
    let Some(request) = d.internal(reqwest::Method::POST, &url, Vec::new()) else {
        return Redirect::to(&format!("{run_page}?error=the+app%27s+URL+is+not+valid"))
            .into_response();
    };
    let target = match request
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => format!("{run_page}?retried=1"),
        Ok(r) => format!("{run_page}?error={}", percent_encode(&refusal(r).await)),
        Err(_) => format!(
            "{run_page}?error={}",
            percent_encode("the app does not answer")
        ),
    };
    Redirect::to(&target).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_run_renders_its_steps_escaped_with_a_retry_form_when_failed() {
        let run = json!({
            "id": "r<1>", "workflow": "checkout", "service": "checkout", "state": "failed",
            "input": {"quantity": 2}, "output": null, "executions": 2, "traceId": "abc",
            "createdAt": "2026-12-04T10:00:00Z",
            "error": {"code": "failed_precondition", "message": "payment <declined>"},
            "steps": [
                {"position": 0, "name": "reserve", "kind": "step", "state": "succeeded",
                 "attempts": 1, "input": null, "output": null,
                 "compensatedAt": "2026-12-04T10:00:01Z"},
                {"position": 1, "name": "charge", "kind": "step", "state": "failed",
                 "attempts": 3, "input": null,
                 "error": {"code": "failed_precondition", "message": "payment <declined>"}},
            ],
        });
        let html = render_run(&run, "tok");
        assert!(
            html.contains("action=\"/workflows/runs/r%3C1%3E/retry\""),
            "{html}"
        );
        assert!(html.contains("value=\"tok\""));
        assert!(html.contains("payment &lt;declined&gt;"), "escaped: {html}");
        assert!(html.contains("href=\"/traces/abc\""));
        assert!(html.contains("undone 2026-12-04T10:00:01Z"));
        let completed = json!({"id": "r", "state": "completed", "steps": []});
        assert!(!render_run(&completed, "tok").contains("<form"));
    }

    #[test]
    fn the_list_shows_counts_and_runs() {
        let state = json!({
            "workflows": [{"name": "checkout", "service": "checkout"}],
            "counts": [{"workflow": "checkout", "state": "completed", "runs": 7}],
            "runs": [{"id": "abc", "workflow": "checkout", "state": "completed",
                      "createdAt": "2026-12-04T10:00:00Z", "executions": 1}],
        });
        let html = render_list(&state, None);
        assert!(
            html.contains("7 <span class=\"status completed\">completed</span>"),
            "{html}"
        );
        assert!(html.contains("href=\"/workflows/runs/abc\""));
        assert!(render_list(&json!({"workflows": []}), None).contains("declares no workflow"));
    }
}
