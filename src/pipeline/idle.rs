//! When to drain and when to sleep: the idle/drain state machine of the trigger, as pure
//! decisions (an event in, an action out), and the timers of an idle worker.
//!
//! After a drain, in adaptive notify mode: work came in meanwhile (claimed > 0) -> debounce
//! and drain again, so under steady traffic the worker never marks itself waiting and
//! producers' commits take no NOTIFY lock; nothing came (claimed == 0) -> mark this worker
//! waiting, then claim once more for rows committed before the mark was visible to
//! producers; still nothing -> sleep. In the other modes a drain that ends goes to sleep.
//! An idle worker wakes on a wake from another task (a notification, the reclaimer, ...;
//! debounced), the jittered poll, the next scheduled retry falling due, or a follow-up check
//! that finds claimable events.

use std::{
    collections::VecDeque,
    ops::Range,
    time::{Duration, Instant},
};

use crate::wake::WakeSource;

/// Follow-up checks after going idle: they catch a producer that committed just after
/// the worker's mark (its insert saw nobody waiting, so it did not notify).
pub const IDLE_FOLLOW_UPS: &[Duration] = &[
    Duration::from_millis(5),
    Duration::from_millis(25),
    Duration::from_millis(100),
    Duration::from_millis(400),
    Duration::from_millis(1000),
];

/// The poll interval is multiplied by a factor drawn from this range, so that workers
/// started together do not poll together.
pub const POLL_JITTER: Range<f64> = 0.8..1.2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for a wake or a timer.
    Sleeping,
    /// Draining.
    Draining,
    /// Marked waiting, draining once more (adaptive mode).
    Rechecking,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A sleeping worker was woken.
    Woken(WakeSource),
    /// A drain ended (its last claim came back short) having claimed this many events.
    Drained { claimed: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Wait OUTBOX_DEBOUNCE_MS, then drain: larger claims for a little latency.
    DebounceThenDrain,
    Drain,
    /// Mark this worker waiting (producers then notify), then drain once more.
    MarkWaitingThenDrain,
    /// Arm the idle timers and sleep.
    Sleep,
}

/// The next state and what to do. `adaptive`: notify mode adaptive.
pub fn step(state: State, event: Event, adaptive: bool) -> (State, Action) {
    match (state, event) {
        (_, Event::Woken(source)) if source.is_pushed() => {
            (State::Draining, Action::DebounceThenDrain)
        }
        (_, Event::Woken(_)) => (State::Draining, Action::Drain),
        (_, Event::Drained { .. }) if !adaptive => (State::Sleeping, Action::Sleep),
        (State::Rechecking, Event::Drained { claimed: 0 }) => (State::Sleeping, Action::Sleep),
        // Rows committed before the mark: drain them at once, they are waiting already.
        (State::Rechecking, Event::Drained { .. }) => (State::Draining, Action::Drain),
        (_, Event::Drained { claimed: 0 }) => (State::Rechecking, Action::MarkWaitingThenDrain),
        (_, Event::Drained { .. }) => (State::Draining, Action::DebounceThenDrain),
    }
}

/// How long a waiting mark lives: a little longer than the longest jittered poll, since a
/// waiting worker renews it at every poll, while the mark of a dead one soon stops producers
/// notifying for it.
pub fn mark_ttl(poll_interval: Duration) -> Duration {
    poll_interval.mul_f64(1.5) + Duration::from_secs(2)
}

/// An idle worker's timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    Poll,
    RetryDue,
    FollowUp,
}

impl Timer {
    /// The wake a timer becomes (a follow-up only if it found claimable events).
    pub fn source(self) -> WakeSource {
        match self {
            Timer::Poll => WakeSource::Poll,
            Timer::RetryDue => WakeSource::RetryDue,
            Timer::FollowUp => WakeSource::FollowUp,
        }
    }
}

/// When each timer of an idle worker fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timers {
    poll_at: Instant,
    retry_due_at: Option<Instant>,
    follow_ups: VecDeque<Instant>,
}

impl Timers {
    /// Armed on going idle at `now`: the follow-ups, the poll after `poll_interval * jitter`,
    /// and the earliest scheduled retry, due in `retry_due_in` (None: none is scheduled).
    pub fn arm(
        now: Instant,
        poll_interval: Duration,
        jitter: f64,
        retry_due_in: Option<Duration>,
    ) -> Timers {
        Timers {
            poll_at: now + poll_interval.mul_f64(jitter),
            // A millisecond late, so that the retry is due when the claim looks.
            retry_due_at: retry_due_in.map(|d| now + d + Duration::from_millis(1)),
            follow_ups: IDLE_FOLLOW_UPS.iter().map(|d| now + *d).collect(),
        }
    }

    /// The timer that fires first; on a tie the poll, then the retry, then a follow-up.
    pub fn next(&self) -> (Instant, Timer) {
        let mut next = (self.poll_at, Timer::Poll);
        if let Some(at) = self.retry_due_at.filter(|at| *at < next.0) {
            next = (at, Timer::RetryDue);
        }
        if let Some(at) = self.follow_ups.front().copied().filter(|at| *at < next.0) {
            next = (at, Timer::FollowUp);
        }
        next
    }

    /// A follow-up check ran (and found nothing): the next one is up.
    pub fn follow_up_done(&mut self) {
        self.follow_ups.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use State::*;

    const ADAPTIVE: bool = true;
    const ALWAYS_OR_OFF: bool = false;

    #[test]
    fn transitions() {
        let woken = Event::Woken;
        let drained = |claimed| Event::Drained { claimed };
        #[rustfmt::skip]
        let table = [
            // (mode, state, event) -> (state, action)
            (ADAPTIVE, Sleeping, woken(WakeSource::Notification), Draining, DebounceThenDrain),
            (ADAPTIVE, Sleeping, woken(WakeSource::Startup), Draining, DebounceThenDrain),
            (ADAPTIVE, Sleeping, woken(WakeSource::ListenConnected), Draining, DebounceThenDrain),
            (ADAPTIVE, Sleeping, woken(WakeSource::ListenReconnected), Draining, DebounceThenDrain),
            (ADAPTIVE, Sleeping, woken(WakeSource::Reclaim), Draining, DebounceThenDrain),
            (ADAPTIVE, Sleeping, woken(WakeSource::Poll), Draining, Drain),
            (ADAPTIVE, Sleeping, woken(WakeSource::RetryDue), Draining, Drain),
            (ADAPTIVE, Sleeping, woken(WakeSource::FollowUp), Draining, Drain),
            // Work came in while draining: look again before asking producers to notify.
            (ADAPTIVE, Draining, drained(500), Draining, DebounceThenDrain),
            (ADAPTIVE, Draining, drained(1), Draining, DebounceThenDrain),
            // Going idle: mark waiting, claim once more.
            (ADAPTIVE, Draining, drained(0), Rechecking, MarkWaitingThenDrain),
            (ADAPTIVE, Rechecking, drained(3), Draining, Drain),
            (ADAPTIVE, Rechecking, drained(0), Sleeping, Sleep),
            // Without the adaptive trigger a drain that ends sleeps, whatever it claimed.
            (ALWAYS_OR_OFF, Sleeping, woken(WakeSource::Notification), Draining, DebounceThenDrain),
            (ALWAYS_OR_OFF, Sleeping, woken(WakeSource::Poll), Draining, Drain),
            (ALWAYS_OR_OFF, Draining, drained(500), Sleeping, Sleep),
            (ALWAYS_OR_OFF, Draining, drained(0), Sleeping, Sleep),
        ];
        for (adaptive, state, event, next, action) in table {
            assert_eq!(
                step(state, event, adaptive),
                (next, action),
                "adaptive={adaptive} {state:?} + {event:?}"
            );
        }
    }

    #[test]
    fn steady_traffic_never_marks_waiting() {
        let mut state = Sleeping;
        let mut actions = Vec::new();
        for event in [
            Event::Woken(WakeSource::Notification),
            Event::Drained { claimed: 100 },
            Event::Drained { claimed: 80 },
            Event::Drained { claimed: 120 },
        ] {
            let (next, action) = step(state, event, ADAPTIVE);
            state = next;
            actions.push(action);
        }
        assert!(!actions.contains(&MarkWaitingThenDrain));
        assert_eq!(state, Draining);
    }

    #[test]
    fn a_mark_outlives_the_longest_poll() {
        for secs in [0.01, 1.0, 5.0, 3600.0] {
            let poll = Duration::from_secs_f64(secs);
            assert!(mark_ttl(poll) > poll.mul_f64(POLL_JITTER.end));
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn timers_fire_in_order_follow_ups_first() {
        let now = Instant::now();
        let mut t = Timers::arm(now, Duration::from_secs(1), 1.1, Some(ms(300)));
        let mut fired = Vec::new();
        loop {
            let (at, timer) = t.next();
            fired.push((at - now, timer));
            if timer != Timer::FollowUp {
                break;
            }
            t.follow_up_done();
        }
        assert_eq!(
            fired,
            vec![
                (ms(5), Timer::FollowUp),
                (ms(25), Timer::FollowUp),
                (ms(100), Timer::FollowUp),
                (ms(301), Timer::RetryDue),
            ]
        );
    }

    #[test]
    fn timers_next_picks_the_earliest() {
        let now = Instant::now();
        // (poll interval, jitter, retry due in, follow-ups already run) -> (after, timer)
        #[rustfmt::skip]
        let table = [
            (ms(1000), 1.0, None, 5, (ms(1000), Timer::Poll)),
            (ms(1000), 0.8, None, 5, (ms(800), Timer::Poll)),
            (ms(1000), 1.0, Some(ms(2000)), 5, (ms(1000), Timer::Poll)),
            (ms(1000), 1.0, Some(ms(10)), 5, (ms(11), Timer::RetryDue)),
            (ms(1000), 1.0, Some(ms(0)), 0, (ms(1), Timer::RetryDue)),
            (ms(1000), 1.0, None, 3, (ms(400), Timer::FollowUp)),
            (ms(1000), 1.0, None, 4, (ms(1000), Timer::Poll)),
            (ms(50), 1.0, None, 0, (ms(5), Timer::FollowUp)),
            (ms(50), 1.0, None, 2, (ms(50), Timer::Poll)),
            // A tie: the poll (biased first), then the retry.
            (ms(1001), 1.0, Some(ms(1000)), 5, (ms(1001), Timer::Poll)),
        ];
        for (poll, jitter, due, done, expected) in table {
            let mut t = Timers::arm(now, poll, jitter, due);
            for _ in 0..done {
                t.follow_up_done();
            }
            let (at, timer) = t.next();
            assert_eq!(
                (at - now, timer),
                expected,
                "poll {poll:?} x{jitter}, due {due:?}, {done} follow-ups done"
            );
        }
    }

    #[test]
    fn timers_become_their_wake_sources() {
        assert_eq!(Timer::Poll.source(), WakeSource::Poll);
        assert_eq!(Timer::RetryDue.source(), WakeSource::RetryDue);
        assert_eq!(Timer::FollowUp.source(), WakeSource::FollowUp);
    }
}
