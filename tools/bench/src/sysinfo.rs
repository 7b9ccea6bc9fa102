//! Where and when the figures were taken: machine, services, date, git commit.

use serde_json::{Value, json};

use crate::ctx::Ctx;

fn command(cmd: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn utc_now() -> String {
    command("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default()
}

/// The commit, and whether the work tree differs from it (the figures are of the tree).
pub fn git() -> Value {
    let commit = command("git", &["rev-parse", "HEAD"]);
    let dirty =
        command("git", &["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
    json!({ "commit": commit, "dirty": dirty })
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(prefix))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The load average: other processes on the machine make figures noisier.
pub fn loadavg() -> Option<String> {
    Some(
        std::fs::read_to_string("/proc/loadavg")
            .ok()?
            .trim()
            .to_string(),
    )
}

pub async fn machine(ctx: &Ctx) -> Value {
    let mut pg = json!({});
    if let Ok(c) = ctx.admin().await {
        for setting in [
            "server_version",
            "synchronous_commit",
            "shared_buffers",
            "max_connections",
            "fsync",
        ] {
            if let Ok(row) = c.query_one(&format!("SHOW {setting}"), &[]).await {
                pg[setting] = Value::String(row.get(0));
            }
        }
    }
    let engine: Value = match ctx.http.get(ctx.es_url.clone()).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": first_line_with("/proc/cpuinfo", "model name"),
        "mem_total": first_line_with("/proc/meminfo", "MemTotal"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "loadavg_at_start": loadavg(),
        "postgres": pg,
        "engine": {
            "distribution": engine["version"]["distribution"],
            "version": engine["version"]["number"],
        },
    })
}
