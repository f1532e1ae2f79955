//! Calling a deployed app from a program outside it, with the app's own stubs.
//!
//! A program that links the app's crate (for its stubs and types) but hosts none of its
//! services makes a [`Client`] for the app's gateway, and calls endpoints as the app's services
//! do, inside [`Client::run`] (or everywhere, after [`Client::install`]):
//!
//! ```no_run
//! # async fn demo() -> Result<(), ovation::Error> {
//! # mod shop_app { pub mod orders { pub async fn get(_: u32) -> Result<(), ovation::Error> { Ok(()) } } }
//! let shop = ovation::Client::new("http://127.0.0.1:4000")?;
//! let order = shop.run(shop_app::orders::get(7)).await?;
//! # Ok(()) }
//! ```
//!
//! Every call goes over HTTP to the gateway as an outside client's request: unsigned, so only
//! public and `auth` endpoints answer. Calling a private endpoint fails at once with
//! `permission_denied` naming it. [`Client::bearer`] sends a credential for `auth` endpoints,
//! which the app's auth handler checks. The errors are the app's, with their codes, as a
//! service calling another gets them.

use std::future::Future;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::runtime::{self, Runtime};

/// A deployed app, called from outside it through its gateway.
#[derive(Debug, Clone)]
pub struct Client {
    rt: &'static Runtime,
    authorization: Option<Arc<str>>,
}

impl Client {
    /// A client of the app whose gateway is at `gateway` (`http://host:port`, with a path
    /// prefix if the gateway is mounted under one). Calls time out after the default call
    /// timeout; see [`Client::with_config`].
    pub fn new(gateway: &str) -> Result<Client, Error> {
        Client::with_config(gateway, &Config::default())
    }

    /// A client of the gateway at `gateway`, with the call timeout and connect retry of
    /// `config` (its other settings are a server's and mean nothing here).
    pub fn with_config(gateway: &str, config: &Config) -> Result<Client, Error> {
        let url = reqwest::Url::parse(gateway)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Error::invalid_argument(format!(
                    "{gateway:?} is not the URL of an app's gateway: write http://host:port"
                ))
            })?;
        let mut config = config.clone();
        config.hosted_services = Some(Vec::new());
        config.gateway = false;
        config.services = crate::model::services()
            .into_iter()
            .map(|s| (s.to_owned(), url.to_string()))
            .collect();
        let builder = crate::app::RuntimeBuilder::from_config(&config)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        Ok(Client {
            rt: builder.external().build(),
            authorization: None,
        })
    }

    /// The same client, sending `Authorization: Bearer <token>` with every request (for
    /// endpoints behind the app's auth handler).
    pub fn bearer(&self, token: &str) -> Client {
        Client {
            rt: self.rt,
            authorization: Some(format!("Bearer {token}").into()),
        }
    }

    /// Runs `work`, whose calls of the app's stubs go to this client's app.
    pub async fn run<F: Future>(&self, work: F) -> F::Output {
        crate::call::AUTHORIZATION
            .scope(
                self.authorization.clone(),
                runtime::scope(self.rt, None, work),
            )
            .await
    }

    /// Makes this client the program's: stubs called outside any [`Client::run`] use it
    /// (the first client installed stays).
    pub fn install(&self) {
        runtime::set_global(self.rt);
    }
}
