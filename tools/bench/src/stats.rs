//! Small statistics: medians of pair ratios, and CPU time per process group from /proc (who
//! used the two cores during a run). Percentiles and `/metrics` parsing: outbox_harness.

use std::{
    collections::{BTreeMap, HashMap},
    sync::OnceLock,
};

/// Median, min and max of a set of values (the pair ratios of one figure).
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[v.len() - 1],
            n: v.len(),
        })
    }
}

pub fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (comm, user+system CPU seconds) of one process.
fn proc_stat(pid: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text[open + 1..close].to_string();
    // Fields after the command: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = text[close + 2..].split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / clock_ticks()))
}

pub fn process_cpu_seconds(pid: u32) -> Option<f64> {
    proc_stat(&pid.to_string()).map(|(_, s)| s)
}

/// CPU seconds used so far, machine-wide and by process.
#[derive(Debug, Clone, Default)]
pub struct CpuSnapshot {
    busy: f64,
    /// pid -> (group, CPU seconds)
    procs: HashMap<u32, (&'static str, f64)>,
}

/// Which group a process counts in.
fn group_of(comm: &str, pid: u32, worker: Option<u32>) -> &'static str {
    if Some(pid) == worker {
        "worker"
    } else if pid == std::process::id() {
        "bench"
    } else if comm == "postgres" {
        "postgres"
    } else if comm == "java" {
        "engine"
    } else if comm.starts_with("outbox-worker") {
        "producer"
    } else {
        "other"
    }
}

impl CpuSnapshot {
    pub fn take(worker: Option<u32>) -> CpuSnapshot {
        let mut snap = CpuSnapshot::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/stat")
            && let Some(line) = stat.lines().next()
        {
            // cpu user nice system idle iowait irq softirq steal ...: all but idle and iowait.
            let v: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            let total: f64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
            snap.busy = (total - idle) / clock_ticks();
        }
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for entry in dir.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                if let Some((comm, secs)) = proc_stat(&pid.to_string()) {
                    snap.procs.insert(pid, (group_of(&comm, pid, worker), secs));
                }
            }
        }
        snap
    }

    /// CPU used between two snapshots, as cores busy on average over `wall` seconds:
    /// machine-wide, and by group. A process that started in between counts in full; one
    /// that ended in between is missing from its group (not from `machine`).
    pub fn cores_since(&self, before: &CpuSnapshot, wall: f64) -> BTreeMap<String, f64> {
        let wall = wall.max(1e-9);
        let mut groups: BTreeMap<String, f64> = BTreeMap::new();
        for (pid, (group, secs)) in &self.procs {
            let was = before.procs.get(pid).map_or(0.0, |(_, s)| *s);
            *groups.entry(group.to_string()).or_default() += (secs - was).max(0.0);
        }
        let mut out: BTreeMap<String, f64> = groups
            .into_iter()
            .map(|(g, secs)| (g, round3(secs / wall)))
            .collect();
        out.insert(
            "machine".to_string(),
            round3((self.busy - before.busy) / wall),
        );
        out
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_medians() {
        let s = Spread::of(&[0.9, 1.1, 1.0, 0.8]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (0.95, 0.8, 1.1, 4));
        assert_eq!(median(&[3.0, f64::NAN, 1.0, 2.0]), Some(2.0));
        assert!(Spread::of(&[f64::NAN]).is_none());
        assert_eq!(round3(1.23456), 1.235);
    }
}
