//! `#[api]`: parse the attribute (`attr`), build and check the endpoint model (`ast`),
//! generate the stub, the endpoint impl and its registration (`expand`).

#[path = "api/ast.rs"]
pub(crate) mod ast;
#[path = "api/expand.rs"]
mod expand;

use proc_macro2::TokenStream;
use quote::ToTokens;

use crate::attr;
use crate::errors::Errors;

pub(crate) fn expand(attr_tokens: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            errors.at_span(e.span(), "`#[api]` goes on an `async fn`");
            return errors.into_output(item);
        }
    };
    let attr = attr::parse(attr_tokens, &mut errors);
    if attr.kind.0 == attr::Kind::Raw {
        let endpoint = ast::RawEndpoint::build(attr, &func, &mut errors);
        return match endpoint {
            Some(endpoint) if errors.is_empty() => expand::raw(&endpoint),
            _ => errors.into_output(func.into_token_stream()),
        };
    }
    let endpoint = ast::Endpoint::build(attr, &func, &mut errors);
    match endpoint {
        Some(endpoint) if errors.is_empty() => expand::endpoint(&endpoint),
        _ => errors.into_output(func.into_token_stream()),
    }
}
