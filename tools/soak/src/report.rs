//! The figures of a run: recovery per fault (from its end until the lag is back under the
//! threshold, and until the next ack), summaries by kind, the lag series, the JSON report
//! and the one summary line.

use std::collections::BTreeMap;

use outbox_harness::percentile;
use serde_json::Value;

use crate::{check::Verdict, faults::FaultRecord, monitor::Sample, produce::Produced};

/// Fill in `recovery_s` and `next_ack_s` of every fault from the monitor's samples.
/// Resolution: one monitor period.
pub fn measure_recovery(records: &mut [FaultRecord], samples: &[Sample], threshold: i64) {
    for r in records.iter_mut() {
        let end = r.ended_s;
        let after = samples.iter().filter(|s| s.t >= end);
        r.recovery_s = after
            .clone()
            .find(|s| s.lag <= threshold)
            .map(|s| round2(s.t - end));
        let acked_at_end = samples
            .iter()
            .take_while(|s| s.t < end)
            .last()
            .map_or(0.0, |s| s.acked);
        r.next_ack_s = after
            .clone()
            .find(|s| s.acked > acked_at_end)
            .map(|s| round2(s.t - end));
    }
}

/// The 95th percentile of the lag in `[from, to)`: the lag of normal operation.
pub fn baseline_lag(samples: &[Sample], from: f64, to: f64) -> i64 {
    let lags: Vec<f64> = samples
        .iter()
        .filter(|s| s.t >= from && s.t < to)
        .map(|s| s.lag as f64)
        .collect();
    percentile(&lags, 0.95).map_or(0, |p| p as i64)
}

#[derive(Debug, Default, serde::Serialize)]
pub struct KindSummary {
    pub injected: usize,
    pub recovery_p50_s: Option<f64>,
    pub recovery_max_s: Option<f64>,
    /// Faults after which the lag never came back under the threshold.
    pub unrecovered: usize,
    pub next_ack_p50_s: Option<f64>,
    pub next_ack_max_s: Option<f64>,
    /// Faults that caught a worker holding claimed events.
    pub hit_mid_batch: usize,
    /// From the fault's start until the events the worker held were delivered.
    pub held_delivered_p50_s: Option<f64>,
    pub held_delivered_max_s: Option<f64>,
}

pub fn by_kind(records: &[FaultRecord]) -> BTreeMap<&'static str, KindSummary> {
    let mut groups: BTreeMap<&'static str, Vec<&FaultRecord>> = BTreeMap::new();
    for r in records {
        groups.entry(r.kind).or_default().push(r);
    }
    groups
        .into_iter()
        .map(|(kind, rs)| {
            let rec: Vec<f64> = rs.iter().filter_map(|r| r.recovery_s).collect();
            let ack: Vec<f64> = rs.iter().filter_map(|r| r.next_ack_s).collect();
            let held: Vec<f64> = rs.iter().filter_map(|r| r.held_delivered_s).collect();
            (
                kind,
                KindSummary {
                    injected: rs.len(),
                    recovery_p50_s: percentile(&rec, 0.5),
                    recovery_max_s: percentile(&rec, 1.0),
                    unrecovered: rs.len() - rec.len(),
                    next_ack_p50_s: percentile(&ack, 0.5),
                    next_ack_max_s: percentile(&ack, 1.0),
                    hit_mid_batch: rs.iter().filter(|r| r.held > 0).count(),
                    held_delivered_p50_s: percentile(&held, 0.5),
                    held_delivered_max_s: percentile(&held, 1.0),
                },
            )
        })
        .collect()
}

/// The lag per second of the run: [second, max lag, max oldest age].
pub fn lag_series(samples: &[Sample]) -> Vec<(u64, i64, f64)> {
    let mut out: Vec<(u64, i64, f64)> = Vec::new();
    for s in samples {
        let sec = s.t as u64;
        match out.last_mut() {
            Some(last) if last.0 == sec => {
                last.1 = last.1.max(s.lag);
                last.2 = last.2.max(round2(s.oldest_age));
            }
            _ => out.push((sec, s.lag, round2(s.oldest_age))),
        }
    }
    out
}

#[derive(Debug, serde::Serialize)]
pub struct Lag {
    pub max_events: i64,
    pub max_oldest_age_s: f64,
    /// p95 of the lag before the first fault.
    pub baseline_p95_events: i64,
    /// "Recovered" means the lag is back at or under this.
    pub recovery_threshold_events: i64,
    pub sample_period_s: f64,
    /// [second of the run, max lag, max oldest age in seconds].
    pub series: Vec<(u64, i64, f64)>,
}

#[derive(Debug, serde::Serialize)]
pub struct Faults {
    pub total: usize,
    pub by_kind: BTreeMap<&'static str, KindSummary>,
    /// The proxy's own count of what it injected (requests hit, items rewritten, ...).
    pub proxy_stats: Value,
    pub list: Vec<FaultRecord>,
}

#[derive(Debug, serde::Serialize)]
pub struct Timings {
    pub setup_s: f64,
    pub production_s: f64,
    /// From the end of production (and of the faults) until nothing was pending or
    /// processing.
    pub drain_s: Option<f64>,
    pub total_s: f64,
}

#[derive(Debug, serde::Serialize)]
pub struct Report {
    pub ok: bool,
    pub run_id: String,
    pub seed: u64,
    pub quick: bool,
    pub schema: String,
    pub index: String,
    pub log_dir: String,
    /// Whether the schema, the index and the logs were kept (after a failed run, or with
    /// `--keep`); a clean run removes them.
    pub artifacts_kept: bool,
    pub worker_env: Value,
    pub workers: usize,
    pub worker_starts: u64,
    pub produced: Produced,
    pub events: i64,
    pub lost: i64,
    pub stale: i64,
    pub failed_by_reason: BTreeMap<String, i64>,
    pub verdict: Verdict,
    pub faults: Faults,
    pub lag: Lag,
    pub timings: Timings,
    /// Worker counters summed over every incarnation (as last scraped; a SIGKILLed
    /// incarnation's last moments are missing).
    pub worker_counters: BTreeMap<String, f64>,
    pub violations: Vec<String>,
    pub harness_problems: Vec<String>,
    /// What happened outside the soak's control (e.g. the shared server restarted).
    pub notes: Vec<String>,
}

impl Report {
    /// The figures, for a human, on stderr-like output.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let p = &self.produced;
        out += &format!(
            "events: {} produced in {:.0} s ({:.0}/s): {} index, {} delete, {} bad ({} invalid_event, {} mapping conflict)\n",
            self.events,
            p.seconds,
            p.events_per_second,
            p.index_events,
            p.delete_events,
            p.bad_invalid_event + p.bad_mapping_conflict,
            p.bad_invalid_event,
            p.bad_mapping_conflict
        );
        out += &format!(
            "faults: {} injected; workers started {} times\n",
            self.faults.total, self.worker_starts
        );
        out += "  kind               n  recovery p50/max (s)  next ack p50/max (s)  unrecovered  mid-batch  held delivered p50/max (s)\n";
        for (kind, k) in &self.faults.by_kind {
            out += &format!(
                "  {kind:<17} {:>2}  {:>8} / {:<9} {:>8} / {:<9} {:>11}  {:>9}  {:>8} / {}\n",
                k.injected,
                opt(k.recovery_p50_s),
                opt(k.recovery_max_s),
                opt(k.next_ack_p50_s),
                opt(k.next_ack_max_s),
                k.unrecovered,
                k.hit_mid_batch,
                opt(k.held_delivered_p50_s),
                opt(k.held_delivered_max_s)
            );
        }
        out += &format!(
            "lag: max {} events, oldest {:.1} s; baseline p95 {}, recovery threshold {}\n",
            self.lag.max_events,
            self.lag.max_oldest_age_s,
            self.lag.baseline_p95_events,
            self.lag.recovery_threshold_events
        );
        let v = &self.verdict;
        out += &format!(
            "outcome: acked {}, failed {:?}, stuck {}, pending {}, lost {}, stale {}, mismatched {}, phantom {}, unexpected failed {}, bad not failed {}\n",
            v.acked,
            v.failed_by_reason,
            v.stuck,
            v.pending,
            v.lost,
            v.stale,
            v.mismatched,
            v.phantom,
            v.failed_unexpected,
            v.bad_not_failed
        );
        out += &format!(
            "documents: {} expected present, {} expected deleted, {} in the engine\n",
            v.documents_expected_present, v.documents_expected_deleted, v.documents_in_engine
        );
        let c = |k: &str| -> f64 {
            self.worker_counters
                .iter()
                .filter(|(n, _)| n.as_str() == k || n.starts_with(&format!("{k}{{")))
                .map(|(_, v)| v)
                // From +0.0: an empty f64 sum is -0.0.
                .fold(0.0, |a, b| a + b)
        };
        out += &format!(
            "workers: acked {:.0}, retries scheduled {:.0}, reclaimed {:.0}, released {:.0}, late acks {:.0}, superseded {:.0}, db errors {:.0}\n",
            c("outbox_acked_total"),
            c("outbox_retry_scheduled_total"),
            c("outbox_reclaimed_total"),
            c("outbox_released_total"),
            c("outbox_late_acks_total"),
            c("outbox_superseded_total"),
            c("outbox_db_errors_total")
        );
        out += &format!(
            "time: setup {:.1} s, production {:.1} s, drain {}, total {:.1} s\n",
            self.timings.setup_s,
            self.timings.production_s,
            self.timings
                .drain_s
                .map_or("not reached".to_string(), |d| format!("{d:.1} s")),
            self.timings.total_s
        );
        for n in &self.notes {
            out += &format!("note: {n}\n");
        }
        for h in &self.harness_problems {
            out += &format!("harness problem: {h}\n");
        }
        for v in &self.violations {
            out += &format!("VIOLATION: {v}\n");
        }
        out
    }

    /// The one summary line.
    pub fn summary(&self) -> String {
        let kinds: Vec<String> = self
            .faults
            .by_kind
            .iter()
            .map(|(k, s)| format!("{k} {}", s.injected))
            .collect();
        let failed: Vec<String> = self
            .failed_by_reason
            .iter()
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        let recoveries: Vec<f64> = self
            .faults
            .list
            .iter()
            .filter_map(|r| r.recovery_s)
            .collect();
        let held: Vec<f64> = self
            .faults
            .list
            .iter()
            .filter_map(|r| r.held_delivered_s)
            .collect();
        format!(
            "soak {}: {} events, {} faults ({}), max lag {} (oldest {:.1} s), recovery p50 {} s max {} s, held events delivered max {} s, lost {}, stale {}, failed [{}], {} violations, seed {}, {:.0} s",
            if self.ok { "ok" } else { "FAILED" },
            self.events,
            self.faults.total,
            kinds.join(", "),
            self.lag.max_events,
            self.lag.max_oldest_age_s,
            opt(percentile(&recoveries, 0.5)),
            opt(percentile(&recoveries, 1.0)),
            opt(percentile(&held, 1.0)),
            self.lost,
            self.stale,
            failed.join(" "),
            self.violations.len(),
            self.seed,
            self.timings.total_s
        )
    }
}

fn opt(x: Option<f64>) -> String {
    x.map_or("-".to_string(), |v| format!("{v:.2}"))
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
