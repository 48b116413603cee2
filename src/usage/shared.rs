//! Cluster-wide usage in Redis (`[coordination] backend = "redis"`): every replica adds its
//! entries to per-hour hashes (`fluxgate:usage:<hour>`, fields `<client>\t<model>\t<what>`,
//! indexed by the sorted set `fluxgate:usage:hours`), so `/v1/usage` on any replica answers for
//! the whole cluster. Entries go through a bounded queue to one writer task; when Redis does not
//! answer they stay in this replica's journal and totals only, and `/v1/usage` falls back to them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_util::task::TaskTracker;

use super::{BUCKET_SECS, Entry, Row, Totals, period};
use crate::clients::Period;
use crate::coordination::{REDIS_TIMEOUT, Redis, RedisError};

/// Entries waiting for the writer; beyond it an entry reaches only this replica's totals.
const QUEUE: usize = 10_000;
const HOURS: &str = "fluxgate:usage:hours";

fn bucket(hour: u64) -> String {
    format!("fluxgate:usage:{hour}")
}

/// What `client` was billed in the budget period that began at `start` (the base of its shared
/// budget), kept a little longer than the period.
pub(super) fn spent_key(client: &str, period: Period, start: u64) -> String {
    let name = match period {
        Period::Day => "day",
        Period::Month => "month",
    };
    format!("fluxgate:spent:{{{client}}}:{name}:{start}")
}

/// Spent counters outlive their period by this much (a month is at most 31 days).
const SPENT_KEPT_SECS: u64 = 32 * 86_400;

pub(super) struct SharedUsage {
    redis: Arc<Redis>,
    queue: mpsc::Sender<Entry>,
}

impl SharedUsage {
    pub(super) fn start(redis: Arc<Redis>) -> SharedUsage {
        let (queue, mut entries) = mpsc::channel::<Entry>(QUEUE);
        let writer = redis.clone();
        let tasks = TaskTracker::new();
        tasks.spawn(async move {
            while let Some(entry) = entries.recv().await {
                if let Err(e) = write(&writer, &entry).await {
                    tracing::warn!(error = %e, "a usage entry reached only this replica's totals (Redis does not answer)");
                }
            }
        });
        tasks.close();
        SharedUsage { redis, queue }
    }

    pub(super) fn add(&self, entry: Entry) {
        if self.queue.try_send(entry).is_err() {
            tracing::warn!("the shared usage queue is full; an entry reached only this replica's totals");
        }
    }

    /// The cluster's rows since `from` (an hour's start).
    pub(super) async fn rows(&self, from: u64) -> Result<Vec<Row>, RedisError> {
        let mut connection = self.redis.connection().await?;
        let answer = async {
            let hours: Vec<u64> = connection.zrangebyscore(HOURS, from, "+inf").await?;
            let mut rows: BTreeMap<(String, String), Totals> = BTreeMap::new();
            for hour in hours {
                let fields: HashMap<String, f64> = connection.hgetall(bucket(hour)).await?;
                for (field, value) in fields {
                    let mut parts = field.splitn(3, '\t');
                    let (Some(client), Some(model), Some(what)) = (parts.next(), parts.next(), parts.next())
                    else {
                        continue;
                    };
                    let totals = rows.entry((client.to_owned(), model.to_owned())).or_default();
                    match what {
                        "images" => totals.images += value as u64,
                        "price_usd" => totals.price_usd += value,
                        "upstream_cost_usd" => totals.upstream_cost_usd += value,
                        kind => {
                            if let Some(kind) = kind.strip_prefix("failed:") {
                                *totals.failures.entry(kind.to_owned()).or_default() += value as u64;
                            }
                        }
                    }
                }
            }
            Ok::<_, redis::RedisError>(rows)
        };
        let rows = timeout(REDIS_TIMEOUT * 4, answer)
            .await
            .map_err(|_| RedisError("timed out".into()))?
            .map_err(|e| RedisError(e.to_string()))?;
        Ok(rows.into_iter().map(|((client_id, model), totals)| Row { client_id, model, totals }).collect())
    }
}

async fn write(redis: &Redis, entry: &Entry) -> Result<(), RedisError> {
    let (at, client, model) = match entry {
        Entry::Billed { at, client, model, .. } | Entry::Failed { at, client, model, .. } => {
            (*at, client, model)
        }
    };
    let hour = at - at % BUCKET_SECS;
    let field = |what: &str| format!("{client}\t{model}\t{what}");
    let key = bucket(hour);
    let mut pipe = redis::pipe();
    pipe.atomic().zadd(HOURS, hour, hour).ignore();
    match entry {
        Entry::Billed { price_usd, upstream_cost_usd, .. } => {
            for period in [Period::Day, Period::Month] {
                let spent = spent_key(client, period, period::start(period, at));
                pipe.cmd("INCRBYFLOAT").arg(&spent).arg(*price_usd).ignore();
                pipe.expire(&spent, SPENT_KEPT_SECS as i64).ignore();
            }
            pipe.hincr(&key, field("images"), 1).ignore();
            pipe.cmd("HINCRBYFLOAT").arg(&key).arg(field("price_usd")).arg(*price_usd).ignore();
            if let Some(cost) = upstream_cost_usd {
                pipe.cmd("HINCRBYFLOAT").arg(&key).arg(field("upstream_cost_usd")).arg(*cost).ignore();
            }
        }
        Entry::Failed { kind, .. } => {
            pipe.hincr(&key, field(&format!("failed:{kind}")), 1).ignore();
        }
    }
    let mut connection = redis.connection().await?;
    timeout(REDIS_TIMEOUT, pipe.query_async::<()>(&mut connection))
        .await
        .map_err(|_| RedisError("timed out".into()))?
        .map_err(|e| RedisError(e.to_string()))
}
