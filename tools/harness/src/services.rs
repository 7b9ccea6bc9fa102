//! Where the services are and how to reach them: PostgreSQL and the engine (started by
//! scripts/services.sh; the tests read OUTBOX_TEST_*), connections, free ports, names.

use std::time::Duration;

use anyhow::Context;
use outbox_worker::config::redact_url;
use tokio_postgres::{Client, NoTls};

/// The tests' database (`OUTBOX_TEST_DATABASE_URL`).
pub fn pg_base_url() -> String {
    std::env::var("OUTBOX_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/outbox_test".into())
}

/// The tests' engine (`OUTBOX_TEST_ELASTICSEARCH_URL`), without a trailing `/`.
pub fn engine_url() -> String {
    std::env::var("OUTBOX_TEST_ELASTICSEARCH_URL")
        .unwrap_or_else(|_| "http://127.0.0.1:9200".into())
        .trim_end_matches('/')
        .to_string()
}

/// A loopback port free a moment ago: bound to port 0 and released, for a child to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding a loopback port")
        .port()
}

/// A unique lower-case name for schemas, indexes and worker ids.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::random::<u64>() % 1_000_000_000;
    format!("{prefix}_{n}").to_lowercase()
}

/// A connection named `application_name` in pg_stat_activity (so fault injection that
/// kills the workers' connections by name never hits it); its task runs in the background.
pub async fn try_connect(url: &str, application_name: &str) -> anyhow::Result<Client> {
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .with_context(|| format!("database URL {}", redact_url(url)))?;
    cfg.application_name(application_name)
        .connect_timeout(Duration::from_secs(10));
    let (client, conn) = cfg.connect(NoTls).await.with_context(|| {
        format!(
            "cannot connect to {} (scripts/services.sh start starts PostgreSQL; is the database created?)",
            redact_url(url)
        )
    })?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A test's connection.
pub async fn connect(url: &str) -> Client {
    try_connect(url, "outbox-test")
        .await
        .unwrap_or_else(|e| panic!("{e:#}"))
}
