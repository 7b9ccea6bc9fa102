//! The `outbox-worker` binary: one binary, subcommands (DESIGN.md §5).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use outbox_worker::{
    config::{Config, LogFormat, NotifyMode},
    db, migrate, producer, worker,
};

#[derive(Parser)]
#[command(
    name = "outbox-worker",
    version,
    about = "Projects a PostgreSQL transactional outbox into Elasticsearch / OpenSearch"
)]
struct Cli {
    /// Optional TOML config file; environment variables (OUTBOX_*) override it.
    #[arg(long, global = true, env = "OUTBOX_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the worker until SIGTERM / SIGINT.
    Run,
    /// Apply the schema and the insert trigger (idempotent; safe from several processes).
    Migrate {
        /// Trigger mode; default from OUTBOX_NOTIFY_MODE (adaptive).
        #[arg(long, value_parser = ["adaptive", "always", "off"])]
        notify_mode: Option<String>,
    },
    /// Print the effective configuration, secrets redacted.
    Config,
    /// Generate application-style load through the outbox (demo and benches).
    Produce {
        #[command(flatten)]
        opts: producer::ProduceOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outbox-worker: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = rt.block_on(async {
        match cli.command {
            Command::Run => {
                let handle = cfg.metrics_addr.map(|_| outbox_worker::metrics::install());
                let shutdown = worker::shutdown_on_signals();
                worker::run(cfg, shutdown, handle).await
            }
            Command::Migrate { notify_mode } => {
                if let Some(m) = notify_mode {
                    cfg.notify_mode = match m.as_str() {
                        "always" => NotifyMode::Always,
                        "off" => NotifyMode::Off,
                        _ => NotifyMode::Adaptive,
                    };
                }
                let mut client = db::connect_simple(&cfg, "migrate").await.map_err(|e| anyhow::anyhow!("cannot connect to the database: {e}"))?;
                let report = migrate::migrate(&mut client, cfg.notify_mode).await?;
                println!(
                    "migrated: applied [{}], already applied [{}], trigger mode {}",
                    report.applied.join(", "),
                    report.already.join(", "),
                    cfg.notify_mode.as_str()
                );
                Ok(())
            }
            Command::Config => {
                println!("{}", serde_json::to_string_pretty(&cfg.redacted_json())?);
                Ok(())
            }
            Command::Produce { opts, json } => {
                let report = producer::produce(&cfg, &opts).await?;
                if json {
                    println!("{}", serde_json::to_string(&report)?);
                } else {
                    println!(
                        "produced {} events in {} transactions over {:.1}s ({:.0} events/s, {} errors)",
                        report.events, report.transactions, report.elapsed_seconds, report.events_per_second, report.errors
                    );
                }
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("outbox-worker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(format!("{},tokio_postgres=warn", cfg.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}
