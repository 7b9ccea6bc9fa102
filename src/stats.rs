//! `outbox-worker stats`: the runbook appendix's SQL as a command. Text for people,
//! `--json` for scripts.

use std::fmt::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::{config::Config, migrate, sql};

#[derive(Debug, Serialize)]
pub struct StatusRow {
    pub status: String,
    pub events: i64,
    pub retry_scheduled: i64,
    pub oldest_created_at: Option<DateTime<Utc>>,
    pub newest_created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct StuckRow {
    pub lease_owner: Option<String>,
    pub events: i64,
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize)]
pub struct FailedRow {
    pub error_reason: Option<String>,
    pub events: i64,
    pub oldest_failed_at: Option<DateTime<Utc>>,
    pub newest_failed_at: Option<DateTime<Utc>>,
    pub sample_error: Option<String>,
    pub sample_ids: Vec<i64>,
}

impl FailedRow {
    /// A row of sql/stats_failed_by_reason.sql (stats and the console's failed page).
    pub fn from_row(r: &tokio_postgres::Row) -> FailedRow {
        FailedRow {
            error_reason: r.get("error_reason"),
            events: r.get("events"),
            oldest_failed_at: r.get("oldest_failed_at"),
            newest_failed_at: r.get("newest_failed_at"),
            sample_error: r.get("sample_error"),
            sample_ids: r.get("sample_ids"),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pub by_status: Vec<StatusRow>,
    pub stuck: Vec<StuckRow>,
    pub stuck_total: i64,
    pub failed_by_reason: Vec<FailedRow>,
    pub oldest_pending_age_seconds: Option<f64>,
    pub notify_mode: String,
    pub waiting_workers: Vec<String>,
}

pub async fn collect(client: &Client, cfg: &Config) -> Result<Stats, tokio_postgres::Error> {
    let by_status = client
        .query(sql::STATS_BY_STATUS, &[])
        .await?
        .iter()
        .map(|r| StatusRow {
            status: r.get("status"),
            events: r.get("events"),
            retry_scheduled: r.get("retry_scheduled"),
            oldest_created_at: r.get("oldest_created_at"),
            newest_created_at: r.get("newest_created_at"),
        })
        .collect();
    let stuck: Vec<StuckRow> = client
        .query(sql::STATS_STUCK, &[&cfg.max_processing.as_secs_f64()])
        .await?
        .iter()
        .map(|r| StuckRow {
            lease_owner: r.get("lease_owner"),
            events: r.get("events"),
            since: r.get("since"),
        })
        .collect();
    let failed_by_reason = client
        .query(sql::STATS_FAILED_BY_REASON, &[])
        .await?
        .iter()
        .map(FailedRow::from_row)
        .collect();
    let oldest_pending_age_seconds = client
        .query_one(sql::STATS_OLDEST_PENDING, &[])
        .await?
        .get(0);
    let waiting_workers = client
        .query(
            "SELECT worker_id FROM outbox_waiting_workers WHERE expires_at > now() ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let stuck_total = stuck.iter().map(|s| s.events).sum();
    Ok(Stats {
        by_status,
        stuck,
        stuck_total,
        failed_by_reason,
        oldest_pending_age_seconds,
        notify_mode: migrate::installed_notify_mode(client)
            .await?
            .as_str()
            .to_string(),
        waiting_workers,
    })
}

fn ts(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// The text report.
pub fn render(s: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "events by status:");
    if s.by_status.is_empty() {
        let _ = writeln!(out, "  (outbox empty)");
    }
    for r in &s.by_status {
        let _ = writeln!(
            out,
            "  {:<11} {:>9}  (retry scheduled {:>7})  oldest {}  newest {}",
            r.status,
            r.events,
            r.retry_scheduled,
            ts(&r.oldest_created_at),
            ts(&r.newest_created_at)
        );
    }
    let _ = writeln!(
        out,
        "oldest pending age: {}",
        s.oldest_pending_age_seconds
            .map(|a| format!("{a:.1} s"))
            .unwrap_or_else(|| "- (nothing pending)".into())
    );
    let _ = writeln!(
        out,
        "stuck (processing, lease expired or too long): {}",
        s.stuck_total
    );
    for r in &s.stuck {
        let _ = writeln!(
            out,
            "  {:<40} {:>7}  since {}",
            r.lease_owner.as_deref().unwrap_or("-"),
            r.events,
            ts(&r.since)
        );
    }
    let failed: i64 = s.failed_by_reason.iter().map(|r| r.events).sum();
    let _ = writeln!(out, "failed by error_reason: {failed}");
    for r in &s.failed_by_reason {
        let _ = writeln!(
            out,
            "  {:<40} {:>7}  oldest {}  newest {}  ids {:?}",
            r.error_reason.as_deref().unwrap_or("-"),
            r.events,
            ts(&r.oldest_failed_at),
            ts(&r.newest_failed_at),
            r.sample_ids
        );
        if let Some(e) = &r.sample_error {
            let short: String = e.chars().take(160).collect();
            let _ = writeln!(out, "      e.g. {short}");
        }
    }
    let _ = writeln!(
        out,
        "trigger mode: {}; workers waiting for NOTIFY: {}",
        s.notify_mode,
        if s.waiting_workers.is_empty() {
            "none".to_string()
        } else {
            s.waiting_workers.join(", ")
        }
    );
    out
}
