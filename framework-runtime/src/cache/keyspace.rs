//! The typed keyspaces: what a key is, how it becomes a Redis key, and each kind's operations.

use std::marker::PhantomData;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{CacheCluster, Operation, Store, store};
use crate::error::Error;

/// What every keyspace has: its cluster, key pattern and default expiry.
#[derive(Debug, Clone, Copy)]
struct Keyspace {
    cluster: CacheCluster,
    pattern: &'static str,
    expiry: Option<Duration>,
}

/// A key made for one operation: the store to run it on, the Redis key, and its span.
struct Target {
    store: Store,
    key: String,
    span: tracing::Span,
}

impl Keyspace {
    fn operation<'a>(&self, op: &'a str) -> Operation<'a> {
        Operation {
            cluster: self.cluster.name(),
            pattern: self.pattern,
            op,
        }
    }

    /// The Redis key of `key` in this runtime, and the operation's span.
    fn target<K: Serialize + ?Sized>(&self, op: &str, key: &K) -> Result<Target, Error> {
        let store = store(&self.cluster)?;
        let filled = fill(self.pattern, key).map_err(|reason| {
            Error::internal(format!(
                "cache `{}`, keyspace `{}`: {reason}",
                self.cluster.name(),
                self.pattern
            ))
        })?;
        let key = format!("{}{}/{filled}", store.prefix, self.cluster.name());
        let span = self.operation(op).span();
        Ok(Target { store, key, span })
    }

    async fn run<K: Serialize + ?Sized, T: redis::FromRedisValue>(
        &self,
        op: &str,
        key: &K,
        cmd: impl FnOnce(&str) -> redis::Cmd,
    ) -> Result<T, Error> {
        let t = self.target(op, key)?;
        t.store.run(&self.operation(op), &t.span, cmd(&t.key)).await
    }

    /// Runs a write and then sets the default expiry, atomically (`MULTI`/`EXEC`); returns the
    /// write's reply.
    async fn write<K: Serialize + ?Sized, T: redis::FromRedisValue>(
        &self,
        op: &str,
        key: &K,
        cmd: impl FnOnce(&str) -> redis::Cmd,
    ) -> Result<T, Error> {
        let t = self.target(op, key)?;
        let mut pipe = redis::pipe();
        pipe.atomic().add_command(cmd(&t.key));
        if let Some(expiry) = self.expiry {
            pipe.cmd("PEXPIRE").arg(&t.key).arg(millis(expiry)).ignore();
        }
        let (reply,): (T,) = t.store.run(&self.operation(op), &t.span, pipe).await?;
        Ok(reply)
    }

    /// A read that may find nothing: records on its span whether it hit.
    async fn read<K: Serialize + ?Sized, T: redis::FromRedisValue>(
        &self,
        op: &str,
        key: &K,
        cmd: impl FnOnce(&str) -> redis::Cmd,
    ) -> Result<Option<T>, Error> {
        let t = self.target(op, key)?;
        let found: Option<T> = t
            .store
            .run(&self.operation(op), &t.span, cmd(&t.key))
            .await?;
        t.span.record("cache.hit", found.is_some());
        Ok(found)
    }

    /// `SET`, with the default expiry; with `only_new`, only if the key does not exist (then
    /// whether it was set).
    async fn set_raw<K: Serialize + ?Sized>(
        &self,
        op: &str,
        key: &K,
        value: impl redis::ToRedisArgs + Send + Sync,
        only_new: bool,
    ) -> Result<bool, Error> {
        let expiry = self.expiry;
        let reply: Option<String> = self
            .run(op, key, |k| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(k).arg(value);
                if let Some(expiry) = expiry {
                    cmd.arg("PX").arg(millis(expiry));
                }
                if only_new {
                    cmd.arg("NX");
                }
                cmd
            })
            .await?;
        Ok(reply.is_some())
    }

    async fn delete<K: Serialize + ?Sized>(&self, key: &K) -> Result<bool, Error> {
        let n: u64 = self
            .run("delete", key, |k| redis::cmd("DEL").arg(k).to_owned())
            .await?;
        Ok(n > 0)
    }

    fn decode<V: DeserializeOwned>(&self, json: &str) -> Result<V, Error> {
        serde_json::from_str(json).map_err(|e| {
            Error::internal(format!(
                "cache `{}`, keyspace `{}`: a stored value is not what the keyspace holds ({e}); \
                 was it written by another version of the app?",
                self.cluster.name(),
                self.pattern
            ))
        })
    }

    fn encode<V: Serialize + ?Sized>(&self, value: &V) -> Result<String, Error> {
        serde_json::to_string(value).map_err(|e| {
            Error::internal(format!(
                "cache `{}`, keyspace `{}`: the value cannot be written as JSON: {e}",
                self.cluster.name(),
                self.pattern
            ))
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `pattern` with its `:params` filled from `key` (see the module docs of [`crate::cache`]).
fn fill<K: Serialize + ?Sized>(pattern: &str, key: &K) -> Result<String, String> {
    let params: Vec<&str> = pattern
        .split('/')
        .filter_map(|s| s.strip_prefix(':'))
        .collect();
    if pattern.is_empty() || pattern.split('/').any(str::is_empty) {
        return Err("a key pattern is `/`-separated non-empty segments, like `users/:id`".into());
    }
    if params.is_empty() {
        return Err("a key pattern needs a `:param` segment, filled from the key".into());
    }
    if let Some(p) = params.iter().find(|p| p.is_empty()) {
        return Err(format!("a `:param` segment needs a name, not `:{p}`"));
    }
    let value = serde_json::to_value(key).map_err(|e| format!("the key cannot be written: {e}"))?;
    let mut out = String::with_capacity(pattern.len() + 16);
    for (i, segment) in pattern.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let Some(name) = segment.strip_prefix(':') else {
            out.push_str(segment);
            continue;
        };
        let part = match &value {
            Value::Object(fields) => fields.get(name).ok_or_else(|| {
                format!("the key has no field `{name}` for the pattern's `:{name}`")
            })?,
            scalar if params.len() == 1 => scalar,
            _ => {
                return Err(format!(
                    "the pattern has {} parameters, so the key must be a struct with fields {}",
                    params.len(),
                    params
                        .iter()
                        .map(|p| format!("`{p}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        };
        match part {
            Value::String(s) => push_escaped(&mut out, s),
            Value::Number(n) => out.push_str(&n.to_string()),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            _ => {
                return Err(format!(
                    "the key's `{name}` is not a string, number or bool: {part}"
                ));
            }
        }
    }
    Ok(out)
}

/// Appends `text`, with `%` and `/` percent-encoded: no two keys share a Redis key.
fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '/' => out.push_str("%2F"),
            c => out.push(c),
        }
    }
}

/// Declares a keyspace type: the struct, its `const` constructor, expiry and `delete`.
macro_rules! keyspace_type {
    ($(#[$doc:meta])* $name:ident<$($param:ident),+>) => {
        $(#[$doc])*
        pub struct $name<$($param),+> {
            ks: Keyspace,
            types: PhantomData<fn($($param),+)>,
        }

        impl<$($param),+> $name<$($param),+> {
            /// A keyspace of `cluster` whose keys follow `pattern` (e.g. `"users/:id"`), with no
            /// default expiry.
            pub const fn new(cluster: &CacheCluster, pattern: &'static str) -> Self {
                $name {
                    ks: Keyspace { cluster: *cluster, pattern, expiry: None },
                    types: PhantomData,
                }
            }

            /// The default expiry: a key written lives `expiry` from the write (see
            /// [`crate::cache`] for counters).
            pub const fn expire_after(mut self, expiry: Duration) -> Self {
                self.ks.expiry = Some(expiry);
                self
            }

            /// The key pattern.
            pub fn pattern(&self) -> &'static str {
                self.ks.pattern
            }
        }

        impl<$($param: Serialize),+> $name<$($param),+> {
            /// Deletes `key`'s value; whether there was one.
            pub async fn delete(&self, key: &K) -> Result<bool, Error> {
                self.ks.delete(key).await
            }
        }

        impl<$($param),+> std::fmt::Debug for $name<$($param),+> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name))
                    .field("cluster", &self.ks.cluster.name())
                    .field("pattern", &self.ks.pattern)
                    .field("expiry", &self.ks.expiry)
                    .finish()
            }
        }
    };
}

keyspace_type! {
    /// Strings by key.
    StringKeyspace<K>
}

impl<K: Serialize> StringKeyspace<K> {
    /// The string stored at `key`, if any.
    pub async fn get(&self, key: &K) -> Result<Option<String>, Error> {
        self.ks
            .read("get", key, |k| redis::cmd("GET").arg(k).to_owned())
            .await
    }

    /// Stores `value` at `key`.
    pub async fn set(&self, key: &K, value: &str) -> Result<(), Error> {
        self.ks.set_raw("set", key, value, false).await.map(drop)
    }

    /// Stores `value` at `key` unless something is stored there; whether it was stored.
    pub async fn set_if_not_exists(&self, key: &K, value: &str) -> Result<bool, Error> {
        self.ks.set_raw("set_if_not_exists", key, value, true).await
    }
}

keyspace_type! {
    /// 64-bit integers by key, with atomic increments: counters, rate limits.
    IntKeyspace<K>
}

/// `INCRBY`, then the default expiry for a key that has none (one just made): one round trip,
/// atomic, on any Redis version.
const INCREMENT: &str = "local v = redis.call('INCRBY', KEYS[1], ARGV[1]) \
     if ARGV[2] ~= '0' and redis.call('PTTL', KEYS[1]) == -1 then \
       redis.call('PEXPIRE', KEYS[1], ARGV[2]) \
     end \
     return v";

impl<K: Serialize> IntKeyspace<K> {
    /// The number stored at `key`, if any.
    pub async fn get(&self, key: &K) -> Result<Option<i64>, Error> {
        self.ks
            .read("get", key, |k| redis::cmd("GET").arg(k).to_owned())
            .await
    }

    /// Stores `value` at `key`.
    pub async fn set(&self, key: &K, value: i64) -> Result<(), Error> {
        self.ks.set_raw("set", key, value, false).await.map(drop)
    }

    /// Adds `delta` to the number at `key` (0 if none) and returns the result. Atomic: 50 tasks
    /// incrementing at once make 50 increments. A key this creates gets the default expiry; an
    /// existing one keeps its own.
    pub async fn increment(&self, key: &K, delta: i64) -> Result<i64, Error> {
        let expiry = self.ks.expiry.map_or(0, millis);
        self.ks
            .run("increment", key, |k| {
                redis::cmd("EVAL")
                    .arg(INCREMENT)
                    .arg(1)
                    .arg(k)
                    .arg(delta)
                    .arg(expiry)
                    .to_owned()
            })
            .await
    }

    /// Subtracts `delta`; see [`IntKeyspace::increment`].
    pub async fn decrement(&self, key: &K, delta: i64) -> Result<i64, Error> {
        let delta = delta.checked_neg().ok_or_else(|| {
            Error::invalid_argument(format!("cannot decrement by {delta}: out of range"))
        })?;
        self.increment(key, delta).await
    }
}

keyspace_type! {
    /// Values of a serde type by key, stored as JSON.
    StructKeyspace<K, V>
}

impl<K: Serialize, V: Serialize + DeserializeOwned> StructKeyspace<K, V> {
    /// The value stored at `key`, if any.
    pub async fn get(&self, key: &K) -> Result<Option<V>, Error> {
        let json: Option<String> = self
            .ks
            .read("get", key, |k| redis::cmd("GET").arg(k).to_owned())
            .await?;
        json.map(|j| self.ks.decode(&j)).transpose()
    }

    /// Stores `value` at `key`.
    pub async fn set(&self, key: &K, value: &V) -> Result<(), Error> {
        let json = self.ks.encode(value)?;
        self.ks.set_raw("set", key, json, false).await.map(drop)
    }

    /// Stores `value` at `key` unless something is stored there; whether it was stored.
    pub async fn set_if_not_exists(&self, key: &K, value: &V) -> Result<bool, Error> {
        let json = self.ks.encode(value)?;
        self.ks.set_raw("set_if_not_exists", key, json, true).await
    }
}

keyspace_type! {
    /// Lists of values by key (JSON), pushed and popped at either end.
    ListKeyspace<K, V>
}

impl<K: Serialize, V: Serialize + DeserializeOwned> ListKeyspace<K, V> {
    /// Appends `value` to the list at `key`; returns the list's length.
    pub async fn push_back(&self, key: &K, value: &V) -> Result<u64, Error> {
        self.push("push_back", "RPUSH", key, value).await
    }

    /// Prepends `value` to the list at `key`; returns the list's length.
    pub async fn push_front(&self, key: &K, value: &V) -> Result<u64, Error> {
        self.push("push_front", "LPUSH", key, value).await
    }

    /// Removes and returns the list's first value.
    pub async fn pop_front(&self, key: &K) -> Result<Option<V>, Error> {
        self.pop("pop_front", "LPOP", key).await
    }

    /// Removes and returns the list's last value.
    pub async fn pop_back(&self, key: &K) -> Result<Option<V>, Error> {
        self.pop("pop_back", "RPOP", key).await
    }

    async fn push(&self, op: &str, command: &str, key: &K, value: &V) -> Result<u64, Error> {
        let json = self.ks.encode(value)?;
        self.ks
            .write(op, key, |k| redis::cmd(command).arg(k).arg(json).to_owned())
            .await
    }

    async fn pop(&self, op: &str, command: &str, key: &K) -> Result<Option<V>, Error> {
        let json: Option<String> = self
            .ks
            .read(op, key, |k| redis::cmd(command).arg(k).to_owned())
            .await?;
        json.map(|j| self.ks.decode(&j)).transpose()
    }

    /// The list's values, first to last (empty if there is no list).
    pub async fn items(&self, key: &K) -> Result<Vec<V>, Error> {
        let json: Vec<String> = self
            .ks
            .run("items", key, |k| {
                redis::cmd("LRANGE").arg(k).arg(0).arg(-1).to_owned()
            })
            .await?;
        json.iter().map(|j| self.ks.decode(j)).collect()
    }

    /// The list's length.
    pub async fn len(&self, key: &K) -> Result<u64, Error> {
        self.ks
            .run("len", key, |k| redis::cmd("LLEN").arg(k).to_owned())
            .await
    }
}

keyspace_type! {
    /// Sets of values by key (JSON; equal values are stored once).
    SetKeyspace<K, V>
}

impl<K: Serialize, V: Serialize + DeserializeOwned> SetKeyspace<K, V> {
    /// Adds `value` to the set at `key`; whether it was not there yet.
    pub async fn add(&self, key: &K, value: &V) -> Result<bool, Error> {
        let json = self.ks.encode(value)?;
        let added: u64 = self
            .ks
            .write("add", key, |k| {
                redis::cmd("SADD").arg(k).arg(json).to_owned()
            })
            .await?;
        Ok(added > 0)
    }

    /// Removes `value` from the set at `key`; whether it was there.
    pub async fn remove(&self, key: &K, value: &V) -> Result<bool, Error> {
        let json = self.ks.encode(value)?;
        let removed: u64 = self
            .ks
            .run("remove", key, |k| {
                redis::cmd("SREM").arg(k).arg(json).to_owned()
            })
            .await?;
        Ok(removed > 0)
    }

    /// Whether `value` is in the set at `key`.
    pub async fn contains(&self, key: &K, value: &V) -> Result<bool, Error> {
        let json = self.ks.encode(value)?;
        self.ks
            .run("contains", key, |k| {
                redis::cmd("SISMEMBER").arg(k).arg(json).to_owned()
            })
            .await
    }

    /// The set's values, in no particular order (empty if there is no set).
    pub async fn items(&self, key: &K) -> Result<Vec<V>, Error> {
        let json: Vec<String> = self
            .ks
            .run("items", key, |k| redis::cmd("SMEMBERS").arg(k).to_owned())
            .await?;
        json.iter().map(|j| self.ks.decode(j)).collect()
    }

    /// The set's size.
    pub async fn len(&self, key: &K) -> Result<u64, Error> {
        self.ks
            .run("len", key, |k| redis::cmd("SCARD").arg(k).to_owned())
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Two {
        user: i64,
        locale: &'static str,
    }

    #[test]
    fn a_scalar_key_fills_the_one_parameter() {
        assert_eq!(fill("logins/:email", "a@b.c").unwrap(), "logins/a@b.c");
        assert_eq!(fill("users/:id", &42_i64).unwrap(), "users/42");
        assert_eq!(fill("flags/:on/x", &true).unwrap(), "flags/true/x");
    }

    #[test]
    fn a_struct_key_fills_parameters_by_field_name() {
        let key = Two {
            user: 7,
            locale: "fr",
        };
        assert_eq!(fill("p/:user/:locale", &key).unwrap(), "p/7/fr");
        assert_eq!(fill("p/:locale/:user", &key).unwrap(), "p/fr/7");
        let err = fill("p/:user/:region", &key).unwrap_err();
        assert!(err.contains("no field `region`"), "{err}");
    }

    #[test]
    fn slashes_and_percents_in_values_cannot_make_two_keys_collide() {
        let a = fill("x/:a/:b", &serde_json::json!({"a": "1/2", "b": "3"})).unwrap();
        let b = fill("x/:a/:b", &serde_json::json!({"a": "1", "b": "2/3"})).unwrap();
        assert_ne!(a, b);
        assert_eq!(a, "x/1%2F2/3");
        assert_eq!(fill("x/:a", "%2F").unwrap(), "x/%252F");
    }

    #[test]
    fn bad_patterns_and_keys_say_what_is_wrong() {
        assert!(fill("", "k").unwrap_err().contains("non-empty"));
        assert!(fill("a//:b", "k").unwrap_err().contains("non-empty"));
        assert!(fill("static", "k").unwrap_err().contains("`:param`"));
        assert!(fill("a/:", "k").unwrap_err().contains("needs a name"));
        assert!(
            fill("a/:x/:y", "k")
                .unwrap_err()
                .contains("must be a struct with fields `x`, `y`")
        );
        assert!(
            fill("a/:x", &serde_json::json!({"x": [1]}))
                .unwrap_err()
                .contains("not a string, number or bool")
        );
    }
}
