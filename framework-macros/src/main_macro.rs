//! `ovation::main!()`: an app binary's `main`, linking the package's library.

use std::path::Path;

use proc_macro2::{Span, TokenStream};
use quote::quote;

use crate::errors::Errors;

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    if !input.is_empty() {
        errors.at(&input, "`ovation::main!()` takes nothing");
    }
    let link = match library() {
        // Cargo names the binary being compiled; a binary shares the library's crate name.
        Some(lib) if std::env::var_os("CARGO_BIN_NAME").is_some() => {
            let lib = syn::Ident::new(&lib, Span::call_site());
            // `extern crate` rather than `use`: it links the library even where the binary names
            // nothing of it, and does not clash with a `use` of the user's.
            quote!(extern crate #lib as _;)
        }
        _ => TokenStream::new(),
    };
    errors.into_output(quote! {
        #link
        fn main() -> ::std::process::ExitCode {
            ::ovation::run()
        }
    })
}

/// The crate name of the library of the package being compiled, if it has one: `[lib] name`,
/// else the package's name with `-` as `_`, when `[lib]` or `src/lib.rs` says there is one.
fn library() -> Option<String> {
    let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
    let package = std::env::var("CARGO_PKG_NAME").ok()?;
    let manifest = std::fs::read_to_string(Path::new(&dir).join("Cargo.toml")).ok()?;
    let mut in_lib = false;
    let mut has_lib_table = false;
    let mut lib_name = None;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_lib = line == "[lib]";
            has_lib_table |= in_lib;
        } else if in_lib
            && let Some(value) = line.strip_prefix("name").map(str::trim_start)
            && let Some(value) = value.strip_prefix('=')
        {
            lib_name = Some(value.trim().trim_matches('"').to_owned());
        }
    }
    if !has_lib_table && !Path::new(&dir).join("src/lib.rs").is_file() {
        return None;
    }
    Some(lib_name.unwrap_or(package).replace('-', "_"))
}
