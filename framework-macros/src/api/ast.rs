//! The endpoint model, built from the attribute and the function, with every check a user
//! can fail reported at the offending token.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, Ident, ItemFn, LitStr, Pat, PathArguments, ReturnType, Type};

use crate::attr::{Access, ApiAttr, KEYS, Kind};
use crate::errors::Errors;

pub(crate) const METHODS: [&str; 6] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"];

pub(crate) struct PathParam {
    pub name: String,
    pub ty: Type,
}

pub(crate) enum ArgKind {
    /// Index into `Endpoint::path_params`.
    Path(usize),
    Request,
    /// A stream endpoint's `StreamIn`/`StreamOut`/`StreamInOut`.
    Stream,
}

pub(crate) struct Arg {
    pub ident: Ident,
    pub ty: Type,
    pub kind: ArgKind,
}

pub(crate) struct Endpoint<'a> {
    pub func: &'a ItemFn,
    pub access: Access,
    /// Upper-case method name.
    pub method: String,
    pub path: LitStr,
    /// In path order.
    pub path_params: Vec<PathParam>,
    pub args: Vec<Arg>,
    pub request: Option<Type>,
    pub response: Type,
    pub tags: Vec<LitStr>,
    /// `Kind::Typed` or `Kind::Stream` (raw endpoints are a [`RawEndpoint`]).
    pub kind: Kind,
    /// A stream endpoint's stream type.
    pub stream: Option<Type>,
}

/// A raw endpoint (`#[api(raw)]`): the function takes axum extractors, returns a response.
pub(crate) struct RawEndpoint<'a> {
    pub func: &'a ItemFn,
    pub access: Access,
    pub method: String,
    pub path: LitStr,
    pub path_names: Vec<String>,
    pub tags: Vec<LitStr>,
}

impl<'a> RawEndpoint<'a> {
    pub(crate) fn build(
        attr: ApiAttr,
        func: &'a ItemFn,
        errors: &mut Errors,
    ) -> Option<RawEndpoint<'a>> {
        let sig = &func.sig;
        if sig.asyncness.is_none() {
            errors.at(
                sig.fn_token,
                "`#[api(raw)]` functions must be `async`: write `async fn`",
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.at(&sig.generics, "`#[api(raw)]` functions cannot be generic");
        }
        if let Some(FnArg::Receiver(r)) = sig.inputs.first() {
            errors.at(r, "`#[api]` functions are free functions: remove `self`");
        }
        if matches!(sig.output, ReturnType::Default) {
            errors.at(&sig.ident, "missing return type: a raw endpoint returns anything that implements axum's `IntoResponse` (e.g. `Response`, `StatusCode`, `Result<T, ovation::Error>`)");
        }
        let method = method(&attr, errors);
        let path_names = path(&attr, errors);
        Some(RawEndpoint {
            func,
            access: attr.access.0,
            method: method?,
            path: attr.path?,
            path_names: path_names?,
            tags: attr.tags,
        })
    }
}

/// The upper-case method of the attribute, checked.
fn method(attr: &ApiAttr, errors: &mut Errors) -> Option<String> {
    match &attr.method {
        None => {
            errors.at_span(Span::call_site(), format_args!("missing `method`: `#[api]` takes {KEYS}, e.g. #[api(public, method = \"GET\", path = \"/users/:id\")]"));
            None
        }
        Some(lit) => {
            let m = lit.value().to_ascii_uppercase();
            if METHODS.contains(&m.as_str()) {
                Some(m)
            } else {
                errors.at(
                    lit,
                    format_args!(
                        "unknown method {:?}; use one of {}",
                        lit.value(),
                        METHODS.join(", ")
                    ),
                );
                None
            }
        }
    }
}

/// The path's parameter names, checked.
fn path(attr: &ApiAttr, errors: &mut Errors) -> Option<Vec<String>> {
    match &attr.path {
        None => {
            errors.at_span(
                Span::call_site(),
                "missing `path`: e.g. path = \"/users/:id\"",
            );
            None
        }
        Some(lit) => parse_path(lit, errors),
    }
}

/// The stream type a parameter of this type is, if it is one (by its name).
fn stream_type(ty: &Type) -> bool {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().is_some_and(|s| {
            matches!(
                s.ident.to_string().as_str(),
                "StreamIn" | "StreamOut" | "StreamInOut"
            )
        }),
        _ => false,
    }
}

impl<'a> Endpoint<'a> {
    pub(crate) fn build(
        attr: ApiAttr,
        func: &'a ItemFn,
        errors: &mut Errors,
    ) -> Option<Endpoint<'a>> {
        let sig = &func.sig;
        if sig.asyncness.is_none() {
            errors.at(
                sig.fn_token,
                "`#[api]` functions must be `async`: write `async fn`",
            );
        }
        if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
            errors.at(&sig.generics, "`#[api]` functions cannot be generic: an endpoint has one request and one response type");
        }
        let stream = attr.kind.0 == Kind::Stream;
        let method = if stream {
            match &attr.method {
                Some(lit) if !lit.value().eq_ignore_ascii_case("GET") => {
                    errors.at(
                        lit,
                        "a stream is opened with a WebSocket handshake, a `GET`: remove `method`",
                    );
                    None
                }
                _ => Some("GET".to_owned()),
            }
        } else {
            method(&attr, errors)
        };
        let path_names = path(&attr, errors);
        let response = result_ok_type(
            &sig.output,
            &sig.ident,
            "`#[api]` functions return `Result<T, ovation::Error>` (T may be `()`)",
            errors,
        );

        let tags = attr.tags.clone();
        // Bind parameters: path parameters by name, the one left over is the request.
        let mut args = Vec::new();
        let mut path_types: Vec<Option<Type>> = vec![None; path_names.as_ref().map_or(0, Vec::len)];
        let mut request: Option<(Ident, Type)> = None;
        let mut stream_ty: Option<Type> = None;
        for input in &sig.inputs {
            let typed = match input {
                FnArg::Receiver(r) => {
                    errors.at(r, "`#[api]` functions are free functions: remove `self`");
                    continue;
                }
                FnArg::Typed(t) => t,
            };
            let ident = match &*typed.pat {
                Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => p.ident.clone(),
                other => {
                    errors.at(
                        other,
                        "`#[api]` parameters must be plain names (`id: Uuid`), not patterns",
                    );
                    continue;
                }
            };
            if let Type::Reference(r) = &*typed.ty {
                errors.at(r, format_args!("parameter `{ident}` cannot be borrowed: endpoints take owned values (e.g. `String`, not `&str`)"));
                continue;
            }
            let name = ident.to_string();
            let name = name.strip_prefix("r#").unwrap_or(&name);
            if stream && stream_type(&typed.ty) {
                if stream_ty.is_some() {
                    errors.at(&typed.ty, "a stream endpoint takes one stream");
                    continue;
                }
                stream_ty = Some((*typed.ty).clone());
                args.push(Arg {
                    ident,
                    ty: (*typed.ty).clone(),
                    kind: ArgKind::Stream,
                });
                continue;
            }
            let path_index = path_names
                .as_ref()
                .and_then(|names| names.iter().position(|n| n == name));
            match path_index {
                Some(i) => {
                    path_types[i] = Some((*typed.ty).clone());
                    args.push(Arg {
                        ident,
                        ty: (*typed.ty).clone(),
                        kind: ArgKind::Path(i),
                    });
                }
                None => {
                    if let Some((first, _)) = &request {
                        let where_ = path_names
                            .as_ref()
                            .map(|n| {
                                if n.is_empty() {
                                    "the path has no parameters".to_owned()
                                } else {
                                    format!(
                                        "the path parameters are {}",
                                        n.iter()
                                            .map(|n| format!("`{n}`"))
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    )
                                }
                            })
                            .unwrap_or_default();
                        errors.at(&typed.pat, format_args!(
                            "parameter `{ident}` is neither a path parameter nor the request: `{first}` is the request already, and an endpoint has one ({where_})"
                        ));
                        continue;
                    }
                    request = Some((ident.clone(), (*typed.ty).clone()));
                    args.push(Arg {
                        ident,
                        ty: (*typed.ty).clone(),
                        kind: ArgKind::Request,
                    });
                }
            }
        }
        if let (Some(names), Some(lit)) = (&path_names, &attr.path) {
            for (name, ty) in names.iter().zip(&path_types) {
                if ty.is_none() {
                    errors.at(
                        lit,
                        format_args!(
                            "path parameter `:{name}` has no function parameter named `{name}`"
                        ),
                    );
                }
            }
        }
        if stream && stream_ty.is_none() {
            errors.at(&sig.ident, "a stream endpoint takes its stream: a parameter of type `StreamIn<T>` (the client sends), `StreamOut<T>` (the server sends) or `StreamInOut<In, Out>` (both), from `ovation::stream`");
        }
        if let (true, Some(response)) = (stream, &response)
            && !matches!(response, Type::Tuple(t) if t.elems.is_empty())
        {
            errors.at(response, "a stream endpoint returns `Result<(), ovation::Error>`: it answers with its stream's messages");
        }
        let (method, path, path_names, response) = (method?, attr.path?, path_names?, response?);
        let path_params = path_names
            .into_iter()
            .zip(path_types)
            .map(|(name, ty)| Some(PathParam { name, ty: ty? }))
            .collect::<Option<Vec<_>>>()?;
        Some(Endpoint {
            func,
            access: attr.access.0,
            method,
            path,
            path_params,
            args,
            request: request.map(|(_, ty)| ty),
            response,
            tags,
            kind: attr.kind.0,
            stream: stream_ty,
        })
    }
}

/// The names of the path's parameters, in order; reports a malformed path.
fn parse_path(lit: &LitStr, errors: &mut Errors) -> Option<Vec<String>> {
    let path = lit.value();
    if !path.starts_with('/') {
        errors.at(
            lit,
            format_args!("the path must start with `/`: \"/{path}\""),
        );
        return None;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut names: Vec<String> = Vec::new();
    let mut ok = true;
    for (i, segment) in segments.iter().enumerate() {
        let (name, wildcard) = match (segment.strip_prefix(':'), segment.strip_prefix('*')) {
            (Some(n), _) => (n, false),
            (_, Some(n)) => (n, true),
            _ => {
                if segment.contains([':', '*', '{', '}', '?', '#']) {
                    errors.at(lit, format_args!("path segment `{segment}` is not valid: parameters take a whole segment (`/:id`, `/*rest`), and `{{ }} ? #` are not allowed"));
                    ok = false;
                }
                continue;
            }
        };
        if syn::parse_str::<Ident>(name).is_err() {
            errors.at(
                lit,
                format_args!(
                    "path parameter `{segment}` needs a name that is a Rust identifier, e.g. `:id`"
                ),
            );
            ok = false;
        } else if names.iter().any(|n| n == name) {
            errors.at(
                lit,
                format_args!("path parameter `{name}` appears twice in the path"),
            );
            ok = false;
        } else {
            names.push(name.to_owned());
        }
        if wildcard && i + 1 != segments.len() {
            errors.at(
                lit,
                format_args!("the wildcard `*{name}` must be the last segment of the path"),
            );
            ok = false;
        }
    }
    ok.then_some(names)
}

/// `T` of `Result<T, ovation::Error>`; reports any other return type.
/// The `T` of a function returning `Result<T, ovation::Error>`; otherwise an error ending with `hint`.
pub(crate) fn result_ok_type(
    output: &ReturnType,
    name: &Ident,
    hint: &str,
    errors: &mut Errors,
) -> Option<Type> {
    let ty = match output {
        ReturnType::Default => {
            errors.at(name, format_args!("missing return type: {hint}"));
            return None;
        }
        ReturnType::Type(_, ty) => ty,
    };
    let found = match &**ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last().and_then(|last| {
            if last.ident != "Result" {
                return None;
            }
            let PathArguments::AngleBracketed(args) = &last.arguments else {
                return None;
            };
            let types: Vec<&Type> = args
                .args
                .iter()
                .filter_map(|a| {
                    if let GenericArgument::Type(t) = a {
                        Some(t)
                    } else {
                        None
                    }
                })
                .collect();
            let ovation_alias = p.path.segments.len() >= 2
                && p.path.segments[p.path.segments.len() - 2].ident == "ovation";
            match types.as_slice() {
                [t] if ovation_alias => Some((*t).clone()),
                [t, Type::Path(e)]
                    if e.path.segments.last().is_some_and(|s| s.ident == "Error") =>
                {
                    Some((*t).clone())
                }
                _ => None,
            }
        }),
        _ => None,
    };
    if found.is_none() {
        errors.push(syn::Error::new(
            ty.span(),
            format!("unsupported return type: {hint}"),
        ));
    }
    found
}
