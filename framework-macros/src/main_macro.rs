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
    let manifest = Manifest::read();
    let link = match manifest.as_ref().and_then(Manifest::library) {
        // Cargo names the binary being compiled; a binary shares the library's crate name.
        Some(lib) if std::env::var_os("CARGO_BIN_NAME").is_some() => {
            let lib = syn::Ident::new(&lib, Span::call_site());
            // `extern crate` rather than `use`: it links the library even where the binary names
            // nothing of it, and does not clash with a `use` of the user's.
            quote!(extern crate #lib as _;)
        }
        _ => TokenStream::new(),
    };
    // `ovation run` turns the optional dependency on: the binary then links the framework as
    // one shared library (see the `ovation-dylib` crate).
    let dylib = if manifest.as_ref().is_some_and(|m| m.optional_dylib) {
        quote!(
            #[cfg(feature = "ovation-dylib")]
            extern crate ovation_dylib as _;
        )
    } else {
        TokenStream::new()
    };
    errors.into_output(quote! {
        #link
        #dylib
        fn main() -> ::std::process::ExitCode {
            ::ovation::run()
        }
    })
}

/// What the macro needs of the manifest of the package being compiled.
struct Manifest {
    /// `[lib] name`, if set.
    lib_name: Option<String>,
    /// Whether the manifest has a `[lib]` table.
    has_lib_table: bool,
    /// Whether `ovation-dylib` is an optional dependency (a feature of that name).
    optional_dylib: bool,
    dir: String,
    package: String,
}

impl Manifest {
    fn read() -> Option<Manifest> {
        let dir = std::env::var("CARGO_MANIFEST_DIR").ok()?;
        let package = std::env::var("CARGO_PKG_NAME").ok()?;
        let text = std::fs::read_to_string(Path::new(&dir).join("Cargo.toml")).ok()?;
        let mut manifest = Manifest {
            lib_name: None,
            has_lib_table: false,
            optional_dylib: false,
            dir,
            package,
        };
        let mut table = "";
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                table = line;
                manifest.has_lib_table |= table == "[lib]";
            } else if table == "[lib]"
                && let Some(value) = line.strip_prefix("name").map(str::trim_start)
                && let Some(value) = value.strip_prefix('=')
            {
                manifest.lib_name = Some(value.trim().trim_matches('"').to_owned());
            } else if (table == "[dependencies]" && line.starts_with("ovation-dylib")
                || table == "[dependencies.ovation-dylib]")
                && line.replace(' ', "").contains("optional=true")
            {
                manifest.optional_dylib = true;
            }
        }
        Some(manifest)
    }

    /// The crate name of the package's library, if it has one: `[lib] name`, else the
    /// package's name with `-` as `_`, when `[lib]` or `src/lib.rs` says there is one.
    fn library(&self) -> Option<String> {
        if !self.has_lib_table && !Path::new(&self.dir).join("src/lib.rs").is_file() {
            return None;
        }
        let name = self.lib_name.as_ref().unwrap_or(&self.package);
        Some(name.replace('-', "_"))
    }
}
