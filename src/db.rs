//! Database connections: the pool for claims and outcomes, single connections for LISTEN,
//! and the classification of transient errors (retried, never fatal).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, Connection, Socket, error::SqlState, tls::NoTlsStream};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

impl DbError {
    /// Worth retrying: the connection went away, or a serialization failure / deadlock.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Pool(_) => true,
            DbError::Postgres(e) => is_transient(e),
        }
    }
}

/// Connection loss, admin shutdown, serialization failure and deadlock are transient.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        None => true, // I/O level: the socket broke
        Some(code) => {
            *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || *code == SqlState::CONNECTION_FAILURE
                || *code == SqlState::CONNECTION_EXCEPTION
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || code.code().starts_with("08")
        }
    }
}

/// Connection settings; `role` names the connection's job in `pg_stat_activity`
/// (application_name `outbox-worker <role> <worker id>`), unless the URL sets one.
pub fn pg_config(
    cfg: &Config,
    role: &str,
) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut pg: tokio_postgres::Config = cfg.database_url.expose().parse()?;
    if pg.get_application_name().is_none() {
        pg.application_name(format!("outbox-worker {role} {}", cfg.worker_id));
    }
    // Notice a dead peer even on an idle connection.
    pg.keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30))
        .connect_timeout(std::time::Duration::from_secs(10));
    Ok(pg)
}

/// The connection pool used for claims, outcomes, the reclaimer and the gauges.
pub fn pool(cfg: &Config, max_size: usize) -> Result<Pool, tokio_postgres::Error> {
    let mgr = Manager::from_config(
        pg_config(cfg, "pool")?,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(mgr)
        .max_size(max_size)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .expect("pool config is valid"))
}

/// One dedicated connection (LISTEN, migrate, CLI commands); the caller drives `Connection`.
pub async fn connect(
    cfg: &Config,
    role: &str,
) -> Result<(Client, Connection<Socket, NoTlsStream>), tokio_postgres::Error> {
    pg_config(cfg, role)?.connect(tokio_postgres::NoTls).await
}

/// Connect and drive the connection in the background; for one-shot commands.
pub async fn connect_simple(cfg: &Config, role: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, conn) = connect(cfg, role).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}
