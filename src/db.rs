//! Database connections: the pool for claims and outcomes, single connections for LISTEN
//! and the CLI, TLS per `sslmode` (tls.rs), and the classification of transient errors
//! (retried, never fatal).

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Connection, Socket, error::SqlState};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{config::Config, tls};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database: {}", error_text(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Errors setting up a connection (before any I/O): one clear line each.
#[derive(Debug, thiserror::Error)]
pub enum ConnectSetupError {
    #[error("invalid OUTBOX_DATABASE_URL: {0}")]
    Url(tokio_postgres::Error),
    #[error("database TLS: {0}")]
    Tls(#[from] tls::TlsSetupError),
    #[error("cannot connect to the database: {}", error_text(.0))]
    Connect(tokio_postgres::Error),
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

/// A PostgreSQL error with its server message (tokio-postgres prints only "db error").
pub fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => crate::error_chain::error_chain(e),
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
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || code.code().starts_with("08")
        }
    }
}

/// Connection settings and the TLS connector; `role` names the connection's job in
/// `pg_stat_activity` (application_name `outbox-worker <role> <worker id>`), unless the
/// URL sets one.
pub fn pg_config(
    cfg: &Config,
    role: &str,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), ConnectSetupError> {
    let (url, mode) = tls::split_sslmode(cfg.database_url.expose())?;
    let mut pg: tokio_postgres::Config = url.parse().map_err(ConnectSetupError::Url)?;
    pg.ssl_mode(mode.negotiation());
    if pg.get_application_name().is_none() {
        pg.application_name(format!("outbox-worker {role} {}", cfg.worker_id));
    }
    // Notice a dead peer even on an idle connection.
    pg.keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30))
        .connect_timeout(std::time::Duration::from_secs(10));
    let connector = tls::pg_connector(mode, cfg.database_ca_file.as_deref())?;
    Ok((pg, connector))
}

/// Session settings of the pool connections (claims, outcomes, reclaims, idle marks),
/// appended to the URL's own `options`:
///
/// - `plan_cache_mode=force_custom_plan`: plan every claim and outcome for its actual arrays
///   and limit. A cached generic plan guesses 10 rows for `unnest($1)` and, from statistics
///   taken while nothing was `processing`, 1 row for this worker's leases; it then rescans
///   the array once per leased row (an ack of 500 events took 400 ms instead of 2 ms).
///   Planning costs well under 1 ms per statement, about 1 µs per event at bulk size 500.
/// - `synchronous_commit=off`: the worker's writes do not wait for their WAL flush. Losing
///   the last few of them in a database crash only re-delivers events: a lost claim or
///   retry leaves the event `pending`, a lost ack re-sends a document the engine already
///   holds (an external-version conflict, acked), a lost fail meets the same error again.
///   The producers' inserts and the operator's replays keep their own setting. It takes a
///   WAL flush off every claim and every ack on the insert -> ack path.
/// - `jit=off`: every statement here is short; none gains from JIT compilation, and the
///   planner's estimates over the partitioned log and pieces put some past
///   `jit_above_cost`. The sampler's gauges then spent 300-450 ms compiling every 5 s
///   (seconds on a busy machine), against 10 ms to run them without it.
pub const POOL_SESSION_OPTIONS: &str =
    "-c plan_cache_mode=force_custom_plan -c synchronous_commit=off -c jit=off";

/// The connection pool used for claims, outcomes, the reclaimer and the gauges.
pub fn pool(cfg: &Config, max_size: usize) -> Result<Pool, ConnectSetupError> {
    pool_with(cfg, "pool", POOL_SESSION_OPTIONS, max_size)
}

/// A pool whose connections are named `role` in `pg_stat_activity` and carry the session
/// `options` (after the URL's own).
pub fn pool_with(
    cfg: &Config,
    role: &str,
    session_options: &str,
    max_size: usize,
) -> Result<Pool, ConnectSetupError> {
    let (mut pg, tls) = pg_config(cfg, role)?;
    let options = match pg.get_options() {
        Some(o) if !o.is_empty() => format!("{o} {session_options}"),
        _ => session_options.to_string(),
    };
    pg.options(&options);
    let mgr = Manager::from_config(
        pg,
        tls,
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

/// A connection's I/O half, as `connect` returns it.
pub type PgConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

/// One dedicated connection (LISTEN, migrate, CLI commands); the caller drives `Connection`.
pub async fn connect(
    cfg: &Config,
    role: &str,
) -> Result<(Client, PgConnection), ConnectSetupError> {
    let (pg, tls) = pg_config(cfg, role)?;
    pg.connect(tls).await.map_err(ConnectSetupError::Connect)
}

/// Connect and drive the connection in the background; for one-shot commands.
pub async fn connect_simple(cfg: &Config, role: &str) -> Result<Client, ConnectSetupError> {
    let (client, conn) = connect(cfg, role).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "database connection closed");
        }
    });
    Ok(client)
}

/// Whether the connection behind `client` is encrypted (the TLS tests ask).
#[cfg(feature = "testing")]
pub async fn is_encrypted(client: &Client) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false)",
            &[],
        )
        .await?
        .get(0))
}
