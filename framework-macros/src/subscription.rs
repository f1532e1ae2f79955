//! `#[subscription(topic = path::TO::TOPIC, name = "...", ...)]`: registers an async function
//! as the handler of a subscription.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, ItemFn, Lit, LitStr, Token};

use crate::attr::Item;
use crate::errors::Errors;

const KEYS: &str = "`topic`, `name`, `max_retries`, `min_backoff`, `max_backoff`, `ack_deadline`, `max_concurrency`";

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let func: ItemFn = match syn::parse2(item.clone()) {
        Ok(f) => f,
        Err(e) => {
            errors.at_span(e.span(), "`#[subscription]` goes on an `async fn`");
            return errors.into_output(item);
        }
    };
    let items =
        match syn::parse::Parser::parse2(Punctuated::<Item, Token![,]>::parse_terminated, attr) {
            Ok(items) => items,
            Err(e) => {
                errors.push(e);
                return errors.into_output(quote!(#func));
            }
        };
    let mut topic: Option<Expr> = None;
    let mut name: Option<LitStr> = None;
    let mut config = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    for item in items {
        let key = item.key.to_string();
        if seen.contains(&key) {
            errors.at(&item.key, format_args!("`{key}` specified more than once"));
            continue;
        }
        seen.push(key.clone());
        let Some(value) = item.value else {
            errors.at(&item.key, format_args!("`{key}` needs a value"));
            continue;
        };
        match key.as_str() {
            "topic" => topic = Some(value),
            "name" => match lit(&value) {
                Some(Lit::Str(s)) if valid_name(&s.value()) => name = Some(s),
                _ => errors.at(
                    &value,
                    "`name` is a string of a-z, 0-9 and -, e.g. name = \"send-order-confirmation\"",
                ),
            },
            "max_retries" | "max_concurrency" => match lit(&value) {
                Some(Lit::Int(n)) if n.base10_parse::<u32>().is_ok() => {
                    let field = format_ident!("{}", key);
                    let n = n.base10_parse::<u32>().unwrap_or(0);
                    if key == "max_concurrency" && n == 0 {
                        errors.at(&value, "`max_concurrency` must be at least 1");
                    }
                    config.push(if key == "max_concurrency" {
                        let n = n as usize;
                        quote!(#field: #n)
                    } else {
                        quote!(#field: #n)
                    });
                }
                _ => errors.at(
                    &value,
                    format_args!("`{key}` takes a whole number, e.g. {key} = 5"),
                ),
            },
            "min_backoff" | "max_backoff" | "ack_deadline" => match lit(&value) {
                Some(Lit::Str(s)) => match parse_duration(&s.value()) {
                    Some(ms) => {
                        let field = format_ident!("{}", key);
                        config
                            .push(quote!(#field: ::ovation::__private::Duration::from_millis(#ms)));
                    }
                    None => errors.at(
                        &s,
                        format_args!(
                            "`{key}` takes a duration such as \"500ms\", \"10s\", \"5m\" or \"1h\""
                        ),
                    ),
                },
                _ => errors.at(
                    &value,
                    format_args!("`{key}` takes a duration string, e.g. {key} = \"10s\""),
                ),
            },
            _ => errors.at(
                &item.key,
                format_args!("unknown key `{key}`; `#[subscription]` takes {KEYS}"),
            ),
        }
    }
    if topic.is_none() {
        errors.at_span(
            Span::call_site(),
            "missing `topic`: e.g. topic = crate::orders::ORDER_CREATED",
        );
    }
    if name.is_none() && !seen.contains(&"name".to_owned()) {
        errors.at_span(
            Span::call_site(),
            "missing `name`: e.g. name = \"send-order-confirmation\"",
        );
    }
    if func.sig.asyncness.is_none() {
        errors.at(func.sig.fn_token, "subscription handlers must be `async`");
    }
    let param_ty = match func.sig.inputs.iter().collect::<Vec<_>>().as_slice() {
        [FnArg::Typed(t)] => Some((*t.ty).clone()),
        _ => {
            errors.at(&func.sig.inputs, "a subscription handler takes one parameter: the message, e.g. `event: OrderCreated`");
            None
        }
    };
    if matches!(func.sig.output, syn::ReturnType::Default) {
        errors.at(
            &func.sig.ident,
            "subscription handlers return `Result<(), ovation::Error>`",
        );
    }
    let (Some(topic), Some(name), Some(param_ty), true) =
        (topic, name, param_ty, errors.is_empty())
    else {
        return errors.into_output(quote!(#func));
    };
    let fn_name = &func.sig.ident;
    let p = quote!(::ovation::__private);
    let topic_fn = quote::quote_spanned! {topic.span()=>
        fn __ovation_topic() -> &'static str {
            let topic: &#p::Topic<#param_ty> = &#topic;
            topic.name()
        }
    };
    quote! {
        #func

        const _: () = {
            #topic_fn

            fn __ovation_handle(
                payload: #p::serde_json::Value,
            ) -> #p::Result<
                #p::Pin<#p::Box<dyn #p::Future<Output = #p::Result<(), #p::Error>> + ::core::marker::Send>>,
                #p::String,
            > {
                let message = #p::decode_message::<#param_ty>(payload)?;
                #p::Result::Ok(#p::Box::pin(#fn_name(message)))
            }

            static __OVATION_SUBSCRIPTION: #p::SubscriptionDef = #p::SubscriptionDef {
                name: #name,
                module: ::core::module_path!(),
                topic: __ovation_topic,
                config: #p::SubscriptionConfig { #(#config,)* ..#p::SubscriptionConfig::DEFAULT },
                handler: __ovation_handle,
                location: ::core::concat!(::core::file!(), ":", ::core::line!()),
            };
            #p::inventory::submit! { #p::SubscriptionEntry(&__OVATION_SUBSCRIPTION) }
        };
    }
}

fn lit(expr: &Expr) -> Option<Lit> {
    match expr {
        Expr::Lit(l) => Some(l.lit.clone()),
        _ => None,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

/// Milliseconds in "250ms", "10s", "5m", "1h".
pub(crate) fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("250ms"), Some(250));
        assert_eq!(parse_duration("10s"), Some(10_000));
        assert_eq!(parse_duration("5m"), Some(300_000));
        assert_eq!(parse_duration("1h"), Some(3_600_000));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
    }
}
