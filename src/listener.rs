//! The LISTEN connection: a dedicated connection (never pooled: a pooled connection drops
//! notifications) whose messages are polled; each notification wakes the pipeline. It is
//! pinged so a half-open socket is noticed, reconnects with backoff, and after every
//! (re)connect wakes the pipeline for a catch-up drain, because notifications sent while
//! disconnected are gone.

use std::{sync::Arc, time::Duration};

use futures::{StreamExt, stream};
use tokio_postgres::AsyncMessage;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    backoff,
    config::Config,
    db,
    metrics::Health,
    wake::{WakeSource, Waker},
};

/// The channel the trigger notifies (triggers/*.sql).
pub const CHANNEL: &str = "outbox_events";
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(cfg: Arc<Config>, waker: Waker, health: Arc<Health>, shutdown: CancellationToken) {
    let mut delays = backoff::in_process(Duration::from_millis(100), Duration::from_secs(10));
    let mut first = true;
    loop {
        match listen_once(&cfg, &waker, &health, &shutdown, first).await {
            Ok(()) => return, // shutdown
            Err(e) => {
                health.set_listen_up(false);
                warn!(error = %e, "LISTEN connection lost; reconnecting");
            }
        }
        first = false;
        let d = delays.next().unwrap_or(Duration::from_secs(10));
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One connection's life. Ok on shutdown, Err when the connection failed.
async fn listen_once(
    cfg: &Config,
    waker: &Waker,
    health: &Health,
    shutdown: &CancellationToken,
    first: bool,
) -> Result<(), String> {
    let (client, mut conn) = db::connect(cfg, "listen")
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (closed_tx, mut closed_rx) = tokio::sync::oneshot::channel::<String>();
    let notify_waker = waker.clone();
    // The trigger's payload is the outbox table's schema: several outboxes can share one
    // database (and channel), and only our own schema's inserts are worth a wake. Filled in
    // once the connection runs (it is driven by the task below).
    let (schema_tx, schema_rx) = tokio::sync::watch::channel(None::<String>);
    let driver = tokio::spawn(async move {
        let mut messages = stream::poll_fn(move |cx| conn.poll_message(cx));
        let why = loop {
            match messages.next().await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    let ours = schema_rx
                        .borrow()
                        .as_deref()
                        .is_none_or(|s| s == n.payload());
                    if ours {
                        notify_waker.wake(WakeSource::Notification);
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => break db::error_text(&e),
                None => break "closed by the server".to_string(),
            }
        };
        let _ = closed_tx.send(why);
    });
    let _abort = AbortOnDrop(driver);
    let schema: Option<String> = client
        .query_one("SELECT current_schema()", &[])
        .await
        .map_err(|e| format!("current_schema: {}", db::error_text(&e)))?
        .get(0);
    let _ = schema_tx.send(schema);
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| format!("LISTEN: {}", db::error_text(&e)))?;
    health.set_listen_up(true);
    info!(
        channel = CHANNEL,
        reconnect = !first,
        "listening for notifications"
    );
    // Catch up on whatever was committed while no one listened.
    waker.wake(if first {
        WakeSource::ListenConnected
    } else {
        WakeSource::ListenReconnected
    });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                health.set_listen_up(false);
                return Ok(());
            }
            why = &mut closed_rx => {
                return Err(why.unwrap_or_else(|_| "connection task ended".into()));
            }
            _ = tokio::time::sleep(PING_INTERVAL) => {
                match tokio::time::timeout(PING_TIMEOUT, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("ping: {}", db::error_text(&e))),
                    Err(_) => return Err(format!("ping: no answer within {PING_TIMEOUT:?} (half-open socket?)")),
                }
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
