//! fault-proxy: an HTTP/1.1 proxy between the worker and a real search engine that injects
//! faults on demand (refused connections, whole-request statuses, delays, resets, rejected
//! `_bulk` items), driven by a JSON control API or a timed script. Test tooling only.
//!
//! ```text
//! fault-proxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:9200 --control 127.0.0.1:0
//! fault-proxy listening on 127.0.0.1:41817 upstream http://127.0.0.1:9200 control 127.0.0.1:36025
//! curl -X PUT 127.0.0.1:36025/fault -d '{"kind":"items","status":429,"every":3,"times":5}'
//! ```
//!
//! The first stdout line (above) carries the bound addresses; logs go to stderr, one line
//! per injected fault (`RUST_LOG` filters them).
//!
//! Control API (JSON):
//! - `PUT /fault` sets the fault, `DELETE /fault` clears it (pass-through), `GET /fault`
//!   shows it. Both writes stop a running script and answer once the listening socket is in
//!   the matching state (closed for `refuse`, open otherwise).
//! - `GET /stats`: counters (requests seen, forwarded, faults injected by kind, items
//!   rewritten, connections accepted/refused/reset, ...), the fault and the script state.
//! - `PUT /script` runs a list of `{"at_ms":T,"fault":{..}|null}` steps from now (as
//!   `--script FILE` does from start-up); `GET /script`, `DELETE /script`.
//!
//! Faults (`kind`), each with optional `times` (next N matching requests only),
//! `path_prefix` (only requests whose path starts with it) and `seed`:
//! - `refuse`: the listening socket is closed (ECONNREFUSED) and established connections
//!   are closed; the same port is bound again when cleared.
//! - `status` (`status`, `body`, `content_type`): answered without the upstream; the default
//!   body is an Elasticsearch error (`{"error":{"type":..,"reason":..},"status":N}`).
//! - `delay` (`ms`, `after_upstream`, `drop`): held, then forwarded if the client is still
//!   connected; `after_upstream` forwards first and holds the answer; `drop` closes instead
//!   of answering.
//! - `reset` (`after_upstream`, `at`: `headers`|`body`): part of an answer, then an RST.
//! - `items` (`status`, `fraction` | `every`, `type`, `reason`): forwarded, then chosen items
//!   of the `_bulk` answer are rejected in place (`errors` becomes true) although the
//!   upstream applied them. Without `path_prefix` only `.../_bulk` requests are taken.
//!
//! As a library: [`start`] runs a proxy in the caller's tokio runtime (the binary does);
//! [`Proxy::start`] runs one on a thread of its own, stopped on drop (tests, the soak);
//! [`ControlClient`] drives any of them over the control API.

mod client;
mod control;
mod faults;
mod forward;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;

pub use crate::{
    client::ControlClient,
    faults::{ScriptStep, parse_script},
};

/// How to run a proxy.
#[derive(Debug, Clone)]
pub struct Options {
    /// Address the worker connects to (port 0: any free port).
    pub listen: SocketAddr,
    /// Address of the JSON control API (port 0: any free port).
    pub control: SocketAddr,
    /// The real engine (http or https).
    pub upstream: url::Url,
    /// Seed of the RNG that picks rewritten items (a fault may give its own "seed").
    pub seed: u64,
    /// Steps run from start-up, as `PUT /script` runs them from the call.
    pub script: Option<Vec<ScriptStep>>,
    /// Timeout of one forwarded request.
    pub upstream_timeout: Duration,
}

impl Options {
    /// Free loopback ports, seed 0, no script, a 120 s upstream timeout.
    pub fn new(upstream: url::Url) -> Options {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        Options {
            listen: any,
            control: any,
            upstream,
            seed: 0,
            script: None,
            upstream_timeout: Duration::from_secs(120),
        }
    }
}

/// A proxy running in the current tokio runtime, with the addresses it bound.
pub struct Running {
    pub listen: SocketAddr,
    pub control: SocketAddr,
    control_task: tokio::task::JoinHandle<std::io::Result<()>>,
    proxy_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Serve until the proxy or its control API stops (neither does by itself).
    pub async fn wait(self) -> anyhow::Error {
        tokio::select! {
            r = self.control_task => match r {
                Ok(Ok(())) => anyhow::anyhow!("the control API stopped"),
                Ok(Err(e)) => anyhow::Error::new(e).context("control API"),
                Err(e) => anyhow::Error::new(e).context("control task"),
            },
            r = self.proxy_task => match r {
                Ok(()) => anyhow::anyhow!("the proxy stopped"),
                Err(e) => anyhow::Error::new(e).context("proxy task"),
            },
        }
    }
}

/// Bind both addresses and serve in the current runtime.
pub async fn start(opts: Options) -> anyhow::Result<Running> {
    if !matches!(opts.upstream.scheme(), "http" | "https") {
        anyhow::bail!("the upstream must be an http(s) URL, got {}", opts.upstream);
    }
    let upstream = Arc::new(forward::Upstream::new(
        &opts.upstream,
        opts.upstream_timeout,
    )?);
    let shared = control::Shared::new(opts.seed);
    let listener =
        forward::bind(opts.listen).with_context(|| format!("binding {}", opts.listen))?;
    let control_listener = tokio::net::TcpListener::bind(opts.control)
        .await
        .with_context(|| format!("binding {}", opts.control))?;
    let listen = listener.local_addr()?;
    let control = control_listener.local_addr()?;
    let router = control::router(Arc::clone(&shared));
    let control_task = tokio::spawn(async move { axum::serve(control_listener, router).await });
    let proxy_task = tokio::spawn(forward::accept_loop(
        listener,
        Arc::clone(&shared),
        upstream,
    ));
    if let Some(steps) = opts.script {
        shared.start_script(steps);
    }
    tracing::info!(seed = opts.seed, "fault-proxy started");
    Ok(Running {
        listen,
        control,
        control_task,
        proxy_task,
    })
}

/// A proxy on a thread of its own with its own runtime, so it serves whatever the caller's
/// runtime does (a test's single thread blocked on a socket, say). Stopped on drop.
pub struct Proxy {
    /// `http://ADDR`: what a worker uses as its engine URL.
    pub url: String,
    pub addr: SocketAddr,
    pub control: ControlClient,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    pub fn start(opts: Options) -> anyhow::Result<Proxy> {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("fault-proxy")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow::Error::new(e).context("runtime")));
                        return;
                    }
                };
                rt.block_on(async move {
                    match start(opts).await {
                        Ok(running) => {
                            let _ = ready_tx.send(Ok((running.listen, running.control)));
                            // Until dropped (or the caller is gone); then the runtime ends
                            // every connection with it.
                            let _ = stop_rx.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                rt.shutdown_timeout(Duration::from_secs(2));
            })
            .context("spawning the fault-proxy thread")?;
        let (addr, control) = ready_rx
            .recv()
            .context("the fault-proxy thread ended at start-up")??;
        Ok(Proxy {
            url: format!("http://{addr}"),
            addr,
            control: ControlClient::new(&format!("http://{control}")),
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
