//! `#[ovation::auth_handler(bearer | cookie = "name" | header = "name", ...)]`: registers the
//! app's one auth handler. A second one in the crate is a compile error: each expands to the
//! same `#[macro_export]` name, which can be defined once per crate.

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::{FnArg, Ident, LitStr};

use crate::attr;
use crate::errors::Errors;

const KEYS: &str = "`bearer`, `cookie = \"name\"`, `header = \"name\"`";

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    // The attribute's mistakes first, as they read.
    let credentials = credentials(attr, &mut errors);
    let Some(func) = attr::async_fn(&item, "auth_handler", "an auth handler", &mut errors) else {
        return errors.into_output(item);
    };
    let sig = &func.sig;
    let takes_string = match sig.inputs.iter().collect::<Vec<_>>().as_slice() {
        [FnArg::Typed(arg)] => {
            matches!(&*arg.ty, syn::Type::Path(p) if p.path.is_ident("String") || p.path.segments.last().is_some_and(|s| s.ident == "String" && p.path.segments.len() > 1))
        }
        _ => false,
    };
    if !takes_string {
        errors.at(
            &sig.inputs,
            "an auth handler takes the credential as one parameter: `token: String`",
        );
    }
    let data = crate::api::ast::result_ok_type(
        &sig.output,
        &sig.ident,
        "an auth handler returns `Result<AuthData, ovation::Error>`, where `AuthData` is the \
         app's type implementing `ovation::auth::AuthData`",
        &mut errors,
    );
    let Some(data) = data.filter(|_| errors.is_empty()) else {
        return errors.into_output(item);
    };

    let p = quote!(::ovation::__private);
    let name = &sig.ident;
    let name_str = LitStr::new(&name.to_string(), name.span());
    let once = Ident::new("only_one_auth_handler_per_app", Span::call_site());
    quote! {
        #func

        #[doc(hidden)]
        #[macro_export]
        macro_rules! #once { () => {} }

        const _: () = {
            fn __ovation_run(token: #p::String) -> #p::HandlerFuture {
                #p::Box::pin(#p::authenticated::<#data>(#name(token)))
            }
            static __OVATION_AUTH_HANDLER: #p::AuthHandler = #p::AuthHandler {
                module: ::core::module_path!(),
                name: #name_str,
                location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                credentials: &[#(#credentials),*],
                run: __ovation_run,
                decode: #p::decode_auth::<#data>,
            };
            #p::inventory::submit! { #p::AuthHandlerEntry(&__OVATION_AUTH_HANDLER) }
        };
    }
}

/// The credentials the attribute names, in order, as `Credential` expressions.
fn credentials(attr: TokenStream, errors: &mut Errors) -> Vec<TokenStream> {
    let p = quote!(::ovation::__private);
    let Some(items) = attr::items(attr, errors) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in &items {
        let key = item.key.to_string();
        let value = match &item.value {
            Some(syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            })) => Some(s.value()),
            Some(other) => {
                errors.at(
                    other,
                    format_args!("`{key}` takes a string, e.g. {key} = \"session\""),
                );
                continue;
            }
            None => None,
        };
        match (key.as_str(), value) {
            ("bearer", None) => out.push(quote!(#p::Credential::Bearer)),
            ("cookie", Some(name)) if is_token(&name) => {
                out.push(quote!(#p::Credential::Cookie(#name)));
            }
            ("header", Some(name)) if is_token(&name) => {
                let name = name.to_ascii_lowercase();
                out.push(quote!(#p::Credential::Header(#name)));
            }
            ("cookie" | "header", Some(name)) => errors.at(
                &item.value,
                format_args!("{name:?} is not a valid {key} name"),
            ),
            ("cookie" | "header", None) => errors.at(
                &item.key,
                format_args!("`{key}` needs the name: {key} = \"...\""),
            ),
            ("bearer", Some(_)) => errors.at(&item.value, "`bearer` is a flag and takes no value"),
            _ => errors.at(
                &item.key,
                format_args!("unknown key `{key}`; `#[auth_handler]` takes {KEYS}"),
            ),
        }
    }
    if items.is_empty() {
        errors.at_span(
            Span::call_site(),
            format_args!(
                "say where the credential is: `#[auth_handler(bearer)]`, or {KEYS}, several in \
                 order of preference"
            ),
        );
    }
    out
}

/// RFC 9110 token characters: what header and cookie names are made of.
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
