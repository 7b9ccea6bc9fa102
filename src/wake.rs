//! Wakes of the pipeline: where a wake comes from (`WakeSource`, whose metric label is
//! defined here and nowhere else), and the `Waker` through which start-up, the listener and
//! the reclaimer wake an idle pipeline. Wakes coalesce: however many arrive while the
//! pipeline is busy, it drains once more.

use std::sync::{
    Arc,
    atomic::{AtomicU8, Ordering},
};

use tokio::sync::Notify;

use crate::metrics as m;

/// Why the pipeline looked for work; the `source` label of `outbox_wakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WakeSource {
    /// The worker started: drain whatever is there.
    Startup,
    /// A NOTIFY from the insert trigger.
    Notification,
    /// The LISTEN connection is up: catch up on what was committed before.
    ListenConnected,
    /// The LISTEN connection is back: notifications sent meanwhile are lost, catch up.
    ListenReconnected,
    /// The reclaimer returned stuck events to pending.
    Reclaim,
    /// The jittered fallback poll (OUTBOX_POLL_INTERVAL_SECONDS).
    Poll,
    /// The earliest scheduled retry fell due.
    RetryDue,
    /// A follow-up check after going idle found claimable events.
    FollowUp,
}

impl WakeSource {
    /// Every source, in `repr` order.
    pub const ALL: [WakeSource; 8] = [
        WakeSource::Startup,
        WakeSource::Notification,
        WakeSource::ListenConnected,
        WakeSource::ListenReconnected,
        WakeSource::Reclaim,
        WakeSource::Poll,
        WakeSource::RetryDue,
        WakeSource::FollowUp,
    ];

    /// The metric label. Dashboards, alerts and tests read these strings: never rename one.
    pub fn label(self) -> &'static str {
        match self {
            WakeSource::Startup => "startup",
            WakeSource::Notification => "notification",
            WakeSource::ListenConnected => "listen_connected",
            WakeSource::ListenReconnected => "listen_reconnected",
            WakeSource::Reclaim => "reclaim",
            WakeSource::Poll => "poll",
            WakeSource::RetryDue => "retry_due",
            WakeSource::FollowUp => "follow_up",
        }
    }

    /// Sent through the `Waker` by another task (as opposed to one of the pipeline's own
    /// idle timers). Such a wake may come in bursts, so the pipeline debounces it.
    pub fn is_pushed(self) -> bool {
        match self {
            WakeSource::Startup
            | WakeSource::Notification
            | WakeSource::ListenConnected
            | WakeSource::ListenReconnected
            | WakeSource::Reclaim => true,
            WakeSource::Poll | WakeSource::RetryDue | WakeSource::FollowUp => false,
        }
    }

    /// Count this wake in `outbox_wakes_total{source}`.
    pub fn count(self) {
        metrics::counter!(m::WAKES_TOTAL, "source" => self.label()).increment(1);
    }

    fn from_repr(v: u8) -> WakeSource {
        WakeSource::ALL
            .get(usize::from(v))
            .copied()
            .unwrap_or(WakeSource::Notification)
    }
}

#[derive(Default)]
struct Inner {
    notify: Notify,
    /// The source of the latest wake (wakes coalesce, so earlier ones are only counted).
    last: AtomicU8,
}

/// Wakes the pipeline; clones share one permit, so a burst of wakes is one drain.
#[derive(Clone, Default)]
pub struct Waker(Arc<Inner>);

impl Waker {
    pub fn wake(&self, source: WakeSource) {
        source.count();
        self.0.last.store(source as u8, Ordering::Relaxed);
        self.0.notify.notify_one();
    }

    /// Until the next wake (or at once if one came in meanwhile); its source.
    pub async fn woken(&self) -> WakeSource {
        self.0.notify.notified().await;
        WakeSource::from_repr(self.0.last.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_metric_labels_of_today() {
        let labels: Vec<&str> = WakeSource::ALL.iter().map(|s| s.label()).collect();
        assert_eq!(
            labels,
            [
                "startup",
                "notification",
                "listen_connected",
                "listen_reconnected",
                "reclaim",
                "poll",
                "retry_due",
                "follow_up"
            ]
        );
    }

    #[test]
    fn repr_round_trips() {
        for s in WakeSource::ALL {
            assert_eq!(WakeSource::from_repr(s as u8), s);
        }
    }

    #[test]
    fn only_the_idle_timers_are_not_pushed() {
        let timers: Vec<WakeSource> = WakeSource::ALL
            .into_iter()
            .filter(|s| !s.is_pushed())
            .collect();
        assert_eq!(
            timers,
            [WakeSource::Poll, WakeSource::RetryDue, WakeSource::FollowUp]
        );
    }

    #[test]
    fn wakes_coalesce_into_one_permit_carrying_the_latest_source() {
        use futures::FutureExt;
        let waker = Waker::default();
        waker.wake(WakeSource::Startup);
        waker.clone().wake(WakeSource::Reclaim);
        assert_eq!(waker.woken().now_or_never(), Some(WakeSource::Reclaim));
        assert_eq!(
            waker.woken().now_or_never(),
            None,
            "two wakes left one permit, not two"
        );
    }
}
