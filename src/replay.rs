//! `outbox-worker replay`: failed -> pending, explicitly and audited. A filter (ids,
//! error_reason, failure time window, projection, limit) selects failed events only;
//! `--dry-run` shows exactly what would move, and which of those events a recorded delete
//! supersedes (acked unsent once replayed), and changes nothing; execution needs a reason
//! and writes the audit row in the same statement as the move.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Client;

use crate::sql;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ids: Option<Vec<i64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_before: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projection: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_name: Option<String>,
    pub limit: i64,
}

impl ReplayFilter {
    /// A filter that names nothing would replay the whole failed pile: refuse it unless asked.
    pub fn is_unbounded(&self) -> bool {
        self.ids.is_none()
            && self.error_reason.is_none()
            && self.failed_since.is_none()
            && self.failed_before.is_none()
            && self.projection.is_none()
            && self.index_name.is_none()
    }
}

#[derive(Debug, Serialize)]
pub struct DryRun {
    pub matched: usize,
    pub by_reason: BTreeMap<String, usize>,
    pub sample_ids: Vec<i64>,
    /// Index events among those matched that a recorded delete of their document would
    /// supersede: once replayed, the worker acks them unsent (the document stays deleted).
    pub superseded_by_delete: Vec<SupersededByDelete>,
    pub filter: ReplayFilter,
    /// Every event that would move, in id order (the console lists them all).
    #[serde(skip)]
    pub events: Vec<WouldMove>,
}

/// One failed event a dry run matched.
#[derive(Debug, Clone, Serialize)]
pub struct WouldMove {
    pub id: i64,
    pub error_reason: Option<String>,
    pub index_name: String,
    pub doc_id: String,
    pub failed_at: Option<DateTime<Utc>>,
}

/// A failed index event at or below the version of its document's recorded delete.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct SupersededByDelete {
    pub id: i64,
    pub version: i64,
    pub deleted_version: i64,
}

#[derive(Debug, Serialize)]
pub struct Replayed {
    pub audit_id: i64,
    pub replayed_at: DateTime<Utc>,
    pub count: i32,
    pub ids: Vec<i64>,
}

#[derive(Debug, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub replayed_at: DateTime<Utc>,
    pub actor: String,
    pub reason: String,
    pub filter: serde_json::Value,
    pub event_count: i32,
    pub event_ids: Vec<i64>,
}

pub async fn dry_run(client: &Client, f: &ReplayFilter) -> Result<DryRun, tokio_postgres::Error> {
    let rows = client
        .query(
            sql::REPLAY_SELECT,
            &[
                &f.ids,
                &f.error_reason,
                &f.failed_since,
                &f.failed_before,
                &f.projection,
                &f.index_name,
                &f.limit,
            ],
        )
        .await?;
    let mut by_reason = BTreeMap::new();
    for r in &rows {
        let reason: Option<String> = r.get("error_reason");
        *by_reason
            .entry(reason.unwrap_or_else(|| "-".into()))
            .or_insert(0) += 1;
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.get("id")).collect();
    let superseded_by_delete = client
        .query(sql::REPLAY_SUPERSEDED, &[&ids])
        .await?
        .iter()
        .map(|r| SupersededByDelete {
            id: r.get("id"),
            version: r.get("version"),
            deleted_version: r.get("deleted_version"),
        })
        .collect();
    Ok(DryRun {
        matched: rows.len(),
        by_reason,
        sample_ids: ids.iter().take(20).copied().collect(),
        superseded_by_delete,
        filter: f.clone(),
        events: rows
            .iter()
            .map(|r| WouldMove {
                id: r.get("id"),
                error_reason: r.get("error_reason"),
                index_name: r.get("index_name"),
                doc_id: r.get("doc_id"),
                failed_at: r.get("failed_at"),
            })
            .collect(),
    })
}

pub async fn execute(
    client: &Client,
    f: &ReplayFilter,
    actor: &str,
    reason: &str,
) -> Result<Replayed, tokio_postgres::Error> {
    let filter = serde_json::to_value(f).expect("filter serialises");
    let r = client
        .query_one(
            sql::REPLAY,
            &[
                &f.ids,
                &f.error_reason,
                &f.failed_since,
                &f.failed_before,
                &f.projection,
                &f.index_name,
                &f.limit,
                &actor,
                &reason,
                &filter,
            ],
        )
        .await?;
    Ok(Replayed {
        audit_id: r.get("id"),
        replayed_at: r.get("replayed_at"),
        count: r.get("event_count"),
        ids: r.get("event_ids"),
    })
}

pub async fn audit_trail(
    client: &Client,
    limit: i64,
) -> Result<Vec<AuditRow>, tokio_postgres::Error> {
    Ok(client
        .query(sql::REPLAY_AUDIT, &[&limit])
        .await?
        .iter()
        .map(|r| AuditRow {
            id: r.get(0),
            replayed_at: r.get(1),
            actor: r.get(2),
            reason: r.get(3),
            filter: serde_json::from_str(r.get::<_, &str>(4)).unwrap_or_default(),
            event_count: r.get(5),
            event_ids: r.get(6),
        })
        .collect())
}

/// The operating-system user running the command (the default actor).
pub fn os_user() -> String {
    for var in ["SUDO_USER", "USER", "LOGNAME"] {
        if let Ok(u) = std::env::var(var)
            && !u.is_empty()
        {
            return u;
        }
    }
    // No login variables (e.g. under CI): look the uid up in /etc/passwd.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        });
    if let (Some(uid), Ok(passwd)) = (uid.as_ref(), std::fs::read_to_string("/etc/passwd")) {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() > 2 && f[2] == uid {
                return f[0].to_string();
            }
        }
    }
    format!("uid:{}", uid.unwrap_or_else(|| "?".into()))
}

/// `2026-01-02T03:04:05Z`, or a span back from now: `30m`, `2h`, `7d`.
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?}: expected RFC 3339 time or a span like 30m, 2h, 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "{s:?}: expected RFC 3339 time or a span like 30m, 2h, 7d"
            ));
        }
    };
    Ok(Utc::now() - chrono::Duration::seconds(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_absolute_and_relative() {
        let t = parse_time("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        let two_hours = parse_time("2h").unwrap();
        let delta = Utc::now() - two_hours;
        assert!((delta.num_seconds() - 7200).abs() <= 2);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("5w").is_err());
    }

    #[test]
    fn empty_filter_is_unbounded() {
        assert!(
            ReplayFilter {
                limit: 10,
                ..Default::default()
            }
            .is_unbounded()
        );
        assert!(
            !ReplayFilter {
                error_reason: Some("x".into()),
                limit: 10,
                ..Default::default()
            }
            .is_unbounded()
        );
    }
}
