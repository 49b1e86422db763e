//! At most one log line per cause (and key) per interval, so that junk
//! traffic cannot grow the logs without bound: a flood of wrong secrets for
//! one key, or of calls without credentials, writes one line an interval,
//! and the first line of the next interval says how many were left out.
//!
//! Memory is bounded too: at most [`LogThrottle::new`]'s `capacity` keys are
//! tracked; past that, every new key shares one window.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often a repeated event is written, at most, by default.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// How many distinct keys a throttle tracks before new ones share a window.
pub const TRACKED_KEYS: usize = 1024;

/// How many intervals a key's count of left-out lines waits for the key to
/// come back before room is made for another key.
const KEPT_INTERVALS: u32 = 6;

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    /// Events left out since the window started.
    suppressed: u64,
}

/// Whether to write this occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    /// Write it, saying how many like it were left out in the interval before.
    Log { suppressed_before: u64 },
    /// Leave it out (it is counted for the next line).
    Suppress,
}

pub struct LogThrottle<K> {
    interval: Duration,
    capacity: usize,
    /// Per key; `None` is the window every key past the capacity shares.
    windows: Mutex<HashMap<Option<K>, Window>>,
}

impl<K: Hash + Eq + Clone> LogThrottle<K> {
    pub fn new(interval: Duration, capacity: usize) -> LogThrottle<K> {
        LogThrottle {
            interval,
            capacity,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Decides on one occurrence of the event for `key` at `now`.
    pub fn check(&self, key: &K, now: Instant) -> Throttled {
        // A panicking holder leaves the counts usable.
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let tracked = Some(key.clone());
        let slot = if windows.contains_key(&tracked) || self.has_room(&mut windows, now) {
            tracked
        } else {
            None
        };
        match windows.get_mut(&slot) {
            Some(window) if now.saturating_duration_since(window.started) < self.interval => {
                window.suppressed += 1;
                Throttled::Suppress
            }
            Some(window) => {
                let suppressed_before = window.suppressed;
                *window = Window {
                    started: now,
                    suppressed: 0,
                };
                Throttled::Log { suppressed_before }
            }
            None => {
                let window = Window {
                    started: now,
                    suppressed: 0,
                };
                windows.insert(slot, window);
                Throttled::Log {
                    suppressed_before: 0,
                }
            }
        }
    }

    /// Whether another key may be tracked, after forgetting keys whose
    /// window has ended: at once when nothing was left out in it, else after
    /// [`KEPT_INTERVALS`] (a key that comes back by then still hears how many
    /// of its lines were left out).
    fn has_room(&self, windows: &mut HashMap<Option<K>, Window>, now: Instant) -> bool {
        if windows.len() < self.capacity {
            return true;
        }
        windows.retain(|key, window| {
            let age = now.saturating_duration_since(window.started);
            let kept_for = if window.suppressed > 0 {
                self.interval * KEPT_INTERVALS
            } else {
                self.interval
            };
            key.is_none() || age < kept_for
        });
        windows.len() < self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn one_line_an_interval_and_the_next_says_how_many_were_left_out() {
        let throttle = LogThrottle::new(10 * SECOND, 8);
        let start = Instant::now();
        let log = |suppressed_before| Throttled::Log { suppressed_before };
        assert_eq!(throttle.check(&"a", start), log(0));
        for offset in 1..=979 {
            let at = start + Duration::from_millis(offset);
            assert_eq!(throttle.check(&"a", at), Throttled::Suppress);
        }
        assert_eq!(throttle.check(&"b", start + SECOND), log(0), "keys apart");
        assert_eq!(throttle.check(&"a", start + 10 * SECOND), log(979));
        assert_eq!(throttle.check(&"a", start + 21 * SECOND), log(0));
    }

    #[test]
    fn keys_past_the_capacity_share_one_window() {
        let throttle = LogThrottle::new(10 * SECOND, 2);
        let start = Instant::now();
        let lines = (0..1_000)
            .filter(|key| throttle.check(key, start) != Throttled::Suppress)
            .count();
        // Two tracked keys, and one line for all the others together.
        assert_eq!(lines, 3);
        assert!(throttle.windows.lock().unwrap().len() <= 3);
    }

    #[test]
    fn quiet_keys_make_room_once_their_window_ends() {
        let throttle = LogThrottle::new(10 * SECOND, 2);
        let start = Instant::now();
        throttle.check(&1, start);
        throttle.check(&2, start);
        let later = start + 11 * SECOND;
        assert_eq!(
            throttle.check(&3, later),
            Throttled::Log {
                suppressed_before: 0
            }
        );
        assert_eq!(throttle.check(&3, later + SECOND), Throttled::Suppress);
        // Key 3 is tracked on its own, not in the shared window.
        assert!(throttle.windows.lock().unwrap().contains_key(&Some(3)));
    }
}
