//! `#[ovation::middleware(target = all | tags("a", ...))]`: registers an async fn
//! `(req: middleware::Request, next: middleware::Next) -> Result<middleware::Response, Error>`.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{FnArg, LitStr};

use crate::attr;
use crate::errors::Errors;

const SIGNATURE: &str = "a middleware is `async fn(req: ovation::middleware::Request, next: \
    ovation::middleware::Next) -> Result<ovation::middleware::Response, ovation::Error>`";

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    // The attribute's mistakes first, as they read.
    let target = target(attr, &mut errors);
    let Some(func) = attr::async_fn(&item, "middleware", "a middleware", &mut errors) else {
        return errors.into_output(item);
    };
    let sig = &func.sig;
    let inputs: Vec<&FnArg> = sig.inputs.iter().collect();
    let named = |arg: &FnArg, wanted: &str| match arg {
        FnArg::Typed(t) => {
            matches!(&*t.ty, syn::Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == wanted))
        }
        FnArg::Receiver(_) => false,
    };
    match inputs.as_slice() {
        [req, next] if named(req, "Request") && named(next, "Next") => {}
        _ => errors.at_span(
            if sig.inputs.is_empty() {
                sig.ident.span()
            } else {
                syn::spanned::Spanned::span(&sig.inputs)
            },
            format_args!("wrong parameters: {SIGNATURE}"),
        ),
    }
    if matches!(sig.output, syn::ReturnType::Default) {
        errors.at(&sig.ident, format_args!("missing return type: {SIGNATURE}"));
    }
    let Some(target) = target.filter(|_| errors.is_empty()) else {
        return errors.into_output(item);
    };

    let p = quote!(::ovation::__private);
    let name = &sig.ident;
    let name_str = LitStr::new(&name.to_string(), name.span());
    quote! {
        #func

        const _: () = {
            fn __ovation_run(
                req: ::ovation::middleware::Request,
                next: ::ovation::middleware::Next,
            ) -> #p::MiddlewareFuture {
                // The return type is checked here: a mismatch names the middleware's signature.
                let fut: #p::Pin<#p::Box<dyn #p::Future<Output = #p::Result<::ovation::middleware::Response, #p::Error>> + ::core::marker::Send>> =
                    #p::Box::pin(#name(req, next));
                fut
            }
            static __OVATION_MIDDLEWARE: #p::Middleware = #p::Middleware {
                name: #name_str,
                location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                target: #target,
                run: __ovation_run,
            };
            #p::inventory::submit! { #p::MiddlewareEntry(&__OVATION_MIDDLEWARE) }
        };
    }
}

/// `target = all` or `target = tags("a", ...)`, as a `Target` expression.
fn target(attr: TokenStream, errors: &mut Errors) -> Option<TokenStream> {
    const HINT: &str = "`#[middleware]` takes `target = all` or `target = tags(\"admin\", ...)`";
    let p = quote!(::ovation::__private);
    let items = attr::items(attr, errors)?;
    let mut found = None;
    for item in &items {
        match (item.key.to_string().as_str(), &item.value) {
            ("target", Some(syn::Expr::Path(path))) if path.path.is_ident("all") => {
                found = Some(quote!(#p::Target::All));
            }
            ("target", Some(syn::Expr::Call(call))) if matches!(&*call.func, syn::Expr::Path(f) if f.path.is_ident("tags")) =>
            {
                let mut tags = Vec::new();
                for arg in &call.args {
                    match arg {
                        syn::Expr::Lit(syn::ExprLit {
                            lit: syn::Lit::Str(s),
                            ..
                        }) if !s.value().is_empty() => tags.push(s.clone()),
                        other => errors.at(other, "a tag is a non-empty string, e.g. \"admin\""),
                    }
                }
                if tags.is_empty() {
                    errors.at(call, "name at least one tag: tags(\"admin\")");
                }
                found = Some(quote!(#p::Target::Tags(&[#(#tags),*])));
            }
            _ => errors.at(&item.key, HINT),
        }
    }
    if items.is_empty() {
        errors.at_span(Span::call_site(), HINT);
    }
    found
}
