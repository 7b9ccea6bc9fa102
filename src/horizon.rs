//! What holds back cleanup in the outbox's database, sampled with the other gauges
//! (sampler.rs): the dead tuples of the outbox's tables (sql/sample_dead_tuples.sql) and the
//! oldest xmin by kind of holder (sql/sample_xmin_holders.sql). VACUUM removes no dead tuple
//! younger than the oldest snapshot or running xid of the database, so a long transaction,
//! a prepared transaction or a replication slot anywhere in it lets dead tuples pile up.
//! Runbook §7.5 finds and ends the holder; alert OutboxCleanupBlocked.
//!
//! Ages in seconds: a backend has its `xact_start` and a prepared transaction its `prepared`
//! time, but a replication slot (or a walsender with hot_standby_feedback) has only an xid.
//! Those are aged with an [`XidClock`]: the sampler remembers the next xid at each sample,
//! so an xid that was already assigned at a sample is at least that sample's age. The age
//! is a lower bound, coarse by a sample interval, and restarts from 0 with the worker.

use std::{
    collections::{BTreeSet, VecDeque},
    time::Instant,
};

use deadpool_postgres::Client;

use crate::{db::DbError, sql};

/// The kinds of holder, the `kind` label of `outbox_db_oldest_xmin_age_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Backend,
    ReplicationSlot,
    PreparedTransaction,
}

impl Kind {
    pub const ALL: [Kind; 3] = [
        Kind::Backend,
        Kind::ReplicationSlot,
        Kind::PreparedTransaction,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Backend => "backend",
            Kind::ReplicationSlot => "replication_slot",
            Kind::PreparedTransaction => "prepared_transaction",
        }
    }

    fn from_label(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.label() == s)
    }
}

/// One xid a holder pins (a row of sql/sample_xmin_holders.sql).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holder {
    pub kind: Kind,
    /// The 32-bit xid the catalogs show (backend_xmin, backend_xid, xmin, transaction).
    pub xid: u32,
    /// Seconds since the holder's own timestamp, when it has one.
    pub age_seconds: Option<f64>,
}

/// The oldest holder of one kind; zero when nothing of that kind holds anything.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Oldest {
    pub seconds: f64,
    pub xids: u64,
}

/// One sample: dead tuples by table, and the oldest holder of each kind (in [`Kind::ALL`]
/// order).
#[derive(Debug, Clone, PartialEq)]
pub struct Horizon {
    pub dead_tuples: Vec<(String, i64)>,
    pub oldest: [(Kind, Oldest); 3],
}

/// How many (when, next xid) samples an [`XidClock`] keeps; past it, the older samples
/// are thinned out, so the clock spans the worker's whole life at a coarser grain.
const CLOCK_SAMPLES: usize = 1024;

/// When xids were assigned, as far as successive samples tell: (when, next xid), in order.
#[derive(Debug, Default)]
pub struct XidClock {
    samples: VecDeque<(Instant, u64)>,
}

impl XidClock {
    /// Remember that every xid below `next_xid` had been assigned at `at`.
    pub fn record(&mut self, at: Instant, next_xid: u64) {
        if self.samples.back().is_some_and(|&(_, n)| n > next_xid) {
            // Not expected (xids only grow); keep the clock monotonic rather than wrong.
            return;
        }
        self.samples.push_back((at, next_xid));
        if self.samples.len() > CLOCK_SAMPLES {
            // Keep every other sample, and always the newest. Dropping samples only makes
            // ages younger, so they stay lower bounds.
            let last = self.samples.len() - 1;
            let mut i = 0;
            self.samples.retain(|_| {
                let keep = i % 2 == 0 || i == last;
                i += 1;
                keep
            });
        }
    }

    /// Seconds since `xid` was assigned, at least: the age of the first sample that had
    /// already seen it; 0 if none had (it is newer than the last sample).
    pub fn age(&self, xid: u64, now: Instant) -> f64 {
        let first = self.samples.partition_point(|&(_, next)| next <= xid);
        self.samples
            .get(first)
            .map_or(0.0, |&(at, _)| now.saturating_duration_since(at).as_secs_f64())
    }
}

/// `xid` (32 bits, as the catalogs show it) as a 64-bit xid, taken to be the one closest
/// below `next_xid`; None if it lies above (it was assigned after the reference was taken).
pub fn widen(next_xid: u64, xid: u32) -> Option<u64> {
    // Same epoch arithmetic as PostgreSQL's: the difference of the low 32 bits, signed.
    let behind = (next_xid as u32).wrapping_sub(xid) as i32;
    u64::try_from(behind)
        .ok()
        .and_then(|b| next_xid.checked_sub(b))
}

/// The oldest holder of each kind, ages in xids from `next_xid` and in seconds from the
/// holder's timestamp or, without one, from `clock`.
pub fn oldest(
    next_xid: u64,
    holders: &[Holder],
    clock: &XidClock,
    now: Instant,
) -> [(Kind, Oldest); 3] {
    Kind::ALL.map(|kind| {
        let mut o = Oldest::default();
        for h in holders.iter().filter(|h| h.kind == kind) {
            let Some(xid) = widen(next_xid, h.xid) else {
                continue;
            };
            o.xids = o.xids.max(next_xid - xid);
            let seconds = h.age_seconds.unwrap_or_else(|| clock.age(xid, now));
            o.seconds = o.seconds.max(seconds.max(0.0));
        }
        (kind, o)
    })
}

/// Tables seen at the previous sample and gone now: their series are set to zero once.
pub fn vanished<'a>(before: &'a BTreeSet<String>, now: &[(String, i64)]) -> Vec<&'a str> {
    before
        .iter()
        .filter(|t| !now.iter().any(|(n, _)| n == *t))
        .map(String::as_str)
        .collect()
}

/// Take one sample on `client`, advancing `clock`.
pub async fn sample(client: &Client, clock: &mut XidClock) -> Result<Horizon, DbError> {
    let stmt = client.prepare_cached(sql::SAMPLE_DEAD_TUPLES).await?;
    let dead_tuples = client
        .query(&stmt, &[])
        .await?
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();

    let stmt = client.prepare_cached(sql::SAMPLE_XMIN_HOLDERS).await?;
    let rows = client.query(&stmt, &[]).await?;
    let now = Instant::now();
    let next_xid = rows.first().map_or(0, |r| r.get::<_, i64>(0) as u64);
    let holders: Vec<Holder> = rows
        .iter()
        .filter_map(|r| {
            Some(Holder {
                kind: Kind::from_label(r.get::<_, Option<&str>>(1)?)?,
                xid: u32::try_from(r.get::<_, Option<i64>>(2)?).ok()?,
                age_seconds: r.get(3),
            })
        })
        .collect();
    clock.record(now, next_xid);
    Ok(Horizon {
        dead_tuples,
        oldest: oldest(next_xid, &holders, clock, now),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn xids_widen_across_the_32_bit_wrap() {
        assert_eq!(widen(1_000, 900), Some(900));
        assert_eq!(widen(1_000, 1_000), Some(1_000));
        // Assigned after the reference was taken: not behind it.
        assert_eq!(widen(1_000, 1_001), None);
        // The next xid is past a wrap (epoch 1), the holder's xid just before it.
        let next = (1u64 << 32) + 10;
        assert_eq!(widen(next, u32::MAX - 4), Some((1u64 << 32) - 5));
        // Nothing below xid 0.
        assert_eq!(widen(10, u32::MAX - 4), None);
    }

    #[test]
    fn the_clock_ages_an_xid_by_the_first_sample_that_saw_it() {
        let t0 = Instant::now();
        let mut c = XidClock::default();
        assert_eq!(c.age(5, t0), 0.0, "no samples: no age");
        c.record(at(t0, 0), 100);
        c.record(at(t0, 5), 150);
        c.record(at(t0, 10), 150);
        c.record(at(t0, 15), 400);
        let now = at(t0, 20);
        // Assigned before the first sample: at least as old as it.
        assert_eq!(c.age(10, now), 20.0);
        // 120 was not assigned at t0 (next 100), was at t0+5.
        assert_eq!(c.age(120, now), 15.0);
        // 150 was first seen at t0+15.
        assert_eq!(c.age(150, now), 5.0);
        // Newer than every sample.
        assert_eq!(c.age(400, now), 0.0);
        // A next xid going back is ignored.
        c.record(at(t0, 16), 300);
        assert_eq!(c.samples.len(), 4);
    }

    #[test]
    fn the_clock_thins_out_and_keeps_lower_bounds() {
        let t0 = Instant::now();
        let mut c = XidClock::default();
        for i in 0..(CLOCK_SAMPLES as u64 * 3) {
            c.record(at(t0, i * 5), 1_000 + i * 10);
        }
        assert!(c.samples.len() <= CLOCK_SAMPLES, "{}", c.samples.len());
        let now = at(t0, CLOCK_SAMPLES as u64 * 15);
        // The first sample is kept, so the oldest xid keeps its full age.
        assert_eq!(c.age(0, now), (CLOCK_SAMPLES * 15) as f64);
        // Every age is at most the true one (the xid was assigned before its first sample).
        for i in (0..(CLOCK_SAMPLES as u64 * 3)).step_by(97) {
            let xid = 1_000 + i * 10;
            let exact = now.duration_since(at(t0, i * 5)).as_secs_f64();
            let aged = c.age(xid - 1, now);
            assert!(aged <= exact && aged > 0.0, "xid {xid}: {aged} vs {exact}");
        }
        // The newest sample is kept: an xid assigned just before it is seconds old.
        let last = 1_000 + (CLOCK_SAMPLES as u64 * 3 - 1) * 10;
        assert_eq!(c.age(last - 1, now), now.duration_since(at(t0, (CLOCK_SAMPLES as u64 * 3 - 1) * 5)).as_secs_f64());
    }

    #[test]
    fn the_oldest_holder_of_each_kind() {
        let t0 = Instant::now();
        let mut clock = XidClock::default();
        clock.record(at(t0, 0), 500);
        clock.record(at(t0, 60), 900);
        let now = at(t0, 90);
        let holders = [
            Holder {
                kind: Kind::Backend,
                xid: 990,
                age_seconds: Some(0.5),
            },
            Holder {
                kind: Kind::Backend,
                xid: 700,
                age_seconds: Some(75.0),
            },
            // A walsender: no xact_start, aged by the clock (650 first seen at t0 + 60).
            Holder {
                kind: Kind::Backend,
                xid: 650,
                age_seconds: None,
            },
            // A slot older than the first sample.
            Holder {
                kind: Kind::ReplicationSlot,
                xid: 400,
                age_seconds: None,
            },
            // An xid above the reference (assigned during the sample): ignored.
            Holder {
                kind: Kind::PreparedTransaction,
                xid: 1_200,
                age_seconds: Some(3.0),
            },
        ];
        let o = oldest(1_000, &holders, &clock, now);
        assert_eq!(
            o,
            [
                (
                    Kind::Backend,
                    Oldest {
                        seconds: 75.0,
                        xids: 350
                    }
                ),
                (
                    Kind::ReplicationSlot,
                    Oldest {
                        seconds: 90.0,
                        xids: 600
                    }
                ),
                (Kind::PreparedTransaction, Oldest::default()),
            ]
        );
        // Nothing holds anything: every kind reports zero.
        assert!(
            oldest(1_000, &[], &clock, now)
                .iter()
                .all(|(_, o)| *o == Oldest::default())
        );
    }

    #[test]
    fn kinds_round_trip_their_labels() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_label(k.label()), Some(k));
        }
        assert_eq!(Kind::from_label("walsender"), None);
    }

    #[test]
    fn tables_gone_since_the_last_sample() {
        let before: BTreeSet<String> = ["outbox_events", "outbox_events_p1", "outbox_events_p2"]
            .map(String::from)
            .into();
        let now = vec![
            ("outbox_events".to_string(), 0),
            ("outbox_events_p2".to_string(), 10),
            ("outbox_events_p3".to_string(), 0),
        ];
        assert_eq!(vanished(&before, &now), vec!["outbox_events_p1"]);
        assert!(vanished(&BTreeSet::new(), &now).is_empty());
    }
}
