//! Pub/Sub figures on both backends (Postgres; NATS JetStream with a managed nats-server): publish→handler latency (p50/p99, one message in
//! flight at a time) and delivered messages per second (many in flight), through the same code
//! paths an app uses.
//!
//! `cargo bench -p ovation-tests --bench pubsub`. Not a test: it asserts nothing about speed.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ovation::testing::TestEnv;
use ovation_tests::report::{Figure, Target};

mod bench {
    use ovation::prelude::*;

    #[derive(Debug, Clone, Serialize, Deserialize)]
    pub struct Stamp {
        /// Microseconds since the Unix epoch when published.
        pub sent_us: u128,
    }

    pub static STAMPS: Topic<Stamp> = ovation::topic!("bench-stamps");

    #[subscription(topic = STAMPS, name = "bench-latency", max_concurrency = 100)]
    async fn on_stamp(s: Stamp) -> Result<(), Error> {
        super::LATENCIES
            .lock()
            .unwrap()
            .push(super::now_us().saturating_sub(s.sent_us));
        Ok(())
    }
}

static LATENCIES: Mutex<Vec<u128>> = Mutex::new(Vec::new());

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn percentile(sorted: &[u128], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn wait_for(count: usize, within: Duration) {
    let deadline = Instant::now() + within;
    while LATENCIES.lock().unwrap().len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} delivered",
            LATENCIES.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `PUBSUB_BENCH_ONLY=nats` (or `postgres`): that backend only, without the baselines, for
    // profiling; its ratios are then not figures (NaN).
    let only = std::env::var("PUBSUB_BENCH_ONLY").unwrap_or_default();
    // The NATS figures' baseline: the same messages straight through async-nats.
    let target = ovation_tests::target_dir();
    let nats = ovation::tooling::ManagedNats::ensure(&target.join("ovation")).unwrap();
    let raw = if only.is_empty() {
        tokio.block_on(raw_jetstream(&nats.url()))
    } else {
        f64::NAN
    };
    println!(
        "raw JetStream, {BATCHED} messages in batches of 100, 16 publishers: delivered {raw:.0} msg/s"
    );
    // The Postgres figures' baseline: the same messages through a queue written by hand.
    let queue = if only.is_empty() {
        tokio.block_on(skip_locked_queue())
    } else {
        f64::NAN
    };
    println!(
        "hand-written SKIP LOCKED queue, {BATCHED} messages in batches of 100, 16 publishers: \
         delivered {queue:.0} msg/s"
    );
    for backend in ["postgres", "nats"] {
        if only.is_empty() || only == backend {
            tokio.block_on(run(backend, raw, queue));
        }
    }
}

/// Delivered messages/s of `BATCHED` messages through an at-least-once queue written by hand
/// on the same Postgres server: 16 publishers insert batches of 100 (one multi-row `INSERT`
/// each); 4 workers each claim up to 25 with `FOR UPDATE SKIP LOCKED` under a lease (at most
/// 100 unacknowledged, as the bench subscription's `max_concurrency`), decode them, and
/// acknowledge each claim with one `DELETE`. What Ovation's Postgres Pub/Sub does beyond this
/// (an outbox beside the publisher's data, a delivery row per subscription, retries with
/// backoff, dead letters, tracing) is its overhead.
async fn skip_locked_queue() -> f64 {
    use ovation::sqlx;
    let server = ovation::testing::test_server().await.unwrap();
    let database = format!("bench_queue_{}", std::process::id());
    server.create_database(&database).await.unwrap();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(20)
        .connect_with(server.options(&database))
        .await
        .unwrap();
    sqlx::query(
        "CREATE TABLE queue (
             id BIGSERIAL PRIMARY KEY,
             payload JSONB NOT NULL,
             leased_until TIMESTAMPTZ
         )",
    )
    .execute(&pool)
    .await
    .unwrap();
    let delivered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (pool, delivered) = (pool.clone(), delivered.clone());
            tokio::spawn(async move {
                while delivered.load(std::sync::atomic::Ordering::Relaxed) < BATCHED {
                    let claimed: Vec<(i64, serde_json::Value)> = sqlx::query_as(
                        "UPDATE queue SET leased_until = now() + interval '30 seconds'
                         WHERE id IN (SELECT id FROM queue
                                      WHERE leased_until IS NULL OR leased_until < now()
                                      ORDER BY id LIMIT 25 FOR UPDATE SKIP LOCKED)
                         RETURNING id, payload",
                    )
                    .fetch_all(&pool)
                    .await
                    .unwrap();
                    if claimed.is_empty() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let ids: Vec<i64> = claimed
                        .into_iter()
                        .map(|(id, payload)| {
                            let _: bench::Stamp = serde_json::from_value(payload).unwrap();
                            id
                        })
                        .collect();
                    sqlx::query("DELETE FROM queue WHERE id = ANY($1)")
                        .bind(&ids)
                        .execute(&pool)
                        .await
                        .unwrap();
                    delivered.fetch_add(ids.len(), std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    let publishers: Vec<_> = (0..16)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                for _ in 0..BATCHED / 16 / 100 {
                    let payloads: Vec<serde_json::Value> = (0..100)
                        .map(|_| serde_json::json!(bench::Stamp { sent_us: now_us() }))
                        .collect();
                    sqlx::query("INSERT INTO queue (payload) SELECT * FROM unnest($1::jsonb[])")
                        .bind(&payloads)
                        .execute(&pool)
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    for w in workers {
        w.await.unwrap();
    }
    let rate = BATCHED as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    let _ = server.drop_database(&database).await;
    rate
}

/// Messages in the batched runs.
const BATCHED: usize = (20_000 / 16 / 100) * 100 * 16;

/// Delivered messages/s of `BATCHED` messages published in batches of 100 by 16 publishers
/// (each batch pipelined, then its acks awaited, as Ovation's NATS publish does) and consumed
/// by a durable pull consumer with explicit acks and at most 100 unacknowledged — what the
/// bench subscription's `max_concurrency` gives Ovation's consumer — with no Ovation at all.
async fn raw_jetstream(url: &str) -> f64 {
    use async_nats::jetstream::{self, consumer::pull, stream};
    use futures::StreamExt;
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let name = format!("bench_raw_{}", std::process::id());
    let subject = format!("{name}.stamps");
    let stream = js
        .get_or_create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 100,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut messages = consumer.messages().await.unwrap();
        let mut delivered = 0;
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let _: bench::Stamp = serde_json::from_slice(&message.payload).unwrap();
            message.ack().await.unwrap();
            delivered += 1;
            if delivered == BATCHED {
                break;
            }
        }
    });
    let publishers: Vec<_> = (0..16)
        .map(|_| {
            let (js, subject) = (js.clone(), subject.clone());
            tokio::spawn(async move {
                for _ in 0..BATCHED / 16 / 100 {
                    let mut acks = Vec::with_capacity(100);
                    for _ in 0..100 {
                        let payload =
                            serde_json::to_vec(&bench::Stamp { sent_us: now_us() }).unwrap();
                        acks.push(js.publish(subject.clone(), payload.into()).await.unwrap());
                    }
                    for ack in acks {
                        ack.await.unwrap();
                    }
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    reader.await.unwrap();
    let rate = BATCHED as f64 / started.elapsed().as_secs_f64();
    let _ = js.delete_stream(&name).await;
    rate
}

async fn run(backend: &'static str, raw_jetstream: f64, skip_locked_queue: f64) {
    {
        LATENCIES.lock().unwrap().clear();
        let env = match backend {
            "nats" => TestEnv::with_nats().await.unwrap(),
            _ => TestEnv::new().await.unwrap(),
        };
        env.run(async {
            // Warm-up: connections, prepared statements.
            for _ in 0..50 {
                bench::STAMPS.publish(&bench::Stamp { sent_us: now_us() }).await.unwrap();
            }
            wait_for(50, Duration::from_secs(30)).await;

            // Latency: one message in flight at a time.
            LATENCIES.lock().unwrap().clear();
            let n = 500;
            for i in 0..n {
                bench::STAMPS.publish(&bench::Stamp { sent_us: now_us() }).await.unwrap();
                wait_for(i + 1, Duration::from_secs(30)).await;
            }
            let mut lat = LATENCIES.lock().unwrap().clone();
            lat.sort_unstable();
            println!(
                "{backend:<9} publish->handler latency, 1 in flight, n={n}: p50 {:.2} ms, p99 {:.2} ms",
                percentile(&lat, 0.50),
                percentile(&lat, 0.99)
            );
            let p50 = Figure::new(
                "Pub/Sub",
                format!("{backend}: publish→handler p50, one in flight"),
                percentile(&lat, 0.50),
                "ms",
            );
            match backend {
                "postgres" => p50.target(Target::AtMost(10.0)).record(),
                _ => p50.record(),
            }
            Figure::new(
                "Pub/Sub",
                format!("{backend}: publish→handler p99, one in flight"),
                percentile(&lat, 0.99),
                "ms",
            )
            .record();

            // Throughput: 16 publishers, 5,000 messages.
            LATENCIES.lock().unwrap().clear();
            let total = 5_000;
            let started = Instant::now();
            let publishers: Vec<_> = (0..16)
                .map(|_| {
                    ovation::spawn(async move {
                        for _ in 0..total / 16 {
                            bench::STAMPS.publish(&bench::Stamp { sent_us: now_us() }).await.unwrap();
                        }
                    })
                })
                .collect();
            for p in publishers {
                p.await.unwrap();
            }
            let published = started.elapsed();
            let sent = (total / 16) * 16;
            wait_for(sent, Duration::from_secs(120)).await;
            let delivered = started.elapsed();
            let mut lat = LATENCIES.lock().unwrap().clone();
            lat.sort_unstable();
            println!(
                "{backend:<9} {sent} messages, 16 publishers: published {:.0} msg/s, delivered {:.0} msg/s, latency p50 {:.1} ms, p99 {:.1} ms",
                sent as f64 / published.as_secs_f64(),
                sent as f64 / delivered.as_secs_f64(),
                percentile(&lat, 0.50),
                percentile(&lat, 0.99)
            );
            Figure::new(
                "Pub/Sub",
                format!("{backend}: delivered msg/s, single publishes from 16 publishers"),
                sent as f64 / delivered.as_secs_f64(),
                "msg/s",
            )
            .record();
            // Batched: 16 publishers, batches of 100.
            LATENCIES.lock().unwrap().clear();
            let started = Instant::now();
            let publishers: Vec<_> = (0..16)
                .map(|_| {
                    ovation::spawn(async move {
                        for _ in 0..BATCHED / 16 / 100 {
                            let batch: Vec<bench::Stamp> =
                                (0..100).map(|_| bench::Stamp { sent_us: now_us() }).collect();
                            bench::STAMPS.publish_batch(&batch).await.unwrap();
                        }
                    })
                })
                .collect();
            for p in publishers {
                p.await.unwrap();
            }
            let published = started.elapsed();
            let sent = BATCHED;
            wait_for(sent, Duration::from_secs(300)).await;
            let delivered = started.elapsed();
            let mut lat = LATENCIES.lock().unwrap().clone();
            lat.sort_unstable();
            println!(
                "{backend:<9} {sent} messages in batches of 100, 16 publishers: published {:.0} msg/s, delivered {:.0} msg/s, latency p50 {:.1} ms, p99 {:.1} ms",
                sent as f64 / published.as_secs_f64(),
                sent as f64 / delivered.as_secs_f64(),
                percentile(&lat, 0.50),
                percentile(&lat, 0.99)
            );
            let figure = Figure::new(
                "Pub/Sub",
                format!("{backend}: delivered msg/s, batches of 100 from 16 publishers"),
                sent as f64 / delivered.as_secs_f64(),
                "msg/s",
            );
            match backend {
                "postgres" => figure
                    .against(
                        "a hand-written SKIP LOCKED queue, same server and messages",
                        skip_locked_queue,
                    )
                    .target(Target::RatioAtLeast(0.80)),
                _ => figure
                    .against("raw JetStream (async-nats), same messages and limits", raw_jetstream)
                    .target(Target::RatioAtLeast(0.85)),
            }
            .record();
        })
        .await
        .unwrap();
        env.close().await;
    }
}
