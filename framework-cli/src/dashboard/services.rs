//! The Services page: each service's endpoints with their access and request/response schemas
//! as type trees, databases, topics and subscriptions, from the app's model.

use std::fmt::Write as _;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use ovation::EndpointKind;
use ovation::tooling::AppModel;
use serde_json::Value;

use super::html::{esc, shell, sparkline};
use super::{Dashboard, app_model, current};
use crate::traces::metrics::Activity;

pub(super) async fn page(State(d): State<Dashboard>) -> Response {
    let status = current(&d.status);
    let Some(model) = app_model(&d, &status.url).await else {
        let body = format!(
            "<h1>Services</h1><p class=\"notice\">The app at <code>{}</code> does not answer \
             yet; this page fills in once it runs.</p>",
            esc(&status.url)
        );
        return shell(&d, "Services", "services", &status, &body).into_response();
    };
    let activity = d.store.activity.list(std::time::SystemTime::now());
    shell(
        &d,
        "Services",
        "services",
        &status,
        &render_services(&model, &activity),
    )
    .into_response()
}

/// The Services page's body from the app model, with each endpoint's and subscription's
/// recent `activity`.
pub(super) fn render_services(model: &AppModel, activity: &[Activity]) -> String {
    let find = |kind: &str, scope: &str, name: &str| {
        activity
            .iter()
            .find(|a| a.kind == kind && a.scope == scope && a.name == name)
    };
    let mut out = String::from("<h1>Services</h1><div class=\"cards\">");
    for name in &model.services {
        let name = name.as_str();
        let _ = write!(
            out,
            "<section class=\"card\" id=\"service-{id}\"><h2>{name}</h2>",
            id = esc(name),
            name = esc(name)
        );
        let mine: Vec<_> = model
            .endpoints
            .iter()
            .filter(|e| e.service == name)
            .collect();
        if !mine.is_empty() {
            out.push_str("<h3>Endpoints</h3><ul class=\"endpoints\">");
            for e in &mine {
                let access = e.access.as_str();
                let tree = |schema: Option<&Value>| schema_tree(schema.unwrap_or(&Value::Null));
                let (kind, schemas) = match e.kind {
                    EndpointKind::Typed => (
                        String::new(),
                        format!(
                            "<div><h4>Request</h4>{}</div><div><h4>Response</h4>{}</div>",
                            tree(e.request_schema.as_ref()),
                            tree(e.response_schema.as_ref())
                        ),
                    ),
                    EndpointKind::Static => (
                        " <span class=\"badge kind\">static</span>".to_owned(),
                        "<div><p class=\"muted\">Files embedded at build time \
                         (<code>static_files!</code>).</p></div>"
                            .to_owned(),
                    ),
                    EndpointKind::Raw => (
                        " <span class=\"badge kind\">raw</span>".to_owned(),
                        "<div><p class=\"muted\">Raw HTTP: the endpoint reads the request and \
                         writes the response itself.</p></div>"
                            .to_owned(),
                    ),
                    kind => (
                        format!(" <span class=\"badge kind\">{}</span>", kind.as_str()),
                        format!(
                            "<div><h4>Handshake</h4>{}</div><div><h4>Client sends</h4>{}</div>\
                             <div><h4>Server sends</h4>{}</div>",
                            tree(e.request_schema.as_ref()),
                            tree(e.incoming_schema.as_ref()),
                            tree(e.response_schema.as_ref())
                        ),
                    ),
                };
                let _ = write!(
                    out,
                    "<li data-endpoint=\"{service}.{name}\"><details><summary>\
                     <span class=\"method\">{method}</span> \
                     <code>{path}</code> <span class=\"badge {access}\">{access}</span>{kind} \
                     <span class=\"muted\">{name}</span>{spark}</summary>\
                     <div class=\"schemas\">{schemas}</div></details></li>",
                    method = if e.kind.is_stream() {
                        "WS"
                    } else {
                        e.method.as_str()
                    },
                    path = esc(&e.path),
                    access = access,
                    name = esc(&e.name),
                    service = esc(name),
                    spark = sparkline(find("request", name, &e.name), "requests"),
                );
            }
            out.push_str("</ul>");
        }
        let line = |title: &str, items: Vec<String>| {
            if items.is_empty() {
                String::new()
            } else {
                format!(
                    "<h3>{title}</h3><ul class=\"plain\">{}</ul>",
                    items.concat()
                )
            }
        };
        out.push_str(&line(
            "Databases",
            model
                .databases
                .iter()
                .filter(|d| d.service == name)
                .map(|d| {
                    format!(
                        "<li><code>{}</code> <span class=\"muted\">{} migrations</span></li>",
                        esc(&d.name),
                        d.migrations.len()
                    )
                })
                .collect(),
        ));
        out.push_str(&line(
            "Publishes to",
            model
                .topics
                .iter()
                .filter(|t| t.service == name)
                .map(|t| format!("<li><code>{}</code></li>", esc(&t.name)))
                .collect(),
        ));
        out.push_str(&line(
            "Subscriptions",
            model
                .subscriptions
                .iter()
                .filter(|s| s.service == name)
                .map(|s| {
                    format!(
                        "<li id=\"subscription-{}\"><code>{}</code> on <code>{}</code>{}</li>",
                        esc(&s.name),
                        esc(&s.name),
                        esc(&s.topic),
                        sparkline(find("delivery", &s.topic, &s.name), "deliveries")
                    )
                })
                .collect(),
        ));
        out.push_str("</section>");
    }
    out.push_str("</div>");
    out
}

/// A JSON Schema as a readable tree: fields with their types, required ones marked.
pub(super) fn schema_tree(schema: &Value) -> String {
    if schema.is_null() {
        return "<p class=\"muted\">none</p>".into();
    }
    let defs = schema
        .get("$defs")
        .or_else(|| schema.get("definitions"))
        .cloned()
        .unwrap_or(Value::Null);
    let mut out = String::new();
    render_schema(&mut out, schema, &defs, 0);
    out
}

fn resolve<'a>(schema: &'a Value, defs: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().unwrap_or_default();
            defs.get(name).unwrap_or(schema)
        }
        None => schema,
    }
}

fn type_name(schema: &Value, defs: &Value) -> String {
    if let Some(r) = schema["$ref"].as_str() {
        return r.rsplit('/').next().unwrap_or("object").to_owned();
    }
    let s = resolve(schema, defs);
    let base = match &s["type"] {
        Value::String(t) => t.clone(),
        Value::Array(ts) => ts
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" | "),
        _ if s.get("enum").is_some() => "enum".into(),
        _ if s.get("anyOf").is_some() || s.get("oneOf").is_some() => "one of".into(),
        _ => "any".into(),
    };
    match (base.as_str(), s["format"].as_str()) {
        ("array", _) => format!("{}[]", type_name(&s["items"], defs)),
        (_, Some(format)) => format!("{base} ({format})"),
        _ => base,
    }
}

fn render_schema(out: &mut String, schema: &Value, defs: &Value, depth: usize) {
    let s = resolve(schema, defs);
    let s = if s["type"] == "array" {
        resolve(&s["items"], defs)
    } else {
        s
    };
    let Some(properties) = s["properties"].as_object() else {
        let _ = write!(
            out,
            "<code class=\"type\">{}</code>",
            esc(&type_name(schema, defs))
        );
        return;
    };
    let required: Vec<&str> = s["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("<ul class=\"tree\">");
    for (field, field_schema) in properties {
        let _ = write!(
            out,
            "<li><code>{}</code>{} <span class=\"type\">{}</span>",
            esc(field),
            if required.contains(&field.as_str()) {
                ""
            } else {
                "<span class=\"muted\">?</span>"
            },
            esc(&type_name(field_schema, defs))
        );
        let inner = resolve(field_schema, defs);
        let inner = if inner["type"] == "array" {
            resolve(&inner["items"], defs)
        } else {
            inner
        };
        if depth < 4 && inner["properties"].is_object() {
            render_schema(out, field_schema, defs, depth + 1);
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_render_as_field_trees() {
        let schema = json!({
            "type": "object",
            "properties": {
                "userId": {"type": "string", "format": "uuid"},
                "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
                "note": {"type": ["string", "null"]}
            },
            "required": ["userId", "items"],
            "$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}}, "required": ["sku"]}}
        });
        let html = schema_tree(&schema);
        assert!(
            html.contains("<code>userId</code> <span class=\"type\">string (uuid)</span>"),
            "{html}"
        );
        assert!(html.contains("Item[]"), "{html}");
        assert!(
            html.contains("<code>sku</code>"),
            "nested fields are shown: {html}"
        );
        assert!(
            html.contains("<code>note</code><span class=\"muted\">?</span>"),
            "{html}"
        );
    }
}
