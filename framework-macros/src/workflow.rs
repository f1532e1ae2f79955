//! `#[ovation::workflow]`: makes an async function a durable workflow, started through a value
//! of the function's name.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, LitStr, PathArguments, ReturnType, Type};

use crate::attr::{async_fn, items};
use crate::errors::Errors;

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let Some(func) = async_fn(&item, "ovation::workflow", "a workflow", &mut errors) else {
        return errors.into_output(item);
    };
    let mut name: Option<LitStr> = None;
    for entry in items(attr, &mut errors).into_iter().flatten() {
        match (entry.key.to_string().as_str(), &entry.value) {
            (
                "name",
                Some(syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                })),
            ) if valid_name(&s.value()) => {
                name = Some(s.clone());
            }
            ("name", _) => errors.at(
                &entry.key,
                "`name` is a string of letters, digits, `-` and `_`, e.g. name = \"checkout\"",
            ),
            (key, _) => errors.at(
                &entry.key,
                format_args!("unknown key `{key}`; `#[ovation::workflow]` takes `name = \"...\"`"),
            ),
        }
    }
    let sig = &func.sig;
    let input = match sig.inputs.iter().collect::<Vec<_>>().as_slice() {
        [] => None,
        [FnArg::Typed(t)] => Some((*t.ty).clone()),
        _ => {
            errors.at(
                &sig.inputs,
                "a workflow takes one parameter, its input (a serde type: use a struct for \
                 several values), or none",
            );
            None
        }
    };
    let output = output_type(&sig.output);
    if output.is_none() {
        let at: &dyn quote::ToTokens = match &sig.output {
            ReturnType::Default => &sig.ident,
            ReturnType::Type(_, ty) => ty,
        };
        errors.at(at, "a workflow returns `Result<T, ovation::Error>`");
    }
    let (Some(output), true) = (output, errors.is_empty()) else {
        return errors.into_output(item);
    };
    let ident = &sig.ident;
    let vis = &func.vis;
    let name = name.unwrap_or_else(|| LitStr::new(&ident.to_string(), ident.span()));
    let body_fn = format_ident!("__ovation_workflow_body_{}", ident);
    let run_fn = format_ident!("__ovation_workflow_run_{}", ident);
    let def = format_ident!("__OVATION_WORKFLOW_{}", ident.to_string().to_uppercase());
    let docs: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .collect();
    let others: Vec<_> = func
        .attrs
        .iter()
        .filter(|a| !a.path().is_ident("doc"))
        .collect();
    let mut body_sig = sig.clone();
    body_sig.ident = body_fn.clone();
    let block = &func.block;
    let (input_ty, call) = match &input {
        Some(ty) => (quote!(#ty), quote!(|input: #ty| #body_fn(input))),
        None => (quote!(()), quote!(|(): ()| #body_fn())),
    };
    let w = quote!(::ovation::workflow);
    // Spanned at the input's type (or the output's): a type that is not serde is named there.
    let at = input.as_ref().map_or_else(|| output.span(), |ty| ty.span());
    let entry = quote::quote_spanned! {at=> #w::entry(&#def, input, #call) };
    quote! {
        #[doc(hidden)]
        #(#others)*
        #body_sig #block

        #[doc(hidden)]
        fn #run_fn(
            input: ::ovation::__private::serde_json::Value,
        ) -> ::ovation::__private::Result<#w::RunFuture, ::ovation::Error> {
            #entry
        }

        #[doc(hidden)]
        static #def: #w::WorkflowDef = #w::WorkflowDef {
            name: #name,
            module: ::core::module_path!(),
            run: #run_fn,
            file: ::core::file!(),
            line: ::core::line!(),
        };

        ::ovation::__private::inventory::submit! { #w::WorkflowEntry(&#def) }

        #(#docs)*
        ///
        /// A durable workflow: `.run(input)`, `.start(input)`, `.result(id)` (see
        /// `ovation::workflow`).
        #[allow(non_upper_case_globals)]
        #vis static #ident: #w::Workflow<#input_ty, #output> = #w::Workflow::new(&#def);
    }
}

/// `T` of `Result<T, E>`.
fn output_type(output: &ReturnType) -> Option<Type> {
    let ReturnType::Type(_, ty) = output else {
        return None;
    };
    let Type::Path(path) = &**ty else {
        return None;
    };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}
