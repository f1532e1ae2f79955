//! `database!("name", migrations = "./migrations")`: embeds the migration files of a service
//! database and registers it.

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitStr, Token};

use crate::errors::Errors;

struct Input {
    name: LitStr,
    migrations: Option<LitStr>,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name: LitStr = input.parse()?;
        let mut migrations = None;
        while input.peek(Token![,]) {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            let key: Ident = input.parse()?;
            if key != "migrations" {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown key `{key}`; `database!` takes `migrations = \"./migrations\"`"
                    ),
                ));
            }
            if migrations.is_some() {
                return Err(syn::Error::new(
                    key.span(),
                    "`migrations` specified more than once",
                ));
            }
            input.parse::<Token![=]>()?;
            migrations = Some(input.parse()?);
        }
        Ok(Input { name, migrations })
    }
}

pub(crate) fn expand(input: TokenStream, declaring_file: Option<PathBuf>) -> TokenStream {
    let mut errors = Errors::default();
    let input: Input = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let name = input.name.value();
    let valid = name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        errors.at(
            &input.name,
            "database names are 1 to 32 characters of a-z, 0-9 and _, starting with a letter",
        );
    }
    let mut migrations = Vec::new();
    let mut folder = None;
    if let Some(dir_lit) = &input.migrations {
        match resolve(dir_lit, declaring_file) {
            Ok(dir) => {
                migrations = read_migrations(&dir, dir_lit, &mut errors);
                folder = Some(dir.to_string_lossy().into_owned());
            }
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return errors.into_output(quote!(::ovation::__private::Database::__new({
            static DEF: ::ovation::__private::DatabaseDef = ::ovation::__private::DatabaseDef {
                name: "invalid",
                module: "",
                migrations: &[],
                folder: ::core::option::Option::None,
                from_folder: false,
            };
            &DEF
        })));
    }
    let p = quote!(::ovation::__private);
    let entries = migrations.iter().map(|(version, file, path)| {
        let path = path.to_string_lossy();
        quote!(#p::Migration { version: #version, file: #file, sql: ::core::include_str!(#path) })
    });
    let count = migrations.len();
    let folder = match folder {
        Some(f) => quote!(::core::option::Option::Some(#f)),
        None => quote!(::core::option::Option::None),
    };
    let name_lit = &input.name;
    quote! {{
        static __OVATION_MIGRATIONS: [#p::Migration; #count] = [#(#entries),*];
        static __OVATION_DATABASE: #p::DatabaseDef = #p::DatabaseDef {
            name: #name_lit,
            module: ::core::module_path!(),
            migrations: &__OVATION_MIGRATIONS,
            folder: #folder,
            // The app's profile: its debug builds read the folder (see `current_migrations`).
            from_folder: ::core::cfg!(debug_assertions),
        };
        #p::inventory::submit! { #p::DatabaseEntry(&__OVATION_DATABASE) }
        #p::Database::__new(&__OVATION_DATABASE)
    }}
}

/// The migrations folder, relative to the declaring file.
fn resolve(lit: &LitStr, declaring_file: Option<PathBuf>) -> syn::Result<PathBuf> {
    let rel = lit.value();
    let file = declaring_file.ok_or_else(|| {
        syn::Error::new(
            lit.span(),
            "cannot tell which file declares this database, so cannot find its migrations",
        )
    })?;
    let file = if file.is_absolute() {
        file
    } else {
        // Paths rustc reports are relative to the workspace or the package root; try both.
        let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
        let in_package = manifest.join(&file);
        if in_package.exists() {
            in_package
        } else {
            manifest
                .ancestors()
                .map(|a| a.join(&file))
                .find(|p| p.exists())
                .unwrap_or(in_package)
        }
    };
    let dir = file.parent().unwrap_or(Path::new(".")).join(&rel);
    dir.canonicalize().map_err(|e| {
        syn::Error::new(
            lit.span(),
            format!("cannot read the migrations folder {}: {e}", dir.display()),
        )
    })
}

/// `(version, file name, absolute path)` of each `<n>_<name>.up.sql`, by version.
fn read_migrations(dir: &Path, lit: &LitStr, errors: &mut Errors) -> Vec<(i64, String, PathBuf)> {
    let span: Span = lit.span();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            errors.at_span(
                span,
                format_args!("cannot read the migrations folder {}: {e}", dir.display()),
            );
            return Vec::new();
        }
    };
    let mut found: Vec<(i64, String, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if !file.ends_with(".sql") || file.ends_with(".down.sql") {
            continue;
        }
        let version = file
            .strip_suffix(".up.sql")
            .and_then(|stem| stem.split_once('_'))
            .filter(|(_, label)| !label.is_empty())
            .and_then(|(n, _)| n.parse::<i64>().ok());
        match version {
            Some(v) => {
                if let Some((_, other, _)) = found.iter().find(|(fv, _, _)| *fv == v) {
                    errors.at_span(
                        span,
                        format_args!("migrations {other} and {file} have the same number {v}"),
                    );
                }
                found.push((v, file, entry.path()));
            }
            None => errors.at_span(
                span,
                format_args!(
                    "migration file {file} in {} is not named `<number>_<name>.up.sql`",
                    dir.display()
                ),
            ),
        }
    }
    found.sort_by_key(|(v, _, _)| *v);
    found
}
