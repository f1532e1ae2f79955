//! OpenAPI 3.1 of the app's public API, from the registered endpoints and their schemas.
//!
//! Every `public` and `auth` endpoint is an operation (`operationId` = `service.name`, tagged
//! with its service); private endpoints are left out, as they are unreachable from outside.
//! A path parameter has its type's schema, or is a string when the type has none (it only has
//! to parse from one); the request of a
//! `GET`/`DELETE`/`HEAD` endpoint is one query parameter per field, of any other method the
//! JSON body. Schemas are JSON Schema 2020-12 (what schemars generates, and what OpenAPI 3.1
//! uses); named types go to `components/schemas`, renamed `Name2`, `Name3`, ... when two
//! different types share a name. Every operation answers `200` with its response (`204` with
//! no body for a function returning `()`), and any other status with the
//! [`Error`](crate::Error) body.
//!
//! A raw endpoint is an operation with its path and method only: its body and answers are its
//! own, so they are left undescribed. A stream is left out: OpenAPI has no way to say
//! "WebSocket" (the app model and the dashboard list streams with their message schemas); so are
//! static files, which are no API.
//!
//! Served at `/__ovation/openapi.json`; `ovation gen openapi` prints it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::ErrCode;
use crate::registry::{self, Access, Method};

/// The OpenAPI document of the app's public endpoints.
pub(crate) fn spec() -> Value {
    let mut components = Components::default();
    let schemes = security_schemes();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut title = None;
    for e in registry::endpoints() {
        let info = e.info();
        if info.access == Access::Private
            || info.kind.is_stream()
            || info.kind == registry::EndpointKind::Static
        {
            continue;
        }
        title.get_or_insert_with(|| info.module.split("::").next().unwrap_or("app").to_owned());
        let mut op = Map::new();
        op.insert(
            "operationId".into(),
            json!(format!("{}.{}", info.service, info.name)),
        );
        op.insert("tags".into(), json!([info.service]));
        let param_schemas = e.path_param_schemas();
        let mut parameters: Vec<Value> = info
            .path_params
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let schema = match param_schemas.get(i) {
                    Some(Some(schema)) => components.adopt(schema.clone().to_value()),
                    _ => json!({ "type": "string", "minLength": 1 }),
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        if let Some(schema) = e.request_schema() {
            let schema = components.adopt(schema.to_value());
            if matches!(info.method, Method::Get | Method::Delete | Method::Head) {
                parameters.extend(query_parameters(&schema, &components));
            } else {
                op.insert(
                    "requestBody".into(),
                    json!({
                        "required": true,
                        "content": { "application/json": { "schema": schema } },
                    }),
                );
            }
        }
        if !parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(parameters));
        }
        if info.access == Access::Auth {
            op.insert(
                "description".into(),
                json!("Needs an authenticated caller: `401 unauthenticated` otherwise."),
            );
            // Any one of the handler's credentials will do.
            let any_of: Vec<Value> = schemes
                .keys()
                .map(|name| json!({ name.as_str(): [] }))
                .collect();
            op.insert("security".into(), Value::Array(any_of));
        } else if info.access == Access::Public && !schemes.is_empty() {
            // Credentials are optional: the endpoint may read the auth data when present.
            let mut optional: Vec<Value> = vec![json!({})];
            optional.extend(schemes.keys().map(|name| json!({ name.as_str(): [] })));
            op.insert("security".into(), Value::Array(optional));
        }
        if info.kind == registry::EndpointKind::Raw {
            op.insert(
                "description".into(),
                json!("A raw endpoint: it reads the request and writes the response itself."),
            );
            op.insert(
                "responses".into(),
                json!({ "default": { "description": "The endpoint's own answer" } }),
            );
            paths
                .entry(openapi_path(info.path))
                .or_default()
                .insert(info.method.as_str().to_ascii_lowercase(), Value::Object(op));
            continue;
        }
        let success = if info.no_content {
            ("204", json!({ "description": "Success, no content" }))
        } else {
            let response = components.adopt(
                e.response_schema()
                    .map_or(Value::Bool(true), schemars::Schema::to_value),
            );
            (
                "200",
                json!({
                    "description": "Success",
                    "content": { "application/json": { "schema": response } },
                }),
            )
        };
        op.insert(
            "responses".into(),
            json!({
                success.0: success.1,
                "default": {
                    "description": "An error: the status follows from its code",
                    "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Error" },
                    } },
                },
            }),
        );
        let path = openapi_path(info.path);
        paths
            .entry(path)
            .or_default()
            .insert(info.method.as_str().to_ascii_lowercase(), Value::Object(op));
    }
    components.schemas.insert("Error".into(), error_schema());
    json!({
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": title.unwrap_or_else(|| "app".into()),
            "version": "unversioned",
            "description": "The app's public API, generated by Ovation from its endpoints.",
        },
        "paths": paths,
        "components": { "schemas": components.schemas, "securitySchemes": schemes },
    })
}

/// The OpenAPI security schemes of the app's auth handler's credentials, by name.
fn security_schemes() -> serde_json::Map<String, Value> {
    use crate::auth::Credential;
    let mut schemes = serde_json::Map::new();
    for c in crate::auth::handler().map_or(&[][..], |h| h.credentials) {
        let (name, scheme) = match c {
            Credential::Bearer => (
                "bearer".to_owned(),
                json!({ "type": "http", "scheme": "bearer" }),
            ),
            Credential::Cookie(n) => (
                format!("cookie_{n}"),
                json!({ "type": "apiKey", "in": "cookie", "name": n }),
            ),
            Credential::Header(n) => (
                format!("header_{n}"),
                json!({ "type": "apiKey", "in": "header", "name": n }),
            ),
        };
        schemes.insert(name, scheme);
    }
    schemes
}

/// `/users/:id` → `/users/{id}`, `/files/*rest` → `/files/{rest}`.
fn openapi_path(path: &str) -> String {
    path.split('/')
        .map(
            |s| match s.strip_prefix(':').or_else(|| s.strip_prefix('*')) {
                Some(name) => format!("{{{name}}}"),
                None => s.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// One `in: query` parameter per property of an object schema.
fn query_parameters(schema: &Value, components: &Components) -> Vec<Value> {
    let schema = components.resolve(schema);
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, s)| {
                    json!({
                        "name": name,
                        "in": "query",
                        "required": required.contains(&name.as_str()),
                        "schema": s,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn error_schema() -> Value {
    let codes: Vec<&str> = ErrCode::ALL.iter().map(|c| c.as_str()).collect();
    json!({
        "type": "object",
        "required": ["code", "message"],
        "properties": {
            "code": { "type": "string", "enum": codes },
            "message": { "type": "string" },
            "details": {},
        },
    })
}

#[derive(Default)]
struct Components {
    schemas: BTreeMap<String, Value>,
}

impl Components {
    /// Moves the `$defs` of a generated root schema into the components (renaming on
    /// clashes), points its `$ref`s there, and returns the root without `$schema`/`$defs`.
    fn adopt(&mut self, mut root: Value) -> Value {
        let Some(obj) = root.as_object_mut() else {
            return root;
        };
        obj.remove("$schema");
        let defs = match obj.remove("$defs") {
            Some(Value::Object(defs)) => defs,
            _ => Map::new(),
        };
        // Names first, so that definitions referring to each other are rewritten alike.
        let mut names = BTreeMap::new();
        for (name, def) in &defs {
            let mut candidate = name.clone();
            let mut n = 1;
            loop {
                match self.schemas.get(&candidate) {
                    Some(existing) if *existing == renamed(def, &names, name, &candidate) => break,
                    None => break,
                    Some(_) => {
                        n += 1;
                        candidate = format!("{name}{n}");
                    }
                }
            }
            names.insert(name.clone(), candidate);
        }
        for (name, mut def) in defs {
            rewrite_refs(&mut def, &names);
            self.schemas.insert(names[&name].clone(), def);
        }
        rewrite_refs(&mut root, &names);
        root
    }

    /// `schema`, or the component it refers to.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        schema["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix("#/components/schemas/"))
            .and_then(|name| self.schemas.get(name))
            .unwrap_or(schema)
    }
}

/// `def` as it would be stored under `candidate` (its refs rewritten with the names so far).
fn renamed(def: &Value, names: &BTreeMap<String, String>, name: &str, candidate: &str) -> Value {
    let mut names = names.clone();
    names.insert(name.to_owned(), candidate.to_owned());
    let mut def = def.clone();
    rewrite_refs(&mut def, &names);
    def
}

fn rewrite_refs(value: &mut Value, names: &BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                let target = names.get(name).map_or(name, String::as_str);
                *r = format!("#/components/schemas/{target}");
            }
            for v in map.values_mut() {
                rewrite_refs(v, names);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rewrite_refs(v, names)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_become_openapi_templates() {
        assert_eq!(openapi_path("/users/:id"), "/users/{id}");
        assert_eq!(openapi_path("/files/:b/*key"), "/files/{b}/{key}");
        assert_eq!(openapi_path("/"), "/");
    }

    #[test]
    fn clashing_definitions_are_renamed_and_identical_ones_shared() {
        let mut c = Components::default();
        let a = json!({
            "$schema": "x",
            "$ref": "#/$defs/Item",
            "$defs": { "Item": { "type": "string" } },
        });
        let b = json!({
            "type": "array",
            "items": { "$ref": "#/$defs/Item" },
            "$defs": { "Item": { "type": "integer" } },
        });
        assert_eq!(
            c.adopt(a.clone()),
            json!({ "$ref": "#/components/schemas/Item" })
        );
        assert_eq!(
            c.adopt(b),
            json!({ "type": "array", "items": { "$ref": "#/components/schemas/Item2" } })
        );
        assert_eq!(c.adopt(a), json!({ "$ref": "#/components/schemas/Item" }));
        assert_eq!(c.schemas.len(), 2);
        assert_eq!(c.schemas["Item2"], json!({ "type": "integer" }));
    }
}
