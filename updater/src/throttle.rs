//! At most one log line per interval for a failure that every request
//! would repeat during an outage or a flood (the database gone, argon2
//! slots taken): thousands of routers must not turn into thousands of log
//! lines a second. The line that is written says how many were left out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub(crate) struct LogThrottle {
    base: Instant,
    interval_ms: u64,
    /// Milliseconds after `base` before which nothing more is written.
    next_ms: AtomicU64,
    left_out: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> LogThrottle {
        LogThrottle {
            base: Instant::now(),
            interval_ms: u64::try_from(interval.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            left_out: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: write this line, saying that `n` like ones were left out
    /// since the last; `None`: leave it out.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.interval_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.left_out.swap(0, Ordering::Relaxed));
        }
        self.left_out.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let throttle = LogThrottle::new(Duration::from_millis(200));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..5 {
            assert_eq!(throttle.allow(), None);
        }
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(throttle.allow(), Some(5));
        assert_eq!(throttle.allow(), None);
    }

    #[test]
    fn racing_threads_write_one_line() {
        let throttle = std::sync::Arc::new(LogThrottle::new(Duration::from_secs(60)));
        let allowed: u64 = (0..4)
            .map(|_| {
                let throttle = throttle.clone();
                std::thread::spawn(move || (0..1000).filter(|_| throttle.allow().is_some()).count())
            })
            .map(|t| t.join().unwrap() as u64)
            .sum();
        assert_eq!(allowed, 1);
        assert_eq!(throttle.left_out.load(Ordering::Relaxed), 3999);
    }
}
