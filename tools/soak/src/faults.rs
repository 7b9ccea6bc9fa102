//! The chaos schedule: one fault at a time, separated by random gaps, drawn from a shuffled
//! deck holding every enabled kind once (so even a short run meets every kind), with
//! parameters from the seeded RNG.
//!
//! Process and connection faults aim at a worker caught holding claimed events, so they land
//! mid-batch; `held` records how many events a fault really caught (a batch may finish in
//! the instant before the signal), and how long those took to be delivered. Which worker is
//! hit depends on timing; the schedule of kinds and parameters does not.
//!
//! Each fault records when it started and when it ended (the system whole again: the worker
//! restarted, the proxy passing through); recovery is measured from that end (report.rs).

use std::{sync::Arc, time::Duration};

use anyhow::Context;
use clap::ValueEnum;
use rand::{Rng, SeedableRng, rngs::StdRng, seq::SliceRandom};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use outbox_harness::fault_proxy::Proxy;

use crate::{
    check::Findings,
    harness::{self, Clock, Db, Workers},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Kind {
    /// SIGKILL a worker, restart it after a moment (its leases expire, the reclaimer acts).
    Sigkill,
    /// SIGTERM a worker, require exit 0 (graceful stop, claimed events released), restart.
    Sigterm,
    /// SIGSTOP a worker past its lease, then SIGCONT (its late writes must change nothing).
    Sigstop,
    /// pg_terminate_backend on one worker's connections, or on all of them.
    PgTerminate,
    /// The proxy refuses connections for a few seconds.
    ProxyRefuse,
    /// Whole-request 429 for a few requests.
    ProxyStatus429,
    /// Whole-request 503 for a few requests.
    ProxyStatus503,
    /// Requests held past the worker's request timeout (some forwarded first).
    ProxyDelay,
    /// Connections reset mid-answer (some after the engine applied the write).
    ProxyReset,
    /// Chosen `_bulk` items answered 429/503 although the engine applied them.
    ProxyItems,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sigkill => "sigkill",
            Kind::Sigterm => "sigterm",
            Kind::Sigstop => "sigstop",
            Kind::PgTerminate => "pg_terminate",
            Kind::ProxyRefuse => "proxy_refuse",
            Kind::ProxyStatus429 => "proxy_status_429",
            Kind::ProxyStatus503 => "proxy_status_503",
            Kind::ProxyDelay => "proxy_delay",
            Kind::ProxyReset => "proxy_reset",
            Kind::ProxyItems => "proxy_items",
        }
    }
}

/// One injected fault.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FaultRecord {
    pub kind: &'static str,
    pub detail: Value,
    /// Seconds since the start of the run.
    pub started_s: f64,
    pub ended_s: f64,
    /// From `ended_s` until the lag was back under the threshold (report.rs).
    pub recovery_s: Option<f64>,
    /// From `ended_s` until the next ack was seen.
    pub next_ack_s: Option<f64>,
    /// Events the hit worker held (claimed, in flight) when the fault struck.
    pub held: usize,
    /// From `started_s` until every held event was delivered (acked, or failed for its
    /// injected reason): how long the reclaimer, the release or the retry took.
    pub held_delivered_s: Option<f64>,
}

/// Timing of the schedule.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Mean gap between two faults; each gap is uniform in [0.5, 1.5] x this.
    pub mean_gap: f64,
    /// Longest proxy refusal.
    pub max_refuse: f64,
    /// Longest time a killed worker stays down.
    pub max_down: f64,
}

/// What a fault acts on.
pub struct Targets {
    pub workers: Arc<Workers>,
    pub proxy: Arc<Proxy>,
    /// An admin connection to the run's schema (not matching the workers' pattern).
    pub admin: Arc<Db>,
    pub findings: Arc<Findings>,
    pub clock: Clock,
}

pub struct Chaos {
    /// How many events the current fault caught in flight (see `caught`), and the watch
    /// timing their delivery (started at once: the fault itself may last seconds).
    held: usize,
    watch: Option<JoinHandle<Option<f64>>>,
    /// When the current fault struck its worker: its start (not the start of the search
    /// for a busy worker).
    struck_s: Option<f64>,
    rng: StdRng,
    kinds: Vec<Kind>,
    deck: Vec<Kind>,
    timing: Timing,
    t: Targets,
}

impl Chaos {
    pub fn new(seed: u64, kinds: Vec<Kind>, timing: Timing, targets: Targets) -> Chaos {
        Chaos {
            held: 0,
            watch: None,
            struck_s: None,
            rng: StdRng::seed_from_u64(seed ^ 0x6368616f73),
            kinds,
            deck: Vec::new(),
            timing,
            t: targets,
        }
    }

    fn next_kind(&mut self) -> Kind {
        if self.deck.is_empty() {
            self.deck = self.kinds.clone();
            self.deck.shuffle(&mut self.rng);
        }
        self.deck.pop().expect("at least one fault kind")
    }

    /// Inject faults until `stop`; the fault in progress then completes, so the system is
    /// whole (all workers running, proxy passing through) when this returns.
    pub async fn run(mut self, stop: CancellationToken) -> Vec<FaultRecord> {
        let mut records = Vec::new();
        if self.kinds.is_empty() {
            return records;
        }
        let mut watches = Vec::new();
        loop {
            let gap = self.timing.mean_gap * self.rng.random_range(0.5..1.5);
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(gap)) => {}
                _ = stop.cancelled() => break,
            }
            let kind = self.next_kind();
            let before_s = self.t.clock.now();
            self.held = 0;
            self.watch = None;
            self.struck_s = None;
            let detail = match self.inject(kind).await {
                Ok(d) => d,
                Err(e) => {
                    // A harness failure (e.g. the control API did not answer), not a
                    // finding about the worker; reported so the run is not trusted blindly.
                    self.t.findings.harness(format!(
                        "fault {} could not be injected: {e:#}",
                        kind.name()
                    ));
                    json!({"error": format!("{e:#}")})
                }
            };
            let ended_s = self.t.clock.now();
            let started_s = self.struck_s.unwrap_or(before_s);
            eprintln!(
                "outbox-soak: [{started_s:6.1}s] {} {} ({:.1} s)",
                kind.name(),
                detail,
                ended_s - started_s
            );
            if let Some(watch) = self.watch.take() {
                watches.push((records.len(), watch));
            }
            records.push(FaultRecord {
                kind: kind.name(),
                detail,
                started_s,
                ended_s,
                recovery_s: None,
                next_ack_s: None,
                held: self.held,
                held_delivered_s: None,
            });
        }
        for (i, watch) in watches {
            records[i].held_delivered_s = watch.await.ok().flatten();
        }
        // Whatever happened above, leave the proxy passing through.
        if let Err(e) = self.t.proxy.control.clear().await {
            self.t
                .findings
                .harness(format!("could not clear the proxy fault: {e:#}"));
        }
        records
    }

    async fn inject(&mut self, kind: Kind) -> anyhow::Result<Value> {
        match kind {
            Kind::Sigkill => self.sigkill().await,
            Kind::Sigterm => self.sigterm().await,
            Kind::Sigstop => self.sigstop().await,
            Kind::PgTerminate => self.pg_terminate().await,
            Kind::ProxyRefuse => {
                let secs = self.rng.random_range(1.0..self.timing.max_refuse.max(1.5));
                self.t.proxy.control.set(&json!({"kind": "refuse"})).await?;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
                self.t.proxy.control.clear().await?;
                Ok(json!({"seconds": round1(secs)}))
            }
            Kind::ProxyStatus429 | Kind::ProxyStatus503 => {
                let status = if kind == Kind::ProxyStatus429 {
                    429
                } else {
                    503
                };
                let spec = json!({"kind": "status", "status": status,
                                  "times": self.rng.random_range(2..=10)});
                self.proxy_times(spec).await
            }
            Kind::ProxyDelay => {
                // Past the worker's request timeout, so the worker gives up on the request
                // while (after_upstream) the engine may already have applied it.
                let timeout_ms =
                    (self.t.workers.env().request_timeout_seconds * 1000.0).round() as u64;
                let spec = json!({
                    "kind": "delay",
                    "ms": timeout_ms + self.rng.random_range(500..2000),
                    "after_upstream": self.rng.random_bool(0.5),
                    "drop": self.rng.random_bool(0.3),
                    "times": self.rng.random_range(1..=4),
                });
                self.proxy_times(spec).await
            }
            Kind::ProxyReset => {
                let spec = json!({
                    "kind": "reset",
                    "after_upstream": self.rng.random_bool(0.5),
                    "at": if self.rng.random_bool(0.5) { "headers" } else { "body" },
                    "times": self.rng.random_range(1..=4),
                });
                self.proxy_times(spec).await
            }
            Kind::ProxyItems => {
                let spec = json!({
                    "kind": "items",
                    "status": if self.rng.random_bool(0.75) { 429 } else { 503 },
                    "fraction": round1(self.rng.random_range(0.1..0.6)),
                    "times": self.rng.random_range(3..=10),
                    "seed": self.rng.random::<u32>(),
                });
                self.proxy_times(spec).await
            }
        }
    }

    /// Set a fault limited by `times` and wait until the requests used it up (it clears
    /// itself); if the workers send too few requests meanwhile, clear it.
    async fn proxy_times(&mut self, spec: Value) -> anyhow::Result<Value> {
        self.t.proxy.control.set(&spec).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut used_up = false;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if !self.t.proxy.control.active().await? {
                used_up = true;
                break;
            }
        }
        if !used_up {
            self.t.proxy.control.clear().await?;
        }
        let mut detail = spec;
        detail["used_up"] = json!(used_up);
        Ok(detail)
    }

    fn pick_slot(&mut self) -> usize {
        self.rng.random_range(0..self.t.workers.slots.len())
    }

    /// A worker caught holding claimed events, so the fault can land mid-batch (an idle
    /// worker killed or frozen proves little: nothing of its own is in flight). Polls for up
    /// to 3 s; then any worker. Returns the slot and the ids it held when seen.
    async fn pick_busy(&mut self) -> anyhow::Result<(usize, Vec<i64>)> {
        // Drawn whether used or not, so the RNG stream (the rest of the schedule) never
        // depends on timing.
        let fallback = self.pick_slot();
        let mut ids = Vec::with_capacity(self.t.workers.slots.len());
        for lock in &self.t.workers.slots {
            ids.push(lock.lock().await.as_ref().map(|w| w.id.clone()));
        }
        let admin = self.t.admin.get().await?;
        let stmt = admin
            .prepare(
                "SELECT lease_owner, array_agg(id) FROM outbox_event_states
                 WHERE status = 'processing' GROUP BY 1 ORDER BY count(*) DESC",
            )
            .await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while tokio::time::Instant::now() < deadline {
            for row in admin.query(&stmt, &[]).await? {
                let owner: Option<String> = row.get(0);
                if let Some(slot) = ids.iter().position(|id| id.is_some() && *id == owner) {
                    return Ok((slot, row.get(1)));
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok((fallback, Vec::new()))
    }

    /// Which of `seen` `worker` still holds now, when the fault strikes (a batch seen a
    /// moment ago may have finished first): the events the fault really caught. A watch
    /// times their delivery from now. Called just after the signal for kills and freezes
    /// (what was cut off), just before it for SIGTERM (what the graceful stop must settle).
    async fn caught(&mut self, worker: &str, seen: Vec<i64>) -> anyhow::Result<usize> {
        let now = self.t.clock.now();
        self.struck_s = Some(now);
        if seen.is_empty() {
            return Ok(0);
        }
        let held: Vec<i64> = self
            .t
            .admin
            .get()
            .await?
            .query(
                "SELECT id FROM outbox_event_states
                 WHERE id = ANY($1) AND status = 'processing' AND lease_owner = $2",
                &[&seen, &worker],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        self.held = held.len();
        if !held.is_empty() {
            self.watch = Some(tokio::spawn(watch_delivery(
                self.t.admin.clone(),
                held,
                self.t.clock,
                now,
            )));
        }
        Ok(self.held)
    }

    async fn sigkill(&mut self) -> anyhow::Result<Value> {
        let (slot, seen) = self.pick_busy().await?;
        let down = self.rng.random_range(0.3..self.timing.max_down.max(0.5));
        // An owned handle: the slot stays locked across `self.caught`.
        let workers = Arc::clone(&self.t.workers);
        let mut guard = workers.slots[slot].lock().await;
        let w = guard.as_mut().context("slot without a worker")?;
        let id = w.id.clone();
        // Directly, not through kill(1): the batch seen in flight is over in milliseconds.
        w.kill().await;
        let held = self.caught(&id, seen).await?;
        tokio::time::sleep(Duration::from_secs_f64(down)).await;
        *guard = Some(workers.spawn(slot)?);
        Ok(json!({"worker": id, "held": held, "down_s": round1(down)}))
    }

    async fn sigterm(&mut self) -> anyhow::Result<Value> {
        let (slot, seen) = self.pick_busy().await?;
        let down = self.rng.random_range(0.2..2.0);
        let grace = self.t.workers.env().shutdown_grace_seconds;
        // An owned handle: the slot stays locked across `self.caught`.
        let workers = Arc::clone(&self.t.workers);
        let mut guard = workers.slots[slot].lock().await;
        let w = guard.as_mut().context("slot without a worker")?;
        let id = w.id.clone();
        let held = self.caught(&id, seen).await?;
        let sent = self.t.clock.now();
        // Grace for in-flight bulks, plus time for the release and the exit itself.
        let limit = Duration::from_secs_f64(grace + 10.0);
        let code = match w.stop(limit).await? {
            Some(status) => {
                if status.code() != Some(0) {
                    self.t.findings.violation(format!(
                        "worker {id} exited with {status} after SIGTERM (expected exit 0); log {}:\n{}",
                        w.log.display(),
                        w.log_tail(15)
                    ));
                }
                status.code()
            }
            None => {
                self.t.findings.violation(format!(
                    "worker {id} still running {limit:?} after SIGTERM; killed; log {}",
                    w.log.display()
                ));
                None
            }
        };
        let stop_s = self.t.clock.now() - sent;
        tokio::time::sleep(Duration::from_secs_f64(down)).await;
        *guard = Some(workers.spawn(slot)?);
        Ok(json!({"worker": id, "held": held, "exit_code": code,
                  "stop_s": round1(stop_s), "down_s": round1(down)}))
    }

    async fn sigstop(&mut self) -> anyhow::Result<Value> {
        let (slot, seen) = self.pick_busy().await?;
        let lease = self.t.workers.env().lease_seconds;
        let frozen = lease + self.rng.random_range(0.5..3.0);
        // An owned handle: the slot stays locked across `self.caught`.
        let workers = Arc::clone(&self.t.workers);
        let guard = workers.slots[slot].lock().await;
        let w = guard.as_ref().context("slot without a worker")?;
        let id = w.id.clone();
        w.signal("STOP")?;
        let held = self.caught(&id, seen).await?;
        tokio::time::sleep(Duration::from_secs_f64(frozen)).await;
        w.signal("CONT")?;
        Ok(json!({"worker": id, "held": held, "frozen_s": round1(frozen)}))
    }

    async fn pg_terminate(&mut self) -> anyhow::Result<Value> {
        if self.rng.random_bool(0.5) {
            let pattern = self.t.workers.app_name_pattern(None);
            self.struck_s = Some(self.t.clock.now());
            let n = harness::terminate_backends(&*self.t.admin.get().await?, &pattern).await?;
            return Ok(json!({"scope": "all", "terminated": n}));
        }
        let (slot, seen) = self.pick_busy().await?;
        let id = {
            let guard = self.t.workers.slots[slot].lock().await;
            guard.as_ref().map(|w| w.id.clone()).unwrap_or_default()
        };
        let pattern = self.t.workers.app_name_pattern(Some(&id));
        let n = harness::terminate_backends(&*self.t.admin.get().await?, &pattern).await?;
        let held = self.caught(&id, seen).await?;
        Ok(json!({"scope": id, "held": held, "terminated": n}))
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Seconds from `from` until none of `ids` is pending or processing any more (polled every
/// 100 ms, for at most 5 minutes).
async fn watch_delivery(db: Arc<Db>, ids: Vec<i64>, clock: Clock, from: f64) -> Option<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    while tokio::time::Instant::now() < deadline {
        let left = match db.get().await {
            Ok(c) => c
                .query_one(
                    "SELECT count(*) FROM outbox_event_states WHERE id = ANY($1) AND status <> 'failed'",
                    &[&ids],
                )
                .await
                .map(|r| r.get::<_, i64>(0))
                .ok(),
            Err(_) => None,
        };
        if left == Some(0) {
            return Some(round1(clock.now() - from));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
