//! Reading a worker's `/metrics` page (Prometheus text), and percentiles.
//!
//! A sample line is `series value`, the series being `name` or `name{labels}`.

use std::collections::BTreeMap;

/// Every sample of a page: (series, value).
pub fn samples(text: &str) -> impl Iterator<Item = (&str, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series, value.parse().ok()?))
        })
}

/// The metric name of a series.
fn name_of(series: &str) -> &str {
    series.split('{').next().unwrap_or(series)
}

/// A metric summed over all its series; or one series, given whole (`name{labels}`).
/// 0 if absent.
pub fn sum(text: &str, name: &str) -> f64 {
    samples(text)
        .filter(|(series, _)| *series == name || name_of(series) == name)
        .map(|(_, v)| v)
        .sum()
}

/// A metric summed over the series whose labels hold `label`, e.g. `source="notification"`.
pub fn labelled(text: &str, name: &str, label: &str) -> f64 {
    samples(text)
        .filter(|(series, _)| name_of(series) == name && series.contains(label))
        .map(|(_, v)| v)
        .sum()
}

/// Every counter (`*_total`) by series.
pub fn counters(text: &str) -> BTreeMap<String, f64> {
    samples(text)
        .filter(|(series, _)| name_of(series).ends_with("_total"))
        .map(|(series, v)| (series.to_string(), v))
        .collect()
}

/// The cumulative buckets of a histogram: (upper bound, count), +Inf last; the series of
/// several label sets are added up bound by bound.
pub fn histogram(text: &str, name: &str) -> Vec<(f64, f64)> {
    histogram_where(text, name, "")
}

/// The cumulative buckets of the series of a histogram whose labels hold `label`, e.g.
/// `stage="bulk"`, added up bound by bound as in [`histogram`].
pub fn histogram_labelled(text: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    histogram_where(text, name, label)
}

fn histogram_where(text: &str, name: &str, label: &str) -> Vec<(f64, f64)> {
    let bucket = format!("{name}_bucket");
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for (series, count) in samples(text).filter(|(s, _)| name_of(s) == bucket && s.contains(label))
    {
        let Some((_, rest)) = series.split_once("le=\"") else {
            continue;
        };
        let Some((le, _)) = rest.split_once('"') else {
            continue;
        };
        let le = match le {
            "+Inf" => f64::INFINITY,
            s => match s.parse::<f64>() {
                Ok(v) => v,
                Err(_) => continue,
            },
        };
        // Ordered by the bound's bits: all bounds are positive.
        by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += count;
    }
    by_le.into_values().collect()
}

/// `after - before`, bucket by bucket (the observations in between).
pub fn histogram_delta(before: &[(f64, f64)], after: &[(f64, f64)]) -> Vec<(f64, f64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let b = before
                .iter()
                .find(|(l, _)| *l == le)
                .map_or(0.0, |(_, c)| *c);
            (le, n - b)
        })
        .collect()
}

/// Two histograms of the same buckets added up, bound by bound (observations of both; a
/// bound only one has counts for that one).
pub fn histogram_add(a: &[(f64, f64)], b: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut by_le: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for &(le, n) in a.iter().chain(b) {
        by_le.entry(le.to_bits()).or_insert((le, 0.0)).1 += n;
    }
    by_le.into_values().collect()
}

/// A percentile (`q` in 0..=1) of a cumulative histogram, interpolated linearly inside its
/// bucket; beyond the last finite bound, that bound (a lower bound only).
pub fn histogram_percentile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for &(le, cum) in buckets {
        if cum >= target {
            if le.is_infinite() {
                return Some(lo);
            }
            let inside = cum - below;
            let frac = if inside > 0.0 {
                (target - below) / inside
            } else {
                1.0
            };
            return Some(lo + (le - lo) * frac);
        }
        lo = le;
        below = cum;
    }
    None
}

/// The nearest-rank percentile (`q` in 0..=1) of `values`, in any order: the smallest
/// value with at least `q` of them at or below it (so the median of two is the lower).
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil() as usize;
    Some(v[rank.clamp(1, v.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# TYPE outbox_acked_total counter\n\
        outbox_acked_total{kind=\"indexed\"} 10\n\
        outbox_acked_total{kind=\"not_found\"} 2\n\
        outbox_acked_totalx 5\n\
        outbox_wakes_total{source=\"notification\"} 7\n\
        outbox_wakes_total{source=\"poll\"} 3\n\
        outbox_lag_events 4\n\
        h_bucket{le=\"0.001\"} 1\nh_bucket{le=\"0.002\"} 3\nh_bucket{le=\"+Inf\"} 4\n";

    #[test]
    fn sums_series_and_labels() {
        assert_eq!(sum(PAGE, "outbox_acked_total"), 12.0);
        assert_eq!(sum(PAGE, "outbox_acked_total{kind=\"not_found\"}"), 2.0);
        assert_eq!(sum(PAGE, "outbox_missing_total"), 0.0);
        assert_eq!(
            labelled(PAGE, "outbox_wakes_total", "source=\"notification\""),
            7.0
        );
        let c = counters(PAGE);
        assert_eq!(c.len(), 4, "{c:?}");
        assert_eq!(c["outbox_wakes_total{source=\"poll\"}"], 3.0);
    }

    #[test]
    fn histograms_and_their_percentiles() {
        let h = histogram(PAGE, "h");
        assert_eq!(h, vec![(0.001, 1.0), (0.002, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(histogram_percentile(&h, 0.5), Some(0.0015));
        assert_eq!(histogram_percentile(&h, 1.0), Some(0.002));
        let earlier = vec![(0.001, 1.0), (0.002, 1.0), (f64::INFINITY, 1.0)];
        assert_eq!(
            histogram_delta(&earlier, &h),
            vec![(0.001, 0.0), (0.002, 2.0), (f64::INFINITY, 3.0)]
        );
        assert_eq!(histogram_percentile(&[(f64::INFINITY, 0.0)], 0.5), None);
    }

    #[test]
    fn histograms_by_label_and_added_up() {
        let page = "s_bucket{stage=\"bulk\",le=\"0.001\"} 2\n\
            s_bucket{stage=\"bulk\",le=\"+Inf\"} 3\n\
            s_bucket{stage=\"ack\",le=\"0.001\"} 5\n\
            s_bucket{stage=\"ack\",le=\"+Inf\"} 5\n";
        let bulk = histogram_labelled(page, "s", "stage=\"bulk\"");
        assert_eq!(bulk, vec![(0.001, 2.0), (f64::INFINITY, 3.0)]);
        assert_eq!(
            histogram(page, "s"),
            vec![(0.001, 7.0), (f64::INFINITY, 8.0)]
        );
        assert!(histogram_labelled(page, "s", "stage=\"wait\"").is_empty());
        let ack = histogram_labelled(page, "s", "stage=\"ack\"");
        assert_eq!(
            histogram_add(&bulk, &ack),
            vec![(0.001, 7.0), (f64::INFINITY, 8.0)]
        );
        assert_eq!(histogram_add(&[], &ack), ack);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&v, 1.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[2.0, 1.0], 0.5), Some(1.0));
        assert_eq!(percentile(&[], 0.5), None);
    }
}
