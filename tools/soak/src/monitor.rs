//! The monitor, every 250 ms while the run lasts:
//! - samples the outbox (lag = events not yet delivered, oldest undelivered age);
//! - scrapes each worker's counters (acked, retries, reclaims, late acks, ...), kept per
//!   incarnation because a restarted worker starts from zero;
//! - supervises the workers: one that exits without being told to is a finding, and is
//!   restarted so the run goes on with three workers.
//!
//! Slots busy with a fault are skipped (try_lock): a frozen worker is neither scraped nor
//! mistaken for a dead one.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::future::join_all;
use outbox_harness::prom;
use outbox_worker::metrics as m;
use tokio_util::sync::CancellationToken;

use crate::{
    check::Findings,
    harness::{Clock, Db, Workers},
};

pub const PERIOD: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the start of the run.
    pub t: f64,
    /// Events pending or processing.
    pub lag: i64,
    /// Age of the oldest undelivered event, seconds.
    pub oldest_age: f64,
    /// Acks seen so far, summed over every worker incarnation.
    pub acked: f64,
}

/// Counters of one incarnation: "name{labels}" -> value, as last scraped.
type Counters = BTreeMap<String, f64>;

pub struct Monitor {
    db: Db,
    /// Since when the database has been unreachable, if it is.
    db_gap_since: Mutex<Option<f64>>,
    workers: Arc<Workers>,
    http: reqwest::Client,
    findings: Arc<Findings>,
    clock: Clock,
    samples: Mutex<Vec<Sample>>,
    counters: Mutex<HashMap<String, Counters>>,
}

impl Monitor {
    pub fn new(
        db: Db,
        workers: Arc<Workers>,
        http: reqwest::Client,
        findings: Arc<Findings>,
        clock: Clock,
    ) -> Arc<Monitor> {
        Arc::new(Monitor {
            db,
            db_gap_since: Mutex::new(None),
            workers,
            http,
            findings,
            clock,
            samples: Mutex::new(Vec::new()),
            counters: Mutex::new(HashMap::new()),
        })
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticker = tokio::time::interval(PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.cancelled() => return,
            }
            self.supervise().await;
            self.scrape().await;
            // A sample fails when the shared server is away (someone restarted it): an
            // outside event the workers must ride out, noted with its duration.
            let sampled = self.sample().await;
            let mut gap = self.db_gap_since.lock().unwrap();
            match (sampled, *gap) {
                (Err(e), None) => {
                    eprintln!("outbox-soak: the database is unreachable: {e:#}");
                    *gap = Some(self.clock.now());
                }
                (Ok(()), Some(since)) => {
                    self.findings.note(format!(
                        "the database was unreachable from {since:.1} s to {:.1} s of the run (not a fault of the soak's: a restart by someone else?)",
                        self.clock.now()
                    ));
                    *gap = None;
                }
                _ => {}
            }
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    pub fn last(&self) -> Option<Sample> {
        self.samples.lock().unwrap().last().copied()
    }

    async fn sample(&self) -> anyhow::Result<()> {
        let row = self
            .db
            .get()
            .await?
            .query_one(
                "SELECT count(*) FILTER (WHERE status <> 'failed'),
                        coalesce(extract(epoch FROM now() - min(created_at)
                                 FILTER (WHERE status <> 'failed')), 0)::float8
                 FROM outbox_event_states",
                &[],
            )
            .await?;
        let s = Sample {
            t: self.clock.now(),
            lag: row.get(0),
            oldest_age: row.get(1),
            acked: self.total(m::ACKED_TOTAL),
        };
        self.samples.lock().unwrap().push(s);
        Ok(())
    }

    /// Restart any worker that exited without a fault asking it to.
    async fn supervise(&self) {
        for (slot, lock) in self.workers.slots.iter().enumerate() {
            let Ok(mut guard) = lock.try_lock() else {
                continue;
            };
            let Some(w) = guard.as_mut() else { continue };
            let Some(status) = w.exited() else { continue };
            let tail = w.log_tail(15);
            let what = format!(
                "worker {} exited by itself ({status}); log {}:\n{tail}",
                w.id,
                w.log.display()
            );
            // The metrics port is picked free then bound by the worker: someone else may
            // take it in between. That is the soak's problem, not the worker's.
            if tail.contains("cannot listen on OUTBOX_METRICS_ADDR") {
                self.findings.harness(what);
            } else {
                self.findings.violation(what);
            }
            match self.workers.spawn(slot) {
                Ok(w) => *guard = Some(w),
                Err(e) => self
                    .findings
                    .harness(format!("cannot restart worker slot {}: {e:#}", slot + 1)),
            }
        }
    }

    /// Scrape every worker not busy with a fault; a scrape that fails keeps the old values.
    pub async fn scrape(&self) {
        let mut targets = Vec::new();
        for lock in &self.workers.slots {
            if let Ok(guard) = lock.try_lock()
                && let Some(w) = guard.as_ref()
            {
                targets.push((w.id.clone(), w.metrics_url.clone()));
            }
        }
        let scrapes = targets.into_iter().map(|(id, url)| {
            let http = self.http.clone();
            async move {
                let text = http
                    .get(format!("{url}/metrics"))
                    .timeout(Duration::from_millis(800))
                    .send()
                    .await
                    .ok()?
                    .text()
                    .await
                    .ok()?;
                Some((id, prom::counters(&text)))
            }
        });
        let results = join_all(scrapes).await;
        let mut counters = self.counters.lock().unwrap();
        for (id, c) in results.into_iter().flatten() {
            counters.insert(id, c);
        }
    }

    /// A counter summed over every incarnation and label set.
    fn total(&self, name: &str) -> f64 {
        let counters = self.counters.lock().unwrap();
        counters
            .values()
            .flat_map(|c| c.iter())
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .fold(0.0, |a, b| a + b)
    }

    /// Every counter summed over incarnations, by "name{labels}" (the report's figures).
    pub fn counter_totals(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for c in self.counters.lock().unwrap().values() {
            for (k, v) in c {
                *out.entry(k.clone()).or_insert(0.0) += v;
            }
        }
        out
    }
}
