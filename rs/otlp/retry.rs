//! When to send a failed request again: exponential backoff with jitter,
//! unless the receiver said how long to wait (HTTP `Retry-After`, gRPC
//! `RetryInfo`).

use std::time::{Duration, SystemTime};

pub const INITIAL: Duration = Duration::from_millis(100);
pub const MAX: Duration = Duration::from_secs(5);
/// A receiver's own delay is honoured up to this.
pub const MAX_ASKED: Duration = Duration::from_secs(300);

/// Delays between attempts at one request.
pub struct Backoff {
    next: Duration,
    seed: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

impl Backoff {
    pub fn new() -> Backoff {
        let seed = crate::clock::epoch_ns() | 1;
        Backoff { next: INITIAL, seed }
    }

    /// The delay before the next attempt: what the receiver asked for if it
    /// did (capped at MAX_ASKED), else the backoff (doubling from INITIAL
    /// to MAX, each 75-100 % of its nominal value so that exporters
    /// restarted together do not retry together).
    pub fn delay(&mut self, asked: Option<Duration>) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(MAX);
        if let Some(a) = asked {
            return a.min(MAX_ASKED);
        }
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let quarter = nominal.as_nanos() as u64 / 4;
        nominal - Duration::from_nanos(if quarter == 0 { 0 } else { self.seed % quarter })
    }
}

/// An HTTP `Retry-After` value: delay-seconds or an HTTP date.
pub fn parse_retry_after(v: &str, now: SystemTime) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(MAX_ASKED.as_secs())));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_asked_delays_win() {
        let mut b = Backoff::new();
        let d: Vec<Duration> = (0..10).map(|_| b.delay(None)).collect();
        assert!(d[0] <= INITIAL && d[0] >= INITIAL * 3 / 4);
        assert!(d[1] <= INITIAL * 2 && d[1] >= INITIAL * 3 / 2);
        assert!(d[9] <= MAX && d[9] >= MAX * 3 / 4);
        assert_eq!(b.delay(Some(Duration::from_secs(2))), Duration::from_secs(2));
        assert_eq!(b.delay(Some(Duration::from_secs(9999))), MAX_ASKED);
    }

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:47 GMT", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
