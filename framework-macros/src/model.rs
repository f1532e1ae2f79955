//! `#[ovation::model]`: the derives a type that crosses the wire needs (serde both ways, a
//! JSON Schema, `Debug`, `Clone`), through `::ovation::` so the app needs no `serde` or
//! `schemars` of its own, JSON fields in camelCase, and with `row` a `sqlx::FromRow` for
//! Postgres by field name.

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::{Data, DeriveInput, Fields, Path, Token};

use crate::errors::Errors;

/// What `#[ovation::model(...)]` was asked for.
#[derive(Default)]
struct Options {
    /// Also a database row: `FromRow` by field name.
    row: bool,
    /// Derives not to add (`without(Clone)`).
    without: Vec<String>,
}

/// The derives the attribute adds, by the name a user would derive them under.
const DERIVES: [&str; 5] = ["Debug", "Clone", "Serialize", "Deserialize", "JsonSchema"];

fn options(attr: TokenStream, errors: &mut Errors) -> Options {
    let mut options = Options::default();
    let metas = match Punctuated::<syn::Meta, Token![,]>::parse_terminated.parse2(attr) {
        Ok(metas) => metas,
        Err(e) => {
            errors.push(e);
            return options;
        }
    };
    for meta in metas {
        match &meta {
            syn::Meta::Path(p) if p.is_ident("row") => options.row = true,
            syn::Meta::List(list) if list.path.is_ident("without") => {
                match list.parse_args_with(Punctuated::<syn::Ident, Token![,]>::parse_terminated) {
                    Ok(names) => {
                        for name in names {
                            if matches!(name.to_string().as_str(), "Debug" | "Clone") {
                                options.without.push(name.to_string());
                            } else {
                                errors.at(&name, "`without` takes `Debug` and `Clone`: the serde and schema derives are what makes a model");
                            }
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            _ => errors.at(&meta, "unknown option; `#[ovation::model]` takes `row` (also a database row: `sqlx::FromRow` by field name) and `without(Debug, Clone)`"),
        }
    }
    options
}

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = options(attr, &mut errors);
    let input: DeriveInput = match syn::parse2(item.clone()) {
        Ok(input) => input,
        Err(e) => {
            errors.at_span(e.span(), "`#[ovation::model]` goes on a struct or an enum");
            return errors.into_output(item);
        }
    };
    if matches!(input.data, Data::Union(_)) {
        errors.at(
            &input.ident,
            "`#[ovation::model]` goes on a struct or an enum, not a union",
        );
        return errors.into_output(item);
    }

    // What the item derives already is not derived twice.
    let mut derived: Vec<String> = Vec::new();
    let mut serde_keys: Vec<String> = Vec::new();
    for a in &input.attrs {
        if a.path().is_ident("derive") {
            if let Ok(paths) = a.parse_args_with(Punctuated::<Path, Token![,]>::parse_terminated) {
                derived.extend(
                    paths
                        .iter()
                        .filter_map(|p| p.segments.last().map(|s| s.ident.to_string())),
                );
            }
        } else if a.path().is_ident("serde")
            && let Ok(metas) =
                a.parse_args_with(Punctuated::<syn::Meta, Token![,]>::parse_terminated)
        {
            serde_keys.extend(metas.iter().map(|m| quote!(#m).to_string()));
        }
    }
    let add = |name: &str| {
        !derived.iter().any(|d| d == name) && !options.without.iter().any(|w| w == name)
    };
    let mut derives = Vec::new();
    for name in DERIVES {
        if add(name) {
            derives.push(match name {
                "Debug" => quote!(::core::fmt::Debug),
                "Clone" => quote!(::core::clone::Clone),
                "Serialize" => quote!(::ovation::serde::Serialize),
                "Deserialize" => quote!(::ovation::serde::Deserialize),
                _ => quote!(::ovation::schemars::JsonSchema),
            });
        }
    }
    let named = match &input.data {
        Data::Struct(s) => matches!(s.fields, Fields::Named(_)),
        Data::Enum(_) => true,
        Data::Union(_) => false,
    };
    let crate_path =
        (!has_key(&serde_keys, "crate")).then(|| quote!(#[serde(crate = "::ovation::serde")]));
    let camel = (named && !has_key(&serde_keys, "rename_all"))
        .then(|| quote!(#[serde(rename_all = "camelCase")]));
    // An enum's struct variants have fields too.
    let camel_fields = (matches!(input.data, Data::Enum(_))
        && !has_key(&serde_keys, "rename_all_fields"))
    .then(|| quote!(#[serde(rename_all_fields = "camelCase")]));
    let schemars_crate =
        add("JsonSchema").then(|| quote!(#[schemars(crate = "::ovation::schemars")]));
    let row = if options.row {
        from_row(&input, &mut errors)
    } else {
        TokenStream::new()
    };
    let out = quote! {
        #[derive(#(#derives),*)]
        #crate_path
        #schemars_crate
        #camel
        #camel_fields
        #item
        #row
    };
    errors.into_output(out)
}

/// `FromRow` for Postgres rows: each field from the column of its name.
fn from_row(input: &DeriveInput, errors: &mut Errors) -> TokenStream {
    let Data::Struct(data) = &input.data else {
        errors.at(
            &input.ident,
            "`row` needs a struct with named fields: each is read from the column of its name",
        );
        return TokenStream::new();
    };
    let Fields::Named(fields) = &data.fields else {
        errors.at(
            &input.ident,
            "`row` needs a struct with named fields: each is read from the column of its name",
        );
        return TokenStream::new();
    };
    if !input.generics.params.is_empty() {
        errors.at(
            &input.generics,
            "`row` needs a struct without generic parameters",
        );
        return TokenStream::new();
    }
    let ident = &input.ident;
    let reads = fields.named.iter().map(|f| {
        let name = f.ident.as_ref().expect("named fields have names");
        let column = name.to_string();
        let column = column.strip_prefix("r#").unwrap_or(&column);
        quote!(#name: ::ovation::sqlx::Row::try_get(row, #column)?)
    });
    quote! {
        impl<'r> ::ovation::sqlx::FromRow<'r, ::ovation::sqlx::postgres::PgRow> for #ident {
            fn from_row(
                row: &'r ::ovation::sqlx::postgres::PgRow,
            ) -> ::core::result::Result<Self, ::ovation::sqlx::Error> {
                ::core::result::Result::Ok(Self { #(#reads,)* })
            }
        }
    }
}

/// Whether one of the `#[serde(...)]` entries sets `key`.
fn has_key(entries: &[String], key: &str) -> bool {
    entries.iter().any(|e| {
        e.strip_prefix(key)
            .is_some_and(|rest| rest.trim_start().starts_with(['=', '(']))
    })
}
