//! Collects every error of one macro invocation, reported together, each at its own span.

use proc_macro2::TokenStream;
use quote::ToTokens;

#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn at(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    pub(crate) fn at_span(&mut self, span: proc_macro2::Span, message: impl std::fmt::Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    /// The errors as `compile_error!`s, followed by `fallback` (the user's item, re-emitted
    /// so rustc does not add a cascade of "cannot find function" errors).
    pub(crate) fn into_output(self, fallback: TokenStream) -> TokenStream {
        let mut out = self.0.map(|e| e.to_compile_error()).unwrap_or_default();
        out.extend(fallback);
        out
    }
}
