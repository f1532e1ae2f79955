//! `static_files!("/assets", dir = "./public")`: embeds a folder's files at build time
//! (`include_bytes!`, so cargo rebuilds when one changes) with each file's digest (its ETag)
//! and modification time, and registers the two routes that serve them.

use std::path::{Path, PathBuf};

use proc_macro2::{Span, TokenStream};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Ident, LitStr, Token};

struct Args {
    prefix: LitStr,
    dir: LitStr,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let prefix: LitStr = input.parse()?;
        input.parse::<Token![,]>()?;
        let key: Ident = input.parse()?;
        if key != "dir" {
            return Err(syn::Error::new(
                key.span(),
                "expected `dir = \"...\"`: static_files!(\"/assets\", dir = \"./public\")",
            ));
        }
        input.parse::<Token![=]>()?;
        let dir: LitStr = input.parse()?;
        let _ = input.parse::<Option<Token![,]>>()?;
        Ok(Args { prefix, dir })
    }
}

pub(crate) fn expand(input: TokenStream) -> TokenStream {
    match build(input) {
        Ok(tokens) => tokens,
        Err(e) => e.to_compile_error(),
    }
}

fn build(input: TokenStream) -> syn::Result<TokenStream> {
    let args: Args = syn::parse2(input)?;
    let prefix = args.prefix.value();
    let prefix = if prefix.len() > 1 {
        prefix.trim_end_matches('/').to_owned()
    } else {
        prefix
    };
    if !prefix.starts_with('/') || prefix.contains([':', '*', '{', '}', '?', '#', '\\']) {
        return Err(syn::Error::new(
            args.prefix.span(),
            "the prefix is a plain path starting with `/`, e.g. \"/assets\" or \"/\"",
        ));
    }
    let manifest = std::env::var("CARGO_MANIFEST_DIR").map_err(|_| {
        syn::Error::new(
            Span::call_site(),
            "CARGO_MANIFEST_DIR is not set: build with cargo",
        )
    })?;
    let root = Path::new(&manifest).join(args.dir.value());
    let mut files = Vec::new();
    collect(&root, &root, &mut files).map_err(|e| {
        syn::Error::new(
            args.dir.span(),
            format!(
                "cannot read the folder {} (relative to the crate's Cargo.toml): {e}",
                root.display()
            ),
        )
    })?;
    files.sort();
    if files.is_empty() {
        return Err(syn::Error::new(
            args.dir.span(),
            format!("the folder {} has no files to serve", root.display()),
        ));
    }
    let folder = root
        .canonicalize()
        .unwrap_or_else(|_| root.clone())
        .to_string_lossy()
        .into_owned();
    let p = quote!(::ovation::__private);
    let mut entries = Vec::new();
    for (relative, absolute) in &files {
        let bytes = std::fs::read(absolute).map_err(|e| {
            syn::Error::new(
                args.dir.span(),
                format!("cannot read {}: {e}", absolute.display()),
            )
        })?;
        // A digest of the content (SipHash with fixed keys: the same bytes, the same tag).
        let mut hasher = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(&bytes, &mut hasher);
        let etag = format!(
            "\"{:016x}-{:x}\"",
            std::hash::Hasher::finish(&hasher),
            bytes.len()
        );
        let modified = std::fs::metadata(absolute)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        let absolute = absolute.to_string_lossy().into_owned();
        entries.push(quote! {
            #p::StaticFile {
                path: #relative,
                bytes: ::core::include_bytes!(#absolute),
                etag: #etag,
                modified: #modified,
            }
        });
    }
    let paths = if prefix == "/" {
        vec!["/".to_owned(), "/*path".to_owned()]
    } else {
        vec![
            prefix.clone(),
            format!("{prefix}/"),
            format!("{prefix}/*path"),
        ]
    };
    Ok(quote! {
        const _: () = {
            static FILES: &[#p::StaticFile] = &[#(#entries),*];
            static DIR: #p::StaticDir = #p::StaticDir {
                module: ::core::module_path!(),
                prefix: #prefix,
                files: FILES,
                location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                // The app's debug builds serve the folder as it is now (see `StaticDir`).
                folder: if ::core::cfg!(debug_assertions) {
                    ::core::option::Option::Some(#folder)
                } else {
                    ::core::option::Option::None
                },
            };
            #(
                #p::inventory::submit! {
                    #p::EndpointEntry(&#p::StaticRoute { dir: &DIR, path: #paths })
                }
            )*
        };
    })
}

/// Every file under `dir`, with its path relative to `root` (`/`-separated).
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let kind = entry.file_type()?;
        if kind.is_dir() {
            collect(root, &path, out)?;
        } else if kind.is_file() || path.is_file() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, path));
        }
    }
    Ok(())
}
