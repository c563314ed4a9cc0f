//! The core's one source of time: folder times and anything else the core dates ask
//! this clock, so tests step time instead of sleeping. No behaviour depends on a window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Added to the real time; only tests move it.
    offset_ns: Arc<AtomicU64>,
}

impl Clock {
    pub fn now(&self) -> Instant {
        Instant::now() + Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }

    /// Wall-clock time on this clock (folder times).
    pub fn system_now(&self) -> SystemTime {
        SystemTime::now() + Duration::from_nanos(self.offset_ns.load(Ordering::Relaxed))
    }

    /// Time since `then`, on this clock.
    pub fn since(&self, then: Instant) -> Duration {
        self.now().saturating_duration_since(then)
    }

    /// Move this clock (and every copy of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ns.fetch_add(by.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advancing_moves_every_copy() {
        let c = Clock::default();
        let copy = c.clone();
        let t = c.now();
        copy.advance(Duration::from_secs(5));
        assert!(c.since(t) >= Duration::from_secs(5));
    }
}
