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

mod control;
mod faults;
mod forward;

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "fault-proxy",
    about = "Fault-injecting HTTP/1.1 proxy in front of Elasticsearch/OpenSearch (test tooling)"
)]
struct Args {
    /// Address the worker connects to (port 0: any free port, printed on stdout).
    #[arg(long, env = "FAULT_PROXY_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// The real engine.
    #[arg(
        long,
        env = "FAULT_PROXY_UPSTREAM",
        default_value = "http://127.0.0.1:9200"
    )]
    upstream: url::Url,
    /// Address of the JSON control API (port 0: any free port, printed on stdout).
    #[arg(long, env = "FAULT_PROXY_CONTROL", default_value = "127.0.0.1:0")]
    control: SocketAddr,
    /// Seed of the RNG that picks rewritten items (a fault may give its own "seed").
    #[arg(long, env = "FAULT_PROXY_SEED", default_value_t = 0)]
    seed: u64,
    /// JSON list of {"at_ms":T,"fault":{...}|null} steps, run from start-up.
    #[arg(long, env = "FAULT_PROXY_SCRIPT")]
    script: Option<PathBuf>,
    /// Timeout of one forwarded request, in milliseconds.
    #[arg(
        long,
        env = "FAULT_PROXY_UPSTREAM_TIMEOUT_MS",
        default_value_t = 120_000
    )]
    upstream_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();

    if !matches!(args.upstream.scheme(), "http" | "https") {
        anyhow::bail!("--upstream must be an http(s) URL, got {}", args.upstream);
    }
    let script = match &args.script {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                faults::parse_script(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };

    let upstream = Arc::new(forward::Upstream::new(
        &args.upstream,
        Duration::from_millis(args.upstream_timeout_ms),
    )?);
    let shared = control::Shared::new(args.seed);

    let listener =
        forward::bind(args.listen).with_context(|| format!("binding --listen {}", args.listen))?;
    let control_listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding --control {}", args.control))?;
    let listen_addr = listener.local_addr()?;
    let control_addr = control_listener.local_addr()?;

    let router = control::router(Arc::clone(&shared));
    let control_task = tokio::spawn(async move { axum::serve(control_listener, router).await });
    let proxy_task = tokio::spawn(forward::accept_loop(
        listener,
        Arc::clone(&shared),
        upstream,
    ));
    if let Some(steps) = script {
        shared.start_script(steps);
    }

    tracing::info!(seed = args.seed, "fault-proxy started");
    {
        // The first stdout line is the contract with scripts and tests: keep its shape.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "fault-proxy listening on {listen_addr} upstream {} control {control_addr}",
            args.upstream.as_str().trim_end_matches('/')
        )?;
        out.flush()?;
    }

    tokio::select! {
        r = control_task => {
            r.context("control task")?.context("control API")?;
            anyhow::bail!("the control API stopped");
        }
        r = proxy_task => {
            r.context("proxy task")?;
            anyhow::bail!("the proxy stopped");
        }
    }
}
