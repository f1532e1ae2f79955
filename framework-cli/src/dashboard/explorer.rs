//! The API explorer: every endpoint with a form generated from its schema; the call goes
//! through the dashboard to the app with a fresh trace context, so the answer links to its
//! trace. A private endpoint is called with the app's service signature, as another service
//! would; a public or `auth` one as a client would, with the credential typed into the form
//! (sent where the app's auth handler reads it, never kept by the dashboard).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ovation::tooling::{AppModel, AuthModel, EndpointModel};
use ovation::{Access, EndpointKind};
use serde_json::{Value, json};

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};

use super::html::{esc, not_running, shell};
use super::{Dashboard, app_model, current};

/// An example value for `schema`: what the body box starts with.
pub(super) fn example(schema: &Value, defs: &Value, depth: usize) -> Value {
    let schema = match schema["$ref"].as_str() {
        Some(r) => defs
            .get(r.rsplit('/').next().unwrap_or_default())
            .unwrap_or(schema),
        None => schema,
    };
    if depth > 6 {
        return Value::Null;
    }
    if let Some(first) = schema["enum"].as_array().and_then(|e| e.first()) {
        return first.clone();
    }
    if let Some(options) = schema["anyOf"].as_array().or(schema["oneOf"].as_array()) {
        return options
            .iter()
            .find(|o| o["type"] != "null")
            .map_or(Value::Null, |o| example(o, defs, depth + 1));
    }
    let kind = match &schema["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null")
            .to_owned(),
        _ => String::new(),
    };
    match kind.as_str() {
        "object" => Value::Object(
            schema["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), example(v, defs, depth + 1)))
                .collect(),
        ),
        "array" => json!([example(&schema["items"], defs, depth + 1)]),
        "string" => match schema["format"].as_str() {
            Some("uuid") => json!("00000000-0000-0000-0000-000000000000"),
            Some("date-time") => json!("2026-01-01T00:00:00Z"),
            Some("email") => json!("ada@example.com"),
            _ => json!(""),
        },
        "integer" => json!(0),
        "number" => json!(0.0),
        "boolean" => json!(false),
        _ => Value::Null,
    }
}

/// The explorer page's body: the endpoint list, and the form of `selected`.
pub(super) fn render(
    endpoints: &[EndpointModel],
    auth: Option<&AuthModel>,
    selected: Option<&str>,
) -> String {
    let mut out = String::from(
        "<h1>API explorer</h1><div class=\"explorer\"><ul class=\"plain endpoint-list\">",
    );
    for e in endpoints {
        let id = format!("{}.{}", e.service, e.name);
        let access = e.access.as_str();
        let _ = write!(
            out,
            "<li><a href=\"/explorer?endpoint={id}\"{active}><span class=\"method\">{}</span> {} \
             <span class=\"badge {access}\">{access}</span>{kind}</a></li>",
            if e.kind.is_stream() {
                "WS"
            } else {
                e.method.as_str()
            },
            esc(&e.path),
            kind = if e.kind == EndpointKind::Typed {
                String::new()
            } else {
                format!(" <span class=\"badge kind\">{}</span>", e.kind.as_str())
            },
            id = esc(&id),
            active = if selected == Some(id.as_str()) {
                " class=\"active\""
            } else {
                ""
            },
            access = access,
        );
    }
    out.push_str("</ul><div class=\"call\">");
    let chosen = selected.and_then(|sel| {
        endpoints
            .iter()
            .find(|e| sel.split_once('.') == Some((e.service.as_str(), e.name.as_str())))
    });
    match chosen {
        None => out.push_str("<p class=\"muted\">Pick an endpoint.</p>"),
        Some(e) => out.push_str(&form(e, auth)),
    }
    out.push_str("</div></div>");
    out
}

/// How a client sends the credential `auth` reads first, for the form's label.
fn credential_label(auth: &AuthModel) -> String {
    match auth.credentials.first() {
        Some(c) if c.kind == "cookie" => {
            format!("the `{}` cookie", c.name.as_deref().unwrap_or(""))
        }
        Some(c) if c.kind == "header" => {
            format!("the `{}` header", c.name.as_deref().unwrap_or(""))
        }
        _ => "Authorization: Bearer".to_owned(),
    }
}

fn form(e: &EndpointModel, auth: Option<&AuthModel>) -> String {
    let (service, name) = (e.service.as_str(), e.name.as_str());
    let method = if e.kind.is_stream() {
        "WS"
    } else {
        e.method.as_str()
    };
    let access = e.access.as_str();
    let mut out = format!(
        "<h2><span class=\"method\">{}</span> <code>{}</code> <span class=\"badge {a}\">{a}</span></h2>\
         <p class=\"muted\">{}.{}{}</p><form id=\"explorer\" data-service=\"{}\" data-endpoint=\"{}\" \
         data-kind=\"{kind}\">",
        method,
        esc(&e.path),
        esc(service),
        esc(name),
        match e.access {
            Access::Private => " · called with a service signature, as another service would",
            Access::Auth => " · called as a client, with the credential below",
            Access::Public => "",
        },
        esc(service),
        esc(name),
        a = access,
        kind = e.kind.as_str(),
    );
    for p in &e.path_params {
        let _ = write!(
            out,
            "<label>{p}<input name=\"path:{p}\" data-param=\"{p}\" required></label>",
            p = esc(p)
        );
    }
    if let Some(auth) = auth.filter(|_| e.access != Access::Private) {
        let _ = write!(
            out,
            "<label>Credential ({}){}<input name=\"credential\" data-credential \
             autocomplete=\"off\" spellcheck=\"false\"></label>",
            esc(&credential_label(auth)),
            if e.access == Access::Auth {
                ""
            } else {
                ", optional"
            },
        );
    }
    if let Some(schema) = &e.request_schema {
        let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
        let sample = serde_json::to_string_pretty(&example(schema, &defs, 0)).unwrap_or_default();
        let (label, field) = if e.kind.is_stream() {
            ("Handshake query (as JSON)", "query")
        } else if !e.method.has_body() {
            ("Query (as JSON)", "query")
        } else {
            ("Body", "body")
        };
        let _ = write!(
            out,
            "<label>{label}<textarea name=\"{field}\" rows=\"8\" spellcheck=\"false\">{}</textarea></label>",
            esc(&sample)
        );
    }
    match e.kind {
        EndpointKind::Raw => {
            if e.method.has_body() {
                out.push_str(
                    "<label>Content type<input name=\"content-type\" value=\"application/json\"></label>\
                     <label>Body (sent as written)<textarea name=\"raw\" rows=\"8\" spellcheck=\"false\"></textarea></label>",
                );
            }
            out.push_str("<button type=\"submit\">Send</button></form><div id=\"response\"></div>");
        }
        EndpointKind::Typed | EndpointKind::Static => {
            out.push_str("<button type=\"submit\">Send</button></form><div id=\"response\"></div>");
        }
        kind => {
            out.push_str("<button type=\"submit\">Open stream</button></form>");
            out.push_str("<div id=\"stream\" hidden><p id=\"stream-state\" class=\"muted\"></p>");
            if matches!(kind, EndpointKind::StreamIn | EndpointKind::StreamInOut) {
                let sample = e
                    .incoming_schema
                    .as_ref()
                    .map(|schema| {
                        let defs = schema.get("$defs").cloned().unwrap_or(Value::Null);
                        serde_json::to_string_pretty(&example(schema, &defs, 0)).unwrap_or_default()
                    })
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "<form id=\"stream-send\"><label>Message<textarea name=\"message\" rows=\"4\" \
                     spellcheck=\"false\">{}</textarea></label><button type=\"submit\">Send message</button></form>",
                    esc(&sample)
                );
            }
            out.push_str(
                "<button type=\"button\" id=\"stream-close\">Close stream</button>\
                 <h4>Messages</h4><ol id=\"stream-messages\" class=\"messages\"></ol></div>",
            );
        }
    }
    out
}

/// What the page's script posts to `/api/explorer`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CallRequest {
    pub service: String,
    pub endpoint: String,
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
    pub query: Option<Value>,
    pub body: Option<Value>,
    /// The credential for the app's auth handler (a token), if the user typed one.
    pub credential: Option<String>,
    /// A raw endpoint's body, sent as written, and its content type.
    pub raw: Option<String>,
    pub content_type: Option<String>,
}

/// Sends `call` to the app at `base` and describes the answer.
pub(super) async fn send(
    http: &reqwest::Client,
    base: &str,
    key: &ovation::tooling::ServiceAuthKey,
    model: &AppModel,
    call: CallRequest,
) -> Result<Value, String> {
    let e = model
        .endpoints
        .iter()
        .find(|e| e.service == call.service && e.name == call.endpoint)
        .ok_or_else(|| format!("no endpoint {}.{}", call.service, call.endpoint))?;
    let method = e.method.as_str();
    let url = call_url(base, e, &call)?;
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let span_id = format!("{:016x}", rand::random::<u64>() | 1);
    let method_value = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let mut request = http
        .request(method_value, url.clone())
        .header("traceparent", format!("00-{trace_id}-{span_id}-01"))
        .timeout(Duration::from_secs(60));
    let body = match (&call.body, &call.raw) {
        (_, Some(raw)) if e.kind == EndpointKind::Raw => raw.clone().into_bytes(),
        (Some(body), _) => serde_json::to_vec(body).map_err(|e| e.to_string())?,
        _ => Vec::new(),
    };
    if let Some((name, value)) =
        credential_header(e, model.auth.as_ref(), call.credential.as_deref())
    {
        request = request.header(name, value);
    }
    if e.access == Access::Private {
        let signed = ovation::tooling::Signed {
            method,
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: &body,
        };
        request = request.header(ovation::tooling::HEADER, key.sign(signed, "dashboard"));
    }
    if e.kind == EndpointKind::Raw && call.raw.is_some() {
        let content_type = call
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        request = request
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
    } else if call.body.is_some() {
        request = request
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
    }
    let started = Instant::now();
    let response = request
        .send()
        .await
        .map_err(|e| format!("the app did not answer: {e}"))?;
    let status = response.status().as_u16();
    let headers: serde_json::Map<String, Value> = response
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    let body = response.text().await.unwrap_or_default();
    Ok(json!({
        "status": status,
        "durationMs": started.elapsed().as_secs_f64() * 1000.0,
        "headers": headers,
        "body": body,
        "traceId": trace_id,
    }))
}

/// The URL of `call` to endpoint `e` of the app at `base`: its path filled in, its query.
fn call_url(base: &str, e: &EndpointModel, call: &CallRequest) -> Result<reqwest::Url, String> {
    let mut path = String::new();
    for segment in e.path.split('/').skip(1) {
        path.push('/');
        if let Some(name) = segment.strip_prefix(':') {
            path.push_str(&super::html::percent_encode(
                call.params.get(name).map_or("", String::as_str),
            ));
        } else if let Some(name) = segment.strip_prefix('*') {
            let rest = call.params.get(name).map_or("", String::as_str);
            let parts: Vec<String> = rest.split('/').map(super::html::percent_encode).collect();
            path.push_str(&parts.join("/"));
        } else {
            path.push_str(segment);
        }
    }
    let mut url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|e| e.to_string())?;
    if let Some(Value::Object(query)) = &call.query {
        let mut pairs = url.query_pairs_mut();
        for (k, v) in query {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            pairs.append_pair(k, &v);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    Ok(url)
}

/// The header carrying `credential` where the app's auth handler reads it first; none for a
/// private endpoint (the service signature stands for the caller).
fn credential_header(
    e: &EndpointModel,
    auth: Option<&AuthModel>,
    credential: Option<&str>,
) -> Option<(String, String)> {
    let credential = credential.map(str::trim).filter(|c| !c.is_empty())?;
    let auth = auth?;
    if e.access == Access::Private {
        return None;
    }
    Some(match auth.credentials.first() {
        Some(c) if c.kind == "cookie" => (
            "cookie".to_owned(),
            format!("{}={credential}", c.name.as_deref().unwrap_or_default()),
        ),
        Some(c) if c.kind == "header" => {
            (c.name.clone().unwrap_or_default(), credential.to_owned())
        }
        _ => ("authorization".to_owned(), format!("Bearer {credential}")),
    })
}

/// What the page's script puts in the query of `/api/explorer/stream`: the call, as JSON.
#[derive(Debug, serde::Deserialize)]
pub(super) struct StreamQuery {
    call: String,
}

/// Opens a stream of the app for the page: a WebSocket from the page to the dashboard, one
/// from the dashboard to the app (signed for a private stream, with the typed credential
/// otherwise), and every message relayed both ways until either side closes. The guard has
/// checked the page's origin and token (a WebSocket is a `GET` no browser protects).
pub(super) async fn stream(
    State(d): State<Dashboard>,
    Query(q): Query<StreamQuery>,
    upgrade: axum::extract::ws::WebSocketUpgrade,
) -> Response {
    let call: CallRequest = match serde_json::from_str(&q.call) {
        Ok(call) => call,
        Err(e) => return ovation::Error::invalid_argument(e.to_string()).into_response(),
    };
    let status = current(&d.status);
    let Some(model) = app_model(&d, &status.url).await else {
        return ovation::Error::unavailable("the app does not answer").into_response();
    };
    let Some(e) = model
        .endpoints
        .iter()
        .find(|e| e.service == call.service && e.name == call.endpoint && e.kind.is_stream())
    else {
        return ovation::Error::not_found(format!("no stream {}.{}", call.service, call.endpoint))
            .into_response();
    };
    let mut url = match call_url(&status.url, e, &call) {
        Ok(url) => url,
        Err(message) => return ovation::Error::invalid_argument(message).into_response(),
    };
    let mut request =
        match tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request({
            let _ = url.set_scheme("ws");
            url.as_str()
        }) {
            Ok(request) => request,
            Err(e) => return ovation::Error::invalid_argument(e.to_string()).into_response(),
        };
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let span_id = format!("{:016x}", rand::random::<u64>() | 1);
    let headers = request.headers_mut();
    if let Ok(value) = format!("00-{trace_id}-{span_id}-01").parse() {
        headers.insert("traceparent", value);
    }
    if let Some((name, value)) =
        credential_header(e, model.auth.as_ref(), call.credential.as_deref())
        && let (Ok(name), Ok(value)) = (
            reqwest::header::HeaderName::try_from(name),
            reqwest::header::HeaderValue::try_from(value),
        )
    {
        headers.insert(name, value);
    }
    if e.access == Access::Private {
        let signed = ovation::tooling::Signed {
            method: "GET",
            path: url.path(),
            query: url.query().unwrap_or(""),
            body: b"",
        };
        if let Ok(value) = d.key.sign(signed, "dashboard").parse() {
            headers.insert(ovation::tooling::HEADER, value);
        }
    }
    let app = match tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(request),
    )
    .await
    {
        Ok(Ok((app, _))) => app,
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(response))) => {
            // The app refused the handshake: the page learns why, as from any call.
            let status = response.status();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default()
                .into_owned();
            return (status, body).into_response();
        }
        Ok(Err(e)) => {
            return ovation::Error::unavailable(format!("the app did not open the stream: {e}"))
                .into_response();
        }
        Err(_) => {
            return ovation::Error::unavailable("the app did not open the stream in time")
                .into_response();
        }
    };
    upgrade.on_upgrade(move |page| relay(page, app, trace_id))
}

/// Relays messages between the page and the app until one side closes; the page first gets
/// the stream's trace id.
async fn relay(
    mut page: axum::extract::ws::WebSocket,
    app: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    trace_id: String,
) {
    use axum::extract::ws::{CloseFrame, Message as PageMessage};
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message as AppMessage;
    let hello = json!({"opened": true, "traceId": trace_id}).to_string();
    if page.send(PageMessage::Text(hello.into())).await.is_err() {
        return;
    }
    let (mut to_app, mut from_app) = app.split();
    loop {
        tokio::select! {
            message = page.recv() => match message {
                Some(Ok(PageMessage::Text(text))) => {
                    if to_app.send(AppMessage::text(text.as_str())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(PageMessage::Close(frame))) => {
                    // The page closed: its close is answered (so it sees its own code), and the
                    // app's stream closed normally.
                    let _ = frame;
                    let _ = to_app.send(AppMessage::Close(None)).await;
                    // The reply tungstenite queued goes out with the flush.
                    let _ = SinkExt::flush(&mut page).await;
                    let _ = SinkExt::close(&mut page).await;
                    break;
                }
                None | Some(Err(_)) => {
                    let _ = to_app.send(AppMessage::Close(None)).await;
                    break;
                }
                Some(Ok(_)) => {}
            },
            message = from_app.next() => match message {
                Some(Ok(AppMessage::Text(text))) => {
                    if page.send(PageMessage::Text(text.as_str().into())).await.is_err() {
                        let _ = to_app.send(AppMessage::Close(None)).await;
                        break;
                    }
                }
                Some(Ok(AppMessage::Close(frame))) => {
                    let frame = frame.map(|f| CloseFrame {
                        code: u16::from(f.code),
                        reason: f.reason.as_str().into(),
                    });
                    let _ = page.send(PageMessage::Close(frame)).await;
                    break;
                }
                None | Some(Err(_)) => {
                    let _ = page
                        .send(PageMessage::Close(Some(CloseFrame {
                            code: 1011,
                            reason: "the app's stream was cut off".into(),
                        })))
                        .await;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ExplorerQuery {
    endpoint: Option<String>,
}

pub(super) async fn page(State(d): State<Dashboard>, Query(q): Query<ExplorerQuery>) -> Response {
    let status = current(&d.status);
    let Some(model) = app_model(&d, &status.url).await else {
        return not_running(&d, &status, "API explorer", "explorer");
    };
    let body = render(&model.endpoints, model.auth.as_ref(), q.endpoint.as_deref());
    shell(&d, "API explorer", "explorer", &status, &body).into_response()
}

pub(super) async fn call(
    State(d): State<Dashboard>,
    call: Result<axum::Json<CallRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let status = current(&d.status);
    let axum::Json(call) = match call {
        Ok(c) => c,
        Err(e) => return ovation::Error::invalid_argument(e.body_text()).into_response(),
    };
    let Some(model) = app_model(&d, &status.url).await else {
        return ovation::Error::unavailable("the app does not answer").into_response();
    };
    match send(&d.http, &status.url, &d.key, &model, call).await {
        Ok(answer) => axum::Json(answer).into_response(),
        Err(e) => ovation::Error::unavailable(e).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_follow_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "userId": {"type": "string", "format": "uuid"},
                "quantity": {"type": "integer"},
                "note": {"type": ["string", "null"]},
                "item": {"$ref": "#/$defs/Item"}
            },
            "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}}}
        });
        let defs = schema["$defs"].clone();
        assert_eq!(
            example(&schema, &defs, 0),
            json!({"userId": "00000000-0000-0000-0000-000000000000", "quantity": 0, "note": "", "item": {"sku": ""}})
        );
    }
}
