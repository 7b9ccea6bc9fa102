//! The ack and failure chart: the workers' counters, sampled from their `/metrics`
//! (OUTBOX_CONSOLE_METRICS_URLS), per minute over the last hour, drawn as inline SVG.
//!
//! Why the metrics and not the database: the insert-only log records no time of ack (an
//! ack moves a cursor or deletes a piece; the log's rows go by slot with TRUNCATE), so the
//! database can tell what is failed now, never how many events were acked in a minute.
//! The counters `outbox_acked_total` and `outbox_terminal_failed_total` say both. They are
//! per process and restart from zero with it: a counter that went down restarted, and its
//! new value is the increase. The chart covers the time since the console started.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

use crate::metrics::{ACKED_TOTAL, TERMINAL_FAILED_TOTAL};

/// Minutes the chart shows.
pub const MINUTES: usize = 60;

/// The sum of every series of the counter `name` in Prometheus text; `None` when absent.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with('{') || rest.starts_with(' ')) {
            continue; // another metric whose name starts with this one
        }
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// The sum of the series of counter `name` whose labels include `label` (`key="value"`,
/// as the text writes it); `None` when no series has it.
pub fn metric_sum_with(text: &str, name: &str, label: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines() {
        let Some(labels) = line
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix('{'))
            .and_then(|rest| rest.split_once('}'))
            .map(|(labels, _)| labels)
        else {
            continue;
        };
        if !labels.split(',').any(|l| l.trim() == label) {
            continue;
        }
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += v;
        }
    }
    sum
}

/// The label of the acks of index events a recorded delete superseded (runbook §7.8).
pub const SUPERSEDED_BY_DELETE: &str = r#"kind="superseded_by_delete""#;

/// How much a counter rose between two samples of one process (see the module's note on
/// restarts). The first sample gives no increase.
pub fn increase(previous: Option<f64>, current: f64) -> f64 {
    match previous {
        None => 0.0,
        Some(p) if current >= p => current - p,
        Some(_) => current,
    }
}

/// Per-minute increases of acks and failures, summed over the scraped workers.
#[derive(Debug, Default)]
pub struct Rates {
    minutes: BTreeMap<DateTime<Utc>, (f64, f64)>,
    last: HashMap<String, (f64, f64)>,
    /// Each worker's last `outbox_acked_total{kind="superseded_by_delete"}` (the document
    /// page shows their sum; the counter has no document label).
    superseded: HashMap<String, f64>,
    /// The last scrape's problems, shown under the chart.
    pub errors: Vec<String>,
    pub scrapes: u64,
}

impl Rates {
    /// One sample of one worker's counters at `now`.
    pub fn record(&mut self, now: DateTime<Utc>, url: &str, acked: f64, failed: f64) {
        let prev = self.last.insert(url.to_string(), (acked, failed));
        let minute = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        let e = self.minutes.entry(minute).or_default();
        e.0 += increase(prev.map(|p| p.0), acked);
        e.1 += increase(prev.map(|p| p.1), failed);
        let horizon = minute - TimeDelta::minutes(MINUTES as i64);
        self.minutes.retain(|m, _| *m > horizon);
    }

    /// One worker's superseded-by-delete acks so far (its counter, since it started).
    pub fn record_superseded(&mut self, url: &str, acked: f64) {
        self.superseded.insert(url.to_string(), acked);
    }

    /// The scraped workers' superseded-by-delete acks since each started, and how many
    /// workers answered at least once; `None` before any did.
    pub fn superseded_total(&self) -> Option<(f64, usize)> {
        (!self.superseded.is_empty())
            .then(|| (self.superseded.values().sum(), self.superseded.len()))
    }

    /// The last [`MINUTES`] minutes up to `now`, oldest first: (minute, acks, failures).
    pub fn series(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, f64, f64)> {
        let end = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
        (0..MINUTES as i64)
            .rev()
            .map(|back| {
                let m = end - TimeDelta::minutes(back);
                let (a, f) = self.minutes.get(&m).copied().unwrap_or_default();
                (m, a, f)
            })
            .collect()
    }
}

/// Sample every URL once.
pub async fn scrape(http: &reqwest::Client, urls: &[String], rates: &std::sync::Mutex<Rates>) {
    let mut samples = Vec::new();
    let mut errors = Vec::new();
    for url in urls {
        let text = match http.get(url).send().await {
            Ok(r) if r.status().is_success() => r.text().await.ok(),
            Ok(r) => {
                errors.push(format!("{url}: HTTP {}", r.status().as_u16()));
                None
            }
            Err(e) => {
                errors.push(format!("{url}: {}", crate::error_chain::error_chain(&e)));
                None
            }
        };
        if let Some(t) = text {
            let acked = metric_sum(&t, ACKED_TOTAL).unwrap_or(0.0);
            let failed = metric_sum(&t, TERMINAL_FAILED_TOTAL).unwrap_or(0.0);
            let superseded = metric_sum_with(&t, ACKED_TOTAL, SUPERSEDED_BY_DELETE).unwrap_or(0.0);
            samples.push((url, acked, failed, superseded));
        }
    }
    let now = Utc::now();
    let mut r = rates.lock().expect("rates lock");
    for (url, a, f, s) in samples {
        r.record(now, url, a, f);
        r.record_superseded(url, s);
    }
    r.errors = errors;
    r.scrapes += 1;
}

/// The chart: acks (green) and failures (red) per minute, as an inline SVG.
pub fn chart_svg(series: &[(DateTime<Utc>, f64, f64)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 160.0;
    const PAD: f64 = 30.0;
    let top = series
        .iter()
        .map(|(_, a, f)| a.max(*f))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let n = series.len().max(2) as f64;
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n - 1.0);
    let y = |v: f64| H - PAD - (H - 2.0 * PAD) * v / top;
    let line = |pick: fn(&(DateTime<Utc>, f64, f64)) -> f64| {
        series
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{:.1},{:.1}", x(i), y(pick(p))))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let acks: f64 = series.iter().map(|p| p.1).sum();
    let fails: f64 = series.iter().map(|p| p.2).sum();
    format!(
        r##"<svg id="rate-chart" data-acked="{acks}" data-failed="{fails}" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="acks and failures per minute, last hour">
<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" stroke="#999"/>
<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" stroke="#999"/>
<text x="2" y="{ty}" font-size="10">{top}</text><text x="2" y="{b}" font-size="10">0</text>
<text x="{PAD}" y="{lx}" font-size="10">-60 min</text><text x="{mid}" y="{lx}" font-size="10">-30 min</text><text x="{rl}" y="{lx}" font-size="10">now</text>
<polyline fill="none" stroke="#2a7" stroke-width="2" points="{a}"/>
<polyline fill="none" stroke="#c33" stroke-width="2" points="{f}"/>
<text x="{lg}" y="14" font-size="11" fill="#2a7">acked/min ({acks} in the hour)</text>
<text x="{lg2}" y="14" font-size="11" fill="#c33">failed/min ({fails})</text>
</svg>"##,
        b = H - PAD,
        r = W - PAD,
        ty = PAD + 4.0,
        top = top.round(),
        lx = H - PAD + 14.0,
        mid = W / 2.0 - 20.0,
        rl = W - PAD - 16.0,
        a = line(|p| p.1),
        f = line(|p| p.2),
        lg = PAD + 10.0,
        lg2 = PAD + 260.0,
        acks = acks.round(),
        fails = fails.round(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE outbox_acked_total counter
outbox_acked_total{projection=\"a\"} 10
outbox_acked_total{projection=\"b\"} 5
outbox_acked_total_other 99
outbox_terminal_failed_total{reason=\"x\"} 2
";

    #[test]
    fn sums_every_series_of_one_counter() {
        assert_eq!(metric_sum(TEXT, "outbox_acked_total"), Some(15.0));
        assert_eq!(metric_sum(TEXT, "outbox_terminal_failed_total"), Some(2.0));
        assert_eq!(metric_sum(TEXT, "outbox_reclaimed_total"), None);
        assert_eq!(
            metric_sum("outbox_acked_total 7\n", "outbox_acked_total"),
            Some(7.0)
        );
    }

    #[test]
    fn sums_the_series_with_one_label() {
        let text = "outbox_acked_total{kind=\"indexed\"} 10
outbox_acked_total{kind=\"superseded_by_delete\"} 3
outbox_acked_total{projection=\"p\",kind=\"superseded_by_delete\"} 2
outbox_acked_total_x{kind=\"superseded_by_delete\"} 50
outbox_acked_total 7
";
        assert_eq!(
            metric_sum_with(text, "outbox_acked_total", SUPERSEDED_BY_DELETE),
            Some(5.0)
        );
        assert_eq!(
            metric_sum_with(text, "outbox_acked_total", r#"kind="not_found""#),
            None
        );
    }

    #[test]
    fn superseded_totals_are_each_workers_last_value() {
        let mut r = Rates::default();
        assert_eq!(r.superseded_total(), None);
        r.record_superseded("w1", 2.0);
        r.record_superseded("w1", 4.0);
        r.record_superseded("w2", 1.0);
        assert_eq!(r.superseded_total(), Some((5.0, 2)));
    }

    #[test]
    fn increases_survive_a_restart() {
        assert_eq!(increase(None, 50.0), 0.0);
        assert_eq!(increase(Some(50.0), 80.0), 30.0);
        assert_eq!(increase(Some(80.0), 5.0), 5.0);
    }

    #[test]
    fn samples_land_in_their_minute_and_age_out() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:10Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = Rates::default();
        r.record(t0, "w1", 100.0, 1.0);
        r.record(t0 + TimeDelta::seconds(20), "w1", 130.0, 3.0);
        r.record(t0 + TimeDelta::seconds(30), "w2", 7.0, 0.0);
        r.record(t0 + TimeDelta::seconds(70), "w1", 140.0, 3.0);
        r.record(t0 + TimeDelta::seconds(75), "w2", 9.0, 0.0);
        let s = r.series(t0 + TimeDelta::seconds(80));
        assert_eq!(s.len(), MINUTES);
        assert_eq!((s[58].1, s[58].2), (30.0, 2.0));
        assert_eq!((s[59].1, s[59].2), (12.0, 0.0));
        // An hour later the old minutes are gone.
        r.record(t0 + TimeDelta::minutes(70), "w1", 140.0, 3.0);
        assert!(
            r.series(t0 + TimeDelta::minutes(70))
                .iter()
                .all(|p| p.1 == 0.0)
        );
    }

    #[test]
    fn the_chart_is_one_svg_with_both_lines() {
        let now = Utc::now();
        let series: Vec<_> = (0..60).map(|i| (now, i as f64, (i % 3) as f64)).collect();
        let svg = chart_svg(&series);
        assert!(svg.starts_with("<svg"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("(1770 in the hour)"), "{svg}");
        assert!(svg.contains(">59<"), "top of the scale: {svg}");
    }
}
