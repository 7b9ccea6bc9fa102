//! fault-proxy: the command. What it does and its control API are described in lib.rs.
//!
//! ```text
//! fault-proxy --listen 127.0.0.1:0 --upstream http://127.0.0.1:9200 --control 127.0.0.1:0
//! fault-proxy listening on 127.0.0.1:41817 upstream http://127.0.0.1:9200 control 127.0.0.1:36025
//! ```
//!
//! The first stdout line (above) carries the bound addresses; logs go to stderr, one line
//! per injected fault (`RUST_LOG` filters them).

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    path::PathBuf,
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

    let script = match &args.script {
        Some(path) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            Some(
                fault_proxy::parse_script(&bytes)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let running = fault_proxy::start(fault_proxy::Options {
        listen: args.listen,
        control: args.control,
        upstream: args.upstream.clone(),
        seed: args.seed,
        script,
        upstream_timeout: Duration::from_millis(args.upstream_timeout_ms),
    })
    .await
    .context("--listen, --control or --upstream")?;
    {
        // The first stdout line is the contract with scripts and tests: keep its shape.
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "fault-proxy listening on {} upstream {} control {}",
            running.listen,
            args.upstream.as_str().trim_end_matches('/'),
            running.control
        )?;
        out.flush()?;
    }
    Err(running.wait().await)
}
