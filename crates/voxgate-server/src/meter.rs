//! The meter: usage accumulated in memory per (app, service, minute) and written to the
//! registry in one transaction per flush.
//!
//! The flush interval is exactly what a `kill -9` can lose; a graceful stop flushes all.
//! A flush that fails puts its rows back, so a registry hiccup delays usage, never drops it.

use foldhash::fast::RandomState;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use voxgate_core::{Catalogue, Reason, ServiceIdx, Timestamp};
use voxgate_registry::{Registry, UsageRow};

const SHARDS: usize = 16;

#[derive(Debug, Clone, Copy, Default)]
struct Cell {
    allowed: u64,
    refused: [u64; 5],
    units_milli: i64,
    /// The second being counted, its count so far, and the busiest second of the minute.
    second: i64,
    in_second: u64,
    peak_per_second: u64,
}

type Key = (Arc<str>, ServiceIdx, i64);

/// What one event adds to the meter.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    Allowed {
        units_milli: i64,
    },
    Refused(Reason),
    /// A settlement's extra charge (positive) or refund (negative).
    Settled {
        units_milli: i64,
    },
}

pub struct Meter {
    shards: Box<[Mutex<HashMap<Key, Cell, RandomState>>]>,
    hasher: RandomState,
    /// Serialises flushes, so rows drained by one flush are written before the next reads.
    flushing: tokio::sync::Mutex<()>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(RandomState::default()))).collect(),
            hasher: RandomState::default(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }
}

impl Meter {
    pub fn record(&self, app: &Arc<str>, service: ServiceIdx, now: Timestamp, event: Event) {
        let minute = now.secs().div_euclid(60) * 60;
        let shard = &self.shards[(self.hasher.hash_one(&**app) as usize) % SHARDS];
        let mut map = shard.lock();
        let cell = map.entry((app.clone(), service, minute)).or_default();
        if !matches!(event, Event::Settled { .. }) {
            let second = now.secs();
            if cell.second == second {
                cell.in_second += 1;
            } else {
                cell.second = second;
                cell.in_second = 1;
            }
            cell.peak_per_second = cell.peak_per_second.max(cell.in_second);
        }
        match event {
            Event::Allowed { units_milli } => {
                cell.allowed += 1;
                cell.units_milli += units_milli;
            }
            Event::Refused(reason) => cell.refused[reason as usize] += 1,
            Event::Settled { units_milli } => cell.units_milli += units_milli,
        }
    }

    fn drain(&self) -> Vec<(Key, Cell)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            out.extend(shard.lock().drain());
        }
        out
    }

    fn put_back(&self, rows: Vec<(Key, Cell)>) {
        for ((app, service, minute), c) in rows {
            let shard = &self.shards[(self.hasher.hash_one(&*app) as usize) % SHARDS];
            let mut map = shard.lock();
            let cell = map.entry((app, service, minute)).or_default();
            cell.allowed += c.allowed;
            for (a, b) in cell.refused.iter_mut().zip(c.refused) {
                *a += b;
            }
            cell.units_milli += c.units_milli;
            cell.peak_per_second = cell.peak_per_second.max(c.peak_per_second);
        }
    }

    /// Writes everything accumulated so far. Returns the number of rows written.
    pub async fn flush(
        &self,
        registry: &Registry,
        catalogue: &Catalogue,
        node_id: &str,
    ) -> anyhow::Result<usize> {
        let _guard = self.flushing.lock().await;
        let drained = self.drain();
        if drained.is_empty() {
            return Ok(0);
        }
        let rows: Vec<UsageRow> = drained
            .iter()
            .map(|((app, service, minute), c)| UsageRow {
                app_id: app.to_string(),
                service: catalogue.service_def(*service).id.clone(),
                minute: *minute,
                allowed: c.allowed,
                refused: c.refused,
                units_milli: c.units_milli,
                peak_per_second: c.peak_per_second,
            })
            .collect();
        match registry.record_usage(node_id, &rows).await {
            Ok(()) => Ok(rows.len()),
            Err(e) => {
                self.put_back(drained);
                Err(e.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failed_flush_keeps_rows_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open(dir.path()).await.unwrap();
        let cat = Catalogue::builtin();
        let meter = Meter::default();
        let app: Arc<str> = "a".into();
        let asr = cat.service("asr").unwrap();
        meter.record(&app, asr, Timestamp::from_secs(61), Event::Allowed { units_milli: 1500 });
        meter.record(&app, asr, Timestamp::from_secs(62), Event::Refused(Reason::Quota));
        meter.record(&app, asr, Timestamp::from_secs(130), Event::Settled { units_milli: -500 });
        registry.close().await;
        assert!(meter.flush(&registry, &cat, "n").await.is_err());
        let registry = Registry::open(dir.path()).await.unwrap();
        assert_eq!(meter.flush(&registry, &cat, "n").await.unwrap(), 2);
        assert_eq!(meter.flush(&registry, &cat, "n").await.unwrap(), 0);
        let sums = registry.units_by_service("a", 0, 3600).await.unwrap();
        assert_eq!(sums, vec![("asr".to_string(), 1000)]);
        let series = registry
            .usage_series("a", None, 0, 3600, voxgate_registry::Step::Minute, &jiff::tz::TimeZone::UTC)
            .await
            .unwrap();
        assert_eq!((series[0].allowed, series[0].refused[Reason::Quota as usize]), (1, 1));
        let stats = registry.usage_stats("a", "asr", 0, 3600).await.unwrap();
        assert_eq!(stats.peak_per_second, 1, "61 s and 62 s are different seconds");
    }
}
