//! `outbox-worker console`: the operator's web console. Server-rendered pages on the
//! project's axum stack, no script: the overview (states, by projection and index, the ack
//! and failure chart, workers, the cleanup horizon), the failed pile by reason, an event's
//! detail, an audited replay (the CLI's own functions and SQL), the audit trail, and a
//! document's lookup (its delete record, and why a record supersedes its index events).
//!
//! One file per concern: `auth` (tokens and scopes, the start-up rules), `csrf` (the
//! double-submit cookie and the Origin check), `filter` (the replay filter from a form),
//! `document` (the lookup and its verdicts), `queries` (what the pages read, `sql/console_*.sql`), `views` (HTML), `html`
//! (escaping), `rates` (the chart, from the workers' /metrics), `routes` (the handlers).

mod auth;
mod csrf;
mod document;
mod filter;
mod html;
mod queries;
mod rates;
mod routes;
mod views;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use axum::Router;
use tokio_util::sync::CancellationToken;

pub use auth::{Access, Scope};

use crate::{
    config::{Config, ConfigError, redact_url},
    db::{self, ConnectSetupError},
};

/// The console's database sessions: no statement may hold a connection long (a page waits
/// for it), and without a write token nothing the console runs can write.
fn session_options(writable: bool) -> String {
    let mut o = "-c statement_timeout=15000".to_string();
    if !writable {
        o.push_str(" -c default_transaction_read_only=on");
    }
    o
}

/// The start-up rules (one line each, exit 2): where to listen, and who may do what.
pub fn check(cfg: &Config) -> Result<(SocketAddr, Access), ConfigError> {
    Access::from_config(cfg)
}

#[derive(Clone)]
pub(crate) struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    pool: deadpool_postgres::Pool,
    access: Access,
    cfg: Config,
    rates: Option<Mutex<rates::Rates>>,
    database: String,
}

/// The console's routes over its own pool; the chart's sampler is started by [`serve`].
pub fn router(cfg: &Config, access: Access) -> Result<Router, ConnectSetupError> {
    Ok(routes::router(console(cfg, access)?))
}

fn console(cfg: &Config, access: Access) -> Result<Console, ConnectSetupError> {
    let pool = db::pool_with(cfg, "console", &session_options(access.writable()), 4)?;
    Ok(Console {
        inner: Arc::new(Inner {
            pool,
            access,
            cfg: cfg.clone(),
            rates: (!cfg.console_metrics_urls.is_empty()).then(Mutex::default),
            database: redact_url(cfg.database_url.expose()),
        }),
    })
}

/// Serve until `shutdown` fires.
pub async fn serve(
    cfg: Config,
    addr: SocketAddr,
    access: Access,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let console = console(&cfg, access)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on OUTBOX_CONSOLE_LISTEN={addr}"))?;
    if console.inner.rates.is_some() {
        let c = console.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .no_proxy()
                .build()
                .expect("a plain HTTP client builds");
            let rates = c.inner.rates.as_ref().expect("rates configured");
            loop {
                rates::scrape(&http, &c.inner.cfg.console_metrics_urls, rates).await;
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
            }
        });
    }
    tracing::info!(
        %addr,
        writable = console.inner.access.writable(),
        token = console.inner.access.needs_login(),
        "serving the console"
    );
    axum::serve(listener, routes::router(console))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    Ok(())
}
