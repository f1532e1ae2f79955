//! `#[ovation::test]`: a `#[test]` whose async body runs with its own databases.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};

use crate::errors::Errors;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let split = match syn::parse2::<Option<syn::Ident>>(attr.clone()) {
        Ok(None) => false,
        Ok(Some(word)) if word == "split" => true,
        _ => {
            errors.at(
                &attr,
                "`#[ovation::test]` takes no arguments, or `split` to run every service in a \
                 runtime of its own, over loopback HTTP",
            );
            false
        }
    };
    let func: syn::ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => return e.to_compile_error(),
    };
    if func.sig.asyncness.is_none() {
        errors.at(
            func.sig.fn_token,
            "`#[ovation::test]` functions must be `async`",
        );
    }
    if !func.sig.inputs.is_empty() {
        errors.at(
            &func.sig.inputs,
            "`#[ovation::test]` functions take no parameters",
        );
    }
    if !errors.is_empty() {
        return errors.into_output(TokenStream::new());
    }
    let attrs = &func.attrs;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let inner = format_ident!("__ovation_test_{}", name);
    let mut inner_sig = func.sig.clone();
    inner_sig.ident = inner.clone();
    let block = &func.block;
    let run = if split {
        quote!(run_split_test)
    } else {
        quote!(run_test)
    };
    quote! {
        #[::core::prelude::v1::test]
        #(#attrs)*
        #vis fn #name() {
            #inner_sig #block
            ::ovation::__private::#run(#inner)
        }
    }
}
