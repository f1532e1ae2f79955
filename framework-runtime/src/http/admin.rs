//! Ovation's own endpoints on every app port: `/__ovation/health` and `/openapi.json` for
//! anyone; the app model, Pub/Sub state and redrive only for requests signed with the app's key.

use axum::body::Bytes;
use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::endpoint::verified_caller;
use super::wire::{decode_json, not_found_response, read_body};
use crate::error::Error;
use crate::runtime::Runtime;

pub(crate) async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// The counts and latencies of what this process served and called, in Prometheus' text
/// format. Readable without a signature, as the health check is, so Prometheus can scrape it:
/// it holds endpoint names, counts and durations, nothing of any request.
pub(crate) fn metrics(rt: &Runtime) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        rt.metrics.render(crate::telemetry::dropped_spans()),
    )
        .into_response()
}

/// The app model, for the CLI and the dashboard. It names private endpoints, so it answers
/// only signed requests (the CLI signs with the app's key).
pub(crate) async fn meta(rt: &'static Runtime, req: Request) -> Response {
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    axum::Json(crate::model::app_model(Some(rt))).into_response()
}

/// Admits a request to Ovation's internal endpoints (the app model, Pub/Sub state and
/// redrive): only with a valid service signature, which the CLI and the dashboard make with the
/// app's key. Being on loopback is no credential: a browser page sends from loopback too, and
/// behind a reverse proxy on the same host so does every client. Anyone else gets the 404 of a
/// route that does not exist. On success, the body (at most 64 KiB).
async fn internal_request(rt: &Runtime, req: Request) -> Result<Bytes, Response> {
    let (parts, body) = req.into_parts();
    let hidden = || not_found_response(parts.method.as_str(), parts.uri.path());
    let deadline = tokio::time::Instant::now() + rt.body_read_timeout;
    let Ok(body) = read_body(body, 64 * 1024, deadline).await else {
        return Err(hidden());
    };
    if !verified_caller(rt, &parts, &body).is_some_and(|v| v.is_internal()) {
        return Err(hidden());
    }
    Ok(body)
}

/// Topics and subscriptions with their counts and dead letters, for the dashboard.
pub(crate) async fn pubsub_state(rt: &'static Runtime, req: Request) -> Response {
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    let Ok(pubsub) = rt.pubsub() else {
        return axum::Json(json!({ "topics": [], "subscriptions": [] })).into_response();
    };
    let mut topics = Vec::new();
    for t in crate::pubsub::topics() {
        let published = pubsub.published(t.name).await.unwrap_or(None);
        topics.push(json!({
            "name": t.name,
            "service": crate::runtime::service_of(t.module),
            "published": published,
        }));
    }
    let mut subscriptions = Vec::new();
    for s in crate::pubsub::subscriptions() {
        let stats = match pubsub.stats(s.name).await {
            Ok(stats) => stats,
            Err(e) => return e.into_response(),
        };
        let dead = match pubsub.dead_letters(s.name).await {
            Ok(dead) => dead,
            Err(e) => return e.into_response(),
        };
        subscriptions.push(json!({
            "name": s.name,
            "topic": (s.topic)(),
            "service": s.service(),
            "stats": stats,
            "deadLetters": dead.iter().take(100).collect::<Vec<_>>(),
        }));
    }
    axum::Json(json!({ "topics": topics, "subscriptions": subscriptions })).into_response()
}

/// Puts a subscription's dead letters (all, or the one `{"messageId": ..}` names) back.
pub(crate) async fn pubsub_redrive(rt: &'static Runtime, req: Request) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    struct Redrive {
        message_id: Option<uuid::Uuid>,
    }
    let (subscription, req) = match one_param(req).await {
        Ok(p) => p,
        Err(denied) => return denied,
    };
    let body = match internal_request(rt, req).await {
        Ok(body) => body,
        Err(denied) => return denied,
    };
    if !crate::pubsub::subscriptions()
        .iter()
        .any(|s| s.name == subscription)
    {
        return Error::not_found(format!("no subscription `{subscription}`")).into_response();
    }
    let request: Redrive = match decode_json::<Option<Redrive>>(&body) {
        Ok(r) => r.unwrap_or(Redrive { message_id: None }),
        Err(e) => return e.into_response(),
    };
    let pubsub = match rt.pubsub() {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match pubsub
        .redrive(
            &subscription,
            request.message_id.map(crate::pubsub::MessageId),
        )
        .await
    {
        Ok(n) => axum::Json(json!({ "redriven": n })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Every cron job with its schedule, next run and recent runs, for the dashboard.
pub(crate) async fn cron_state(rt: &'static Runtime, req: Request) -> Response {
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    match crate::cron::store::state(rt).await {
        Ok(jobs) => axum::Json(json!({ "jobs": jobs })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Starts a cron job now (the dashboard's "Run now"): `{"runId": ..}` once claimed, `aborted`
/// (409) while it runs already, `failed_precondition` if this process does not host its service.
pub(crate) async fn cron_run(rt: &'static Runtime, req: Request) -> Response {
    let (name, req) = match one_param(req).await {
        Ok(p) => p,
        Err(denied) => return denied,
    };
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    let Some(job) = crate::cron::job(&name) else {
        return Error::not_found(format!("no cron job `{name}`")).into_response();
    };
    if !rt.hosts(job.service()) {
        return Error::failed_precondition(format!(
            "cron job `{name}` belongs to service `{}`, which this process does not host",
            job.service()
        ))
        .into_response();
    }
    match crate::cron::store::start_manually(rt, job).await {
        Ok(id) => axum::Json(json!({ "runId": id })).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The workflows, counts of their runs by state, and the latest runs (of `?workflow=` only, if
/// given), for the dashboard.
pub(crate) async fn workflows_state(rt: &'static Runtime, req: Request) -> Response {
    let workflow = req.uri().query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "workflow")
            .map(|(_, v)| v.into_owned())
    });
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    let workflows: Vec<_> = crate::workflow::workflows()
        .iter()
        .map(|w| json!({ "name": w.name, "service": w.service() }))
        .collect();
    let Some(store) = rt.workflows else {
        return axum::Json(json!({ "workflows": workflows, "counts": [], "runs": [] }))
            .into_response();
    };
    let counts = match crate::workflow::status::counts(store).await {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let counts: Vec<_> = counts
        .into_iter()
        .map(
            |(workflow, state, runs)| json!({ "workflow": workflow, "state": state, "runs": runs }),
        )
        .collect();
    match crate::workflow::status::recent(store, workflow.as_deref(), 100).await {
        Ok(runs) => axum::Json(json!({ "workflows": workflows, "counts": counts, "runs": runs }))
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// The path parameter of a route with one, and the request put back together.
async fn one_param(req: Request) -> Result<(String, Request), Response> {
    let (mut parts, body) = req.into_parts();
    let Ok(raw) = RawPathParams::from_request_parts(&mut parts, &()).await else {
        return Err(not_found_response(parts.method.as_str(), parts.uri.path()));
    };
    let value = raw
        .iter()
        .next()
        .map(|(_, v)| v.to_owned())
        .unwrap_or_default();
    Ok((value, Request::from_parts(parts, body)))
}

/// One workflow run with its steps.
pub(crate) async fn workflow_run(rt: &'static Runtime, req: Request) -> Response {
    let (id, req) = match one_param(req).await {
        Ok(p) => p,
        Err(denied) => return denied,
    };
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    let Some(store) = rt.workflows else {
        return Error::not_found(format!("no workflow run `{id}`")).into_response();
    };
    match crate::workflow::status::status_in(store, &id).await {
        Ok(run) => axum::Json(run).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Retries a failed run from its failed step (the dashboard's "Retry").
pub(crate) async fn workflow_retry(rt: &'static Runtime, req: Request) -> Response {
    let (id, req) = match one_param(req).await {
        Ok(p) => p,
        Err(denied) => return denied,
    };
    if let Err(denied) = internal_request(rt, req).await {
        return denied;
    }
    match crate::workflow::runs::retry_in(rt, &id).await {
        Ok(()) => axum::Json(json!({ "retried": id })).into_response(),
        Err(e) => e.into_response(),
    }
}
