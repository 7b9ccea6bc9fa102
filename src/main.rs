//! The `outbox-worker` binary: one binary, subcommands.

use std::{io::IsTerminal, path::PathBuf, process::ExitCode, str::FromStr};

use clap::{Parser, Subcommand};
use outbox_worker::{
    config::{self, Config, LogFormat, NotifyMode},
    connect, migrate, producer, worker,
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
        /// Trigger mode, read as OUTBOX_NOTIFY_MODE is; default: OUTBOX_NOTIFY_MODE.
        #[arg(long, value_parser = NotifyMode::from_str)]
        notify_mode: Option<NotifyMode>,
    },
    /// Print the effective configuration, secrets redacted.
    Config {
        /// Print the table of every setting (default, unit, allowed values) as Markdown.
        #[arg(long)]
        markdown: bool,
    },
    /// Event counts by state, stuck events, the failed pile by reason (the runbook's SQL).
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Move failed events back to pending, audited. Use --dry-run first.
    Replay {
        /// Event ids (repeat or comma-separate).
        #[arg(long = "id", value_delimiter = ',')]
        ids: Vec<i64>,
        /// Only events failed with this error_reason (e.g. mapper_parsing_exception).
        #[arg(long)]
        error_reason: Option<String>,
        /// Failed at or after: RFC 3339 time or a span back from now (30m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        /// Failed before: RFC 3339 time or a span back from now.
        #[arg(long)]
        until: Option<String>,
        /// Only events of this projection.
        #[arg(long)]
        projection: Option<String>,
        /// Only events bound for this index.
        #[arg(long)]
        index: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Show what would move; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Why (required to execute; kept in the audit row).
        #[arg(long)]
        reason: Option<String>,
        /// Who (default: the OS user).
        #[arg(long)]
        actor: Option<String>,
        /// Allow a filter that names nothing but the limit (the whole failed pile).
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// The operator's web console on OUTBOX_CONSOLE_LISTEN (read-only without
    /// OUTBOX_CONSOLE_WRITE_TOKEN; outside loopback it needs OUTBOX_CONSOLE_TOKEN).
    Console,
    /// The replay audit trail, newest first.
    Audit {
        #[arg(long, default_value_t = 20)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// Generate application-style load through the outbox (demo and benches).
    Produce {
        #[command(flatten)]
        opts: producer::ProduceOptions,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Print a line; if the reader went away (`... | head`), stop quietly instead of panicking.
macro_rules! emit {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if writeln!(out, $($arg)*).and_then(|_| out.flush()).is_err() {
            std::process::exit(0);
        }
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Config { markdown: true } = cli.command {
        // Documentation: needs no valid configuration.
        emit!("{}", config::markdown().trim_end());
        return ExitCode::SUCCESS;
    }
    let mut cfg = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("outbox-worker: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&cfg);
    // The console's start-up rules are config rules: one line, exit 2.
    let console = match cli.command {
        Command::Console => match outbox_worker::console::check(&cfg) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("outbox-worker: {e}");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
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
                    cfg.notify_mode = m;
                }
                let mut client = connect(&cfg, "migrate").await?;
                let report = migrate::migrate(&mut client, cfg.notify_mode).await?;
                emit!(
                    "migrated: applied [{}], already applied [{}], trigger mode {}",
                    report.applied.join(", "),
                    report.already.join(", "),
                    cfg.notify_mode.as_str()
                );
                Ok(())
            }
            Command::Config { .. } => {
                emit!("{}", serde_json::to_string_pretty(&cfg.redacted_json())?);
                Ok(())
            }
            Command::Stats { json } => {
                let client = connect(&cfg, "stats").await?;
                let stats = outbox_worker::stats::collect(&client, &cfg).await?;
                if json {
                    emit!("{}", serde_json::to_string_pretty(&stats)?);
                } else {
                    emit!("{}", outbox_worker::stats::render(&stats).trim_end());
                }
                Ok(())
            }
            Command::Replay { ids, error_reason, since, until, projection, index, limit, dry_run, reason, actor, all, json } => {
                use outbox_worker::replay;
                let parse = |flag: &str, v: Option<String>| -> anyhow::Result<_> {
                    v.map(|v| replay::parse_time(&v).map_err(|e| anyhow::anyhow!("--{flag} {e}"))).transpose()
                };
                if limit < 1 {
                    anyhow::bail!("--limit {limit}: expected at least 1");
                }
                let filter = replay::ReplayFilter {
                    ids: (!ids.is_empty()).then_some(ids),
                    error_reason,
                    failed_since: parse("since", since)?,
                    failed_before: parse("until", until)?,
                    projection,
                    index_name: index,
                    limit,
                };
                if filter.is_unbounded() && !all {
                    anyhow::bail!("the filter names no --id, --error-reason, --since, --until, --projection or --index: add one, or --all to replay the whole failed pile (up to --limit)");
                }
                let client = connect(&cfg, "replay").await?;
                if dry_run {
                    let d = replay::dry_run(&client, &filter).await?;
                    if json {
                        emit!("{}", serde_json::to_string_pretty(&d)?);
                    } else {
                        emit!("dry run: {} failed events would be replayed (limit {}); nothing changed", d.matched, limit);
                        for (reason, n) in &d.by_reason {
                            emit!("  {reason}: {n}");
                        }
                        emit!("  ids: {:?}{}", d.sample_ids, if d.matched > d.sample_ids.len() { " ..." } else { "" });
                        if !d.superseded_by_delete.is_empty() {
                            emit!("  {} of them would be superseded by a recorded delete (acked unsent; the document stays deleted):", d.superseded_by_delete.len());
                            for s in &d.superseded_by_delete {
                                emit!("    id {} (version {}): deleted at version {}", s.id, s.version, s.deleted_version);
                            }
                        }
                    }
                    return Ok(());
                }
                let Some(reason) = reason.filter(|r| !r.trim().is_empty()) else {
                    anyhow::bail!("--reason \"why this replay\" is required to execute a replay (it goes into the audit trail); or use --dry-run");
                };
                let actor = actor.unwrap_or_else(replay::os_user);
                let r = replay::execute(&client, &filter, &actor, &reason).await?;
                if json {
                    emit!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    emit!("replayed {} events (audit #{} by {actor}): {:?}", r.count, r.audit_id, r.ids);
                }
                Ok(())
            }
            Command::Console => {
                let (addr, access) = console.expect("checked above");
                let shutdown = worker::shutdown_on_signals();
                outbox_worker::console::serve(cfg, addr, access, shutdown).await
            }
            Command::Audit { limit, json } => {
                let client = connect(&cfg, "audit").await?;
                let rows = outbox_worker::replay::audit_trail(&client, limit).await?;
                if json {
                    emit!("{}", serde_json::to_string_pretty(&rows)?);
                } else if rows.is_empty() {
                    emit!("no replays yet");
                } else {
                    for r in rows {
                        emit!(
                            "#{} {} by {}: {} events, reason {:?}, filter {}, ids {:?}",
                            r.id,
                            r.replayed_at.format("%Y-%m-%d %H:%M:%S UTC"),
                            r.actor,
                            r.event_count,
                            r.reason,
                            r.filter,
                            r.event_ids
                        );
                    }
                }
                Ok(())
            }
            Command::Produce { opts, json } => {
                let report = producer::produce(&cfg, &opts).await?;
                if json {
                    emit!("{}", serde_json::to_string(&report)?);
                } else {
                    emit!(
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
    let colour = colour_logs(
        std::io::stderr().is_terminal(),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    match cfg.log_format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

/// Colour codes belong on a terminal only: in a log file they are noise. `NO_COLOR` set to
/// anything but the empty string turns them off there too (no-color.org).
fn colour_logs(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::colour_logs;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour_logs(true, None));
        assert!(colour_logs(true, Some("".as_ref())));
        assert!(!colour_logs(true, Some("1".as_ref())));
        assert!(!colour_logs(false, None));
        assert!(!colour_logs(false, Some("1".as_ref())));
    }
}
