//! Caches: typed keyspaces over Redis.
//!
//! A cache cluster is declared once, and keyspaces over it say what their keys and values are:
//!
//! ```ignore
//! use ovation::cache::{CacheCluster, IntKeyspace, StructKeyspace};
//!
//! static CACHE: CacheCluster = ovation::cache!("users");
//!
//! /// Failed logins per email, counted for a minute from the first one.
//! static FAILED_LOGINS: IntKeyspace<String> =
//!     IntKeyspace::new(&CACHE, "failed-logins/:email").expire_after(Duration::from_secs(60));
//!
//! #[derive(Serialize)]
//! struct ProfileKey { user_id: i64, locale: String }
//! static PROFILES: StructKeyspace<ProfileKey, Profile> =
//!     StructKeyspace::new(&CACHE, "profiles/:user_id/:locale");
//!
//! let failures = FAILED_LOGINS.increment(&email, 1).await?;
//! ```
//!
//! **Keys.** A keyspace's pattern is `/`-separated segments; `:name` segments are filled from the
//! key: a key that serializes as a string, number or bool fills the pattern's one parameter, a
//! struct fills each parameter from the field of that name. `/` and `%` in a value are
//! percent-encoded, so two different keys never make the same Redis key. The Redis key is
//! `<cluster>/<filled pattern>`, so clusters sharing a server do not collide.
//!
//! **Expiry.** A keyspace's default expiry ([`expire_after`](StringKeyspace::expire_after)) is
//! set by every write that stores a value (`set`, `push_*`, `add`). Counters are different:
//! `increment`/`decrement` give a key they create the default expiry and leave an existing
//! key's alone, so "at most 5 in a minute" counts from the first one. Without a default
//! expiry a key lives until deleted (or evicted, as Redis's memory policy says).
//!
//! **Where.** Every cluster lives on `REDIS_URL` when set; otherwise on a `redis-server` Ovation
//! runs itself (see [`crate::infra`]), like the managed Postgres. Each `#[ovation::test]` gets
//! keys of its own (a prefix no other test uses), deleted when it ends.
//!
//! **Failures.** Every operation is bounded: a Redis that is down, unreachable or slow gives an
//! [`unavailable`](crate::ErrCode::Unavailable) error within [`OPERATION_TIMEOUT`], never a hang
//! or a panic. A value that is not what the keyspace says (another program wrote the key) is
//! an `internal` error naming the keyspace. Each operation inside a traced request is a span
//! (`cache get users`) with the keyspace and, for reads, whether it hit.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::Instrument as _;

use crate::error::Error;

mod keyspace;

pub use keyspace::{IntKeyspace, ListKeyspace, SetKeyspace, StringKeyspace, StructKeyspace};

/// Longest a cache operation may take, connecting included, before it fails with
/// `unavailable`.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// A cache cluster: a named Redis the app's keyspaces live in. Declared with [`crate::cache!`].
#[derive(Clone, Copy)]
pub struct CacheCluster(&'static CacheDef);

/// What [`crate::cache!`] registers.
#[doc(hidden)]
#[derive(Debug)]
pub struct CacheDef {
    pub name: &'static str,
    /// `module_path!()` of the declaration: its service is the first module.
    pub module: &'static str,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct CacheEntry(pub &'static CacheDef);

inventory::collect!(CacheEntry);

impl std::fmt::Debug for CacheCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CacheCluster").field(&self.0.name).finish()
    }
}

/// Declares a cache cluster: `static CACHE: CacheCluster = ovation::cache!("users");`. Its
/// keyspaces are made with [`StringKeyspace::new`] and the like. The name (letters, digits, `-`
/// and `_`) prefixes every key of the cluster.
#[macro_export]
macro_rules! cache {
    ($name:literal) => {{
        static __OVATION_CACHE: $crate::cache::CacheDef = $crate::cache::CacheDef {
            name: $name,
            module: ::core::module_path!(),
        };
        $crate::__private::inventory::submit! {
            $crate::cache::CacheEntry(&__OVATION_CACHE)
        }
        $crate::cache::CacheCluster::__new(&__OVATION_CACHE)
    }};
}

impl CacheCluster {
    #[doc(hidden)]
    pub const fn __new(def: &'static CacheDef) -> CacheCluster {
        CacheCluster(def)
    }

    /// The cluster's name.
    pub fn name(&self) -> &'static str {
        self.0.name
    }

    /// The service that declares the cluster.
    pub fn service(&self) -> &'static str {
        crate::runtime::service_of(self.0.module)
    }
}

/// Every cache cluster the app declares, by name.
pub(crate) fn declared() -> Vec<&'static CacheDef> {
    let mut all: Vec<&'static CacheDef> = inventory::iter::<CacheEntry>
        .into_iter()
        .map(|e| e.0)
        .collect();
    all.sort_by_key(|d| d.name);
    all
}

/// Whether the app declares a cache: then processes hosting a service need Redis.
pub(crate) fn in_use() -> bool {
    inventory::iter::<CacheEntry>.into_iter().next().is_some()
}

/// The declarations' mistakes, found before the app serves: a name that is not letters, digits,
/// `-` and `_`, or one declared twice.
pub(crate) fn check_setup() -> Result<(), String> {
    let all = declared();
    for def in &all {
        if def.name.is_empty()
            || !def
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "cache cluster {:?} (in {}): a name is letters, digits, `-` and `_`",
                def.name, def.module
            ));
        }
    }
    if let Some(pair) = all.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(format!(
            "cache cluster `{}` is declared twice, in {} and in {}; give each its own name",
            pair[0].name, pair[0].module, pair[1].module
        ));
    }
    Ok(())
}

/// A connection to the Redis the caches live on, and the prefix of this runtime's keys (empty
/// for an app, one per test environment in tests).
#[derive(Clone)]
pub(crate) struct Store {
    conn: ConnectionManager,
    prefix: Arc<str>,
    /// The server's address without its password, for errors and logs.
    server: Arc<str>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("server", &self.server)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store on the Redis at `url`. Connects on first use, and again whenever the connection
    /// is lost: a Redis that is down when the app starts makes cache operations fail with
    /// `unavailable` until it is up, not the app fail to start.
    pub(crate) fn open(url: &str, prefix: String) -> Result<Store, String> {
        let client = redis::Client::open(url).map_err(|e| {
            format!("the Redis URL is not valid ({e}); expected redis://[:password@]host:port/[db]")
        })?;
        let server = {
            let info = client.get_connection_info();
            format!("{:?}", info.addr())
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(1000)))
            .set_response_timeout(Some(Duration::from_millis(1500)))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(400));
        let conn = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| format!("cannot set up the Redis connection: {e}"))?;
        Ok(Store {
            conn,
            prefix: prefix.into(),
            server: server.into(),
        })
    }

    /// Runs `cmd` (or a pipeline) with the bound, in `span`, mapping Redis's errors to
    /// Ovation's.
    async fn run<T: redis::FromRedisValue>(
        &self,
        what: &Operation<'_>,
        span: &tracing::Span,
        cmd: impl Query,
    ) -> Result<T, Error> {
        let mut conn = self.conn.clone();
        let outcome = tokio::time::timeout(OPERATION_TIMEOUT, cmd.query(&mut conn))
            .instrument(span.clone())
            .await;
        let result = match outcome {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(
                Error::unavailable(format!("cache `{}` is unavailable", what.cluster)).with_source(
                    std::io::Error::other(format!(
                        "Redis at {} did not answer within {OPERATION_TIMEOUT:?}",
                        self.server
                    )),
                ),
            ),
        };
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record("error.code", e.code().as_str());
        }
        result
    }

    /// The error a caller gets: which cache (and, for a bug, which keyspace and operation); what
    /// Redis said, and where it is, is the error's source, logged and never sent.
    fn error(&self, what: &Operation<'_>, e: redis::RedisError) -> Error {
        let unreachable = e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                redis::ErrorKind::AuthenticationFailed | redis::ErrorKind::Io
            );
        let source = std::io::Error::other(format!("Redis at {}: {e}", self.server));
        if unreachable {
            Error::unavailable(format!("cache `{}` is unavailable", what.cluster))
                .with_source(source)
        } else {
            Error::internal(format!(
                "cache `{}`, keyspace `{}`: {} failed",
                what.cluster, what.pattern, what.op
            ))
            .with_source(source)
        }
    }

    /// Deletes every key of this store's prefix: a test environment's, when it ends. Bounded
    /// by [`OPERATION_TIMEOUT`] per round trip; a Redis that is down is left alone.
    pub(crate) async fn delete_all(&self) {
        if self.prefix.is_empty() {
            return;
        }
        let mut conn = self.conn.clone();
        let pattern = format!("{}*", escape_glob(&self.prefix));
        let mut cursor: u64 = 0;
        loop {
            let scan = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(500)
                .to_owned();
            let Ok(Ok((next, keys))) = tokio::time::timeout(
                OPERATION_TIMEOUT,
                scan.query_async::<(u64, Vec<String>)>(&mut conn),
            )
            .await
            else {
                return;
            };
            if !keys.is_empty() {
                let unlink = redis::cmd("UNLINK").arg(&keys).to_owned();
                let _ = tokio::time::timeout(
                    OPERATION_TIMEOUT,
                    unlink.query_async::<redis::Value>(&mut conn),
                )
                .await;
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// `text` with Redis's glob characters escaped, for `SCAN MATCH`.
fn escape_glob(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A command or an atomic pipeline.
trait Query {
    fn query<T: redis::FromRedisValue>(
        self,
        conn: &mut ConnectionManager,
    ) -> impl Future<Output = redis::RedisResult<T>> + Send;
}

impl Query for redis::Cmd {
    async fn query<T: redis::FromRedisValue>(
        self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        self.query_async(conn).await
    }
}

impl Query for redis::Pipeline {
    async fn query<T: redis::FromRedisValue>(
        self,
        conn: &mut ConnectionManager,
    ) -> redis::RedisResult<T> {
        self.query_async(conn).await
    }
}

/// One operation, for its span and its errors.
struct Operation<'a> {
    cluster: &'static str,
    pattern: &'static str,
    op: &'a str,
}

impl Operation<'_> {
    /// The operation's span, a child of the current one; none outside a traced request.
    fn span(&self) -> tracing::Span {
        if !crate::telemetry::exporting() || tracing::Span::current().is_none() {
            return tracing::Span::none();
        }
        tracing::info_span!(
            "cache",
            otel.name = %format!("cache {} {}", self.op, self.cluster),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            db.system = "redis",
            db.operation = self.op,
            cache.cluster = self.cluster,
            cache.keyspace = self.pattern,
            cache.hit = tracing::field::Empty,
            error.code = tracing::field::Empty,
        )
    }
}

/// The store of the runtime the caller runs in.
fn store(cluster: &CacheCluster) -> Result<Store, Error> {
    let rt = crate::runtime::current()?;
    rt.cache.clone().ok_or_else(|| {
        Error::internal(format!(
            "cache `{}` is used in a process that has no cache (one that hosts no service)",
            cluster.name()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_are_escaped() {
        assert_eq!(escape_glob("ovt1x2:"), "ovt1x2:");
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
