//! `outbox-worker migrate`: applies migrations/ in order, then the trigger of the chosen
//! notify mode (triggers/). Idempotent, and safe when several workers start at once: the
//! whole run holds a transaction-level advisory lock.

use tokio_postgres::Client;

use crate::config::NotifyMode;

/// Migrations in the order they apply; the name is recorded once applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_outbox_events",
        include_str!("../migrations/0001_outbox_events.sql"),
    ),
    (
        "0002_deferrals",
        include_str!("../migrations/0002_deferrals.sql"),
    ),
    (
        "0003_insert_only_log",
        include_str!("../migrations/0003_insert_only_log.sql"),
    ),
    (
        "0004_insert_only_pieces",
        include_str!("../migrations/0004_insert_only_pieces.sql"),
    ),
    (
        "0005_delete_records",
        include_str!("../migrations/0005_delete_records.sql"),
    ),
];

/// Functions and views over the tables, replaced at every migrate (after the migrations),
/// so a new version's claim or view needs no migration of its own.
pub const FUNCTIONS: &[&str] = &[
    // The views first: the functions declare rows of their types.
    include_str!("../functions/outbox_views.sql"),
    include_str!("../functions/outbox_claim.sql"),
    include_str!("../functions/outbox_truncate_slot.sql"),
];

pub const TRIGGER_ADAPTIVE: &str = include_str!("../triggers/notify_adaptive.sql");
pub const TRIGGER_ALWAYS: &str = include_str!("../triggers/notify_always.sql");
pub const TRIGGER_OFF: &str = include_str!("../triggers/notify_off.sql");

/// An arbitrary constant shared by every outbox-worker: "outbox" in ASCII.
const MIGRATE_LOCK_KEY: i64 = 0x6f7574626f78;

pub fn trigger_sql(mode: NotifyMode) -> &'static str {
    match mode {
        NotifyMode::Adaptive => TRIGGER_ADAPTIVE,
        NotifyMode::Always => TRIGGER_ALWAYS,
        NotifyMode::Off => TRIGGER_OFF,
    }
}

#[derive(Debug, Default)]
pub struct MigrateReport {
    pub applied: Vec<String>,
    pub already: Vec<String>,
}

pub async fn migrate(
    client: &mut Client,
    mode: NotifyMode,
) -> Result<MigrateReport, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK_KEY])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS outbox_schema_migrations (
             name text PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let mut report = MigrateReport::default();
    for (name, sql) in MIGRATIONS {
        let done = tx
            .query_opt(
                "SELECT 1 FROM outbox_schema_migrations WHERE name = $1",
                &[name],
            )
            .await?
            .is_some();
        if done {
            report.already.push(name.to_string());
            continue;
        }
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO outbox_schema_migrations (name) VALUES ($1)",
            &[name],
        )
        .await?;
        report.applied.push(name.to_string());
    }
    for sql in FUNCTIONS {
        tx.batch_execute(sql).await?;
    }
    tx.batch_execute(trigger_sql(mode)).await?;
    tx.commit().await?;
    Ok(report)
}

/// The notify mode currently installed, read back from the database (for `stats`, tests).
pub async fn installed_notify_mode(client: &Client) -> Result<NotifyMode, tokio_postgres::Error> {
    let row = client
        .query_opt(
            "SELECT pg_get_functiondef(p.oid) FROM pg_trigger t
             JOIN pg_proc p ON p.oid = t.tgfoid
             WHERE t.tgname = 'outbox_events_notify' AND NOT t.tgisinternal
               AND t.tgrelid = 'outbox_events'::regclass",
            &[],
        )
        .await?;
    Ok(match row {
        None => NotifyMode::Off,
        Some(r) if r.get::<_, String>(0).contains("outbox_waiting_workers") => NotifyMode::Adaptive,
        Some(_) => NotifyMode::Always,
    })
}
