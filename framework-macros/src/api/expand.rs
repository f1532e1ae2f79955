//! Code generation for `#[api]`: the stub under the user's name, the body under a hidden
//! one, the `Endpoint` impl and the registry entry. Generated code names only
//! `::ovation::__private::...`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::LitStr;

use super::ast::{ArgKind, Endpoint, RawEndpoint};
use crate::attr::{Access, Kind};

pub(crate) fn endpoint(e: &Endpoint<'_>) -> TokenStream {
    let p = quote!(::ovation::__private);
    let func = e.func;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let attrs = &func.attrs;
    let cfgs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    let output = &func.sig.output;
    let marker = format_ident!("__ovation_endpoint_{}", name);
    let inner = format_ident!("__ovation_inner_{}", name);

    // The stub: the user's signature, without `mut` on its parameters.
    let stub_params = e
        .args
        .iter()
        .filter(|a| !matches!(a.kind, ArgKind::Stream))
        .map(|a| {
            let (ident, ty) = (&a.ident, &a.ty);
            quote!(#ident: #ty)
        });
    let path_idents: Vec<_> = e
        .path_params
        .iter()
        .map(|pp| {
            let arg = e
                .args
                .iter()
                .find(|a| a.ident.to_string().trim_start_matches("r#") == pp.name);
            arg.map(|a| a.ident.clone())
                .expect("every path parameter is bound")
        })
        .collect();
    let request_value = match e.args.iter().find(|a| matches!(a.kind, ArgKind::Request)) {
        Some(a) => {
            let ident = &a.ident;
            quote!(#ident)
        }
        None => quote!(()),
    };

    // The body, under a hidden name: the user's function as written, minus docs.
    let inner_attrs = attrs.iter().filter(|a| !a.path().is_ident("doc"));
    let inner_sig = {
        let mut sig = func.sig.clone();
        sig.ident = inner.clone();
        sig
    };
    let block = &func.block;

    let method_variant = method_variant(&e.method);
    let access = access_variant(e.access);
    let path = &e.path;
    let param_names: Vec<LitStr> = e
        .path_params
        .iter()
        .map(|pp| LitStr::new(&pp.name, path.span()))
        .collect();
    let param_types: Vec<_> = e.path_params.iter().map(|pp| &pp.ty).collect();
    let indices: Vec<syn::Index> = (0..e.path_params.len()).map(syn::Index::from).collect();
    let has_request = e.request.is_some();
    let no_content = matches!(&e.response, syn::Type::Tuple(t) if t.elems.is_empty());
    let request_ty = e.request.as_ref().map(|t| quote!(#t)).unwrap_or(quote!(()));
    let response_ty = &e.response;
    let call_args = e.args.iter().map(|a| match a.kind {
        ArgKind::Path(i) => {
            let i = syn::Index::from(i);
            quote!(params.#i)
        }
        ArgKind::Request => quote!(request),
        ArgKind::Stream => quote!(stream),
    });
    let name_str = LitStr::new(&name.to_string(), name.span());
    let tags = &e.tags;
    // Where the request travels, decided here so only its own encoder and decoder are
    // compiled for the endpoint.
    let (decode_request, encode_request) = if !has_request {
        (
            quote!(#p::Result::Ok(())),
            quote!(#p::Result::Ok(#p::EncodedRequest::None)),
        )
    } else if matches!(e.method.as_str(), "POST" | "PUT" | "PATCH") {
        (
            quote!(#p::decode_json(body)),
            quote!(#p::encode_json(request)),
        )
    } else {
        (
            quote!(#p::decode_query(query)),
            quote!(#p::encode_query(request)),
        )
    };

    // What typed endpoints and streams both implement: their path parameters and request.
    let parameter_fns = quote! {
        fn parse_params(segments: &[&str]) -> #p::Result<Self::Params, #p::Error> {
            #p::Result::Ok((#(#p::parse_param::<#param_types>(#param_names, segments.get(#indices))?,)*))
        }

        fn path_param_schemas() -> #p::Vec<#p::Option<#p::schemars::Schema>> {
            #[allow(unused_imports)]
            use #p::{NoParamSchema as _, ParamSchemaOf as _};
            #p::Vec::from([#((&#p::ParamSchema::<#param_types>::NEW).param_schema()),*])
        }

        fn validate(request: &Self::Request) -> #p::Result<(), #p::Error> {
            #[allow(unused_imports)]
            use #p::{NoValidate as _, ValidateOf as _};
            (&#p::ValidateProbe::<Self::Request>::NEW).validate_request(request)
        }

        fn render_params(params: &Self::Params) -> #p::Vec<#p::String> {
            let _ = params;
            #p::Vec::from([#(#p::PathParam::render_param(&params.#indices)),*])
        }
    };

    // What differs between a typed endpoint and a stream: the stub, the trait implemented and
    // the registry's declaration. The marker, the hidden body and the registration are shared.
    let (stub, endpoint_impl, decl) = if e.kind == Kind::Stream {
        let stream_ty = e.stream.as_ref().expect("a stream endpoint has its stream");
        (
            quote! {
                #(#attrs)*
                #vis async fn #name(#(#stub_params),*) -> #p::Result<<#stream_ty as #p::StreamSide>::Client, #p::Error> {
                    #p::open_stream::<#marker>((#(#path_idents,)*), #request_value).await
                }
            },
            quote! {
                impl #p::StreamEndpoint for #marker {
                    const MODULE: &'static str = ::core::module_path!();
                    const NAME: &'static str = #name_str;
                    const PATH: &'static str = #path;
                    const ACCESS: #p::Access = #p::Access::#access;
                    const PATH_PARAMS: &'static [&'static str] = &[#(#param_names),*];
                    const HAS_REQUEST: bool = #has_request;
                    const TAGS: &'static [&'static str] = &[#(#tags),*];
                    const LOCATION: &'static str = ::core::concat!(::core::file!(), ":", ::core::line!());

                    type Params = (#(#param_types,)*);
                    type Request = #request_ty;
                    type Stream = #stream_ty;

                    #parameter_fns

                    fn handle(
                        params: Self::Params,
                        request: Self::Request,
                        stream: Self::Stream,
                    ) -> impl #p::Future<Output = #p::Result<(), #p::Error>> + ::core::marker::Send {
                        let _ = &request;
                        #inner(#(#call_args),*)
                    }
                }
            },
            quote!(#p::StreamEndpointDecl),
        )
    } else {
        (
            quote! {
                #(#attrs)*
                #vis async fn #name(#(#stub_params),*) #output {
                    #p::call::<#marker>((#(#path_idents,)*), #request_value).await
                }
            },
            quote! {
                impl #p::Endpoint for #marker {
                    const MODULE: &'static str = ::core::module_path!();
                    const NAME: &'static str = #name_str;
                    const METHOD: #p::Method = #p::Method::#method_variant;
                    const PATH: &'static str = #path;
                    const ACCESS: #p::Access = #p::Access::#access;
                    const PATH_PARAMS: &'static [&'static str] = &[#(#param_names),*];
                    const HAS_REQUEST: bool = #has_request;
                    const NO_CONTENT: bool = #no_content;
                    const TAGS: &'static [&'static str] = &[#(#tags),*];
                    const LOCATION: &'static str = ::core::concat!(::core::file!(), ":", ::core::line!());

                    type Params = (#(#param_types,)*);
                    type Request = #request_ty;
                    type Response = #response_ty;

                    #parameter_fns

                    fn decode_request(body: &[u8], query: &str) -> #p::Result<Self::Request, #p::Error> {
                        let _ = (body, query);
                        #decode_request
                    }

                    fn encode_request(request: &Self::Request) -> #p::Result<#p::EncodedRequest, #p::EncodeError> {
                        let _ = request;
                        #encode_request
                    }

                    fn handle(
                        params: Self::Params,
                        request: Self::Request,
                    ) -> impl #p::Future<Output = #p::Result<Self::Response, #p::Error>> + ::core::marker::Send {
                        let _ = &request;
                        #inner(#(#call_args),*)
                    }
                }
            },
            quote!(#p::EndpointDecl),
        )
    };

    quote! {
        #stub

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #marker;

        #(#cfgs)*
        #[doc(hidden)]
        #(#inner_attrs)*
        #[allow(clippy::needless_pass_by_value)]
        #inner_sig #block

        #(#cfgs)*
        const _: () = {
            #endpoint_impl

            #p::inventory::submit! {
                #p::EndpointEntry(&#decl::<#marker>::NEW)
            }
        };
    }
}

/// Code for `#[api(raw)]`: the body under a hidden name, run through axum's `Handler` (so its
/// parameters are axum extractors), and under the user's name a function no call compiles
/// against, whose error says why.
pub(crate) fn raw(e: &RawEndpoint<'_>) -> TokenStream {
    let p = quote!(::ovation::__private);
    let func = e.func;
    let vis = &func.vis;
    let name = &func.sig.ident;
    let attrs = &func.attrs;
    let cfgs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("cfg")).collect();
    let docs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
    let inner_attrs = attrs.iter().filter(|a| !a.path().is_ident("doc"));
    let marker = format_ident!("__ovation_endpoint_{}", name);
    let inner = format_ident!("__ovation_inner_{}", name);
    let inner_sig = {
        let mut sig = func.sig.clone();
        sig.ident = inner.clone();
        sig
    };
    let block = &func.block;
    let method_variant = method_variant(&e.method);
    let access = access_variant(e.access);
    let path = &e.path;
    let param_names: Vec<LitStr> = e
        .path_names
        .iter()
        .map(|n| LitStr::new(n, path.span()))
        .collect();
    let name_str = LitStr::new(&name.to_string(), name.span());
    let tags = &e.tags;
    // As many parameters as the function has (at least one), so a call of any arity reaches
    // the bound and its message.
    let arity = func.sig.inputs.len().max(1);
    let generics: Vec<_> = (0..arity)
        .map(|i| format_ident!("__OvationRaw{}", i))
        .collect();
    let refused: Vec<_> = (0..arity)
        .map(|i| format_ident!("a_raw_endpoint_is_reached_over_http_{}", i))
        .collect();
    let first = &refused[0];
    let first_ty = &generics[0];
    let handler_call = quote::quote_spanned! {name.span()=>
        #p::axum::handler::Handler::<_, ()>::call(#inner, request, ())
    };
    quote! {
        #(#docs)*
        #(#cfgs)*
        #[allow(dead_code, clippy::too_many_arguments)]
        #vis fn #name<#(#generics),*>(#(#refused: #generics),*) -> ::core::convert::Infallible
        where
            #first_ty: #p::RawEndpointIsNotCallable,
        {
            #(let _ = #refused;)*
            <#first_ty as #p::RawEndpointIsNotCallable>::refuse(#first)
        }

        #(#cfgs)*
        #[doc(hidden)]
        #[allow(non_camel_case_types)]
        #vis struct #marker;

        #(#cfgs)*
        #[doc(hidden)]
        #(#inner_attrs)*
        #inner_sig #block

        #(#cfgs)*
        const _: () = {
            impl #p::RawEndpoint for #marker {
                const MODULE: &'static str = ::core::module_path!();
                const NAME: &'static str = #name_str;
                const METHOD: #p::Method = #p::Method::#method_variant;
                const PATH: &'static str = #path;
                const ACCESS: #p::Access = #p::Access::#access;
                const PATH_PARAMS: &'static [&'static str] = &[#(#param_names),*];
                const TAGS: &'static [&'static str] = &[#(#tags),*];
                const LOCATION: &'static str = ::core::concat!(::core::file!(), ":", ::core::line!());

                fn handle(
                    request: #p::axum::extract::Request,
                ) -> impl #p::Future<Output = #p::axum::response::Response> + ::core::marker::Send {
                    #handler_call
                }
            }

            #p::inventory::submit! {
                #p::EndpointEntry(&#p::RawEndpointDecl::<#marker>::NEW)
            }
        };
    }
}

/// The `Method` variant of an upper-case method name: `GET` → `Get`.
fn method_variant(method: &str) -> syn::Ident {
    let lower = method.to_ascii_lowercase();
    let mut chars = lower.chars();
    let name = chars
        .next()
        .map(|f| f.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default();
    format_ident!("{}", name)
}

/// The `Access` variant of an access level.
fn access_variant(access: Access) -> TokenStream {
    match access {
        Access::Public => quote!(Public),
        Access::Private => quote!(Private),
        Access::Auth => quote!(Auth),
    }
}
