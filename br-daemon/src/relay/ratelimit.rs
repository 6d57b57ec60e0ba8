//! Token bucket for ICMP errors the BR originates (RFC 4443 §2.4 f).
//!
//! The caller passes the time, so the limiter is pure and testable; each
//! worker owns one, so there is no lock.

/// Rate and burst of ICMP errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpRate {
    /// Tokens added per second.
    pub per_second: u32,
    /// Bucket size.
    pub burst: u32,
}

impl Default for IcmpRate {
    /// Cisco IOS's default: one error every 100 ms with a bucket of 10.
    fn default() -> Self {
        IcmpRate {
            per_second: 10,
            burst: 10,
        }
    }
}

/// A token bucket in nanosecond units.
#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    rate: IcmpRate,
    /// Tokens scaled by 1e9 so refills need no division per packet.
    tokens_ns: u64,
    last_ns: u64,
}

const NS: u64 = 1_000_000_000;

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: IcmpRate) -> Self {
        TokenBucket {
            rate,
            tokens_ns: u64::from(rate.burst) * NS,
            last_ns: 0,
        }
    }

    /// Takes a token at time `now_ns` if one is available.
    pub fn allow(&mut self, now_ns: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now_ns);
        let cap = u64::from(self.rate.burst) * NS;
        let refill = elapsed.saturating_mul(u64::from(self.rate.per_second));
        self.tokens_ns = self.tokens_ns.saturating_add(refill).min(cap);
        if self.tokens_ns >= NS {
            self.tokens_ns -= NS;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let mut b = TokenBucket::new(IcmpRate {
            per_second: 10,
            burst: 3,
        });
        let t0 = 5 * NS;
        assert_eq!((0..5).filter(|_| b.allow(t0)).count(), 3);
        // 100 ms later exactly one more token.
        assert!(b.allow(t0 + NS / 10));
        assert!(!b.allow(t0 + NS / 10));
        // A long pause refills only up to the burst.
        assert_eq!((0..10).filter(|_| b.allow(t0 + 100 * NS)).count(), 3);
        // Time going backwards never mints tokens.
        assert!(!b.allow(t0));
    }

    #[test]
    fn zero_rate_sends_nothing_after_the_burst() {
        let mut b = TokenBucket::new(IcmpRate {
            per_second: 0,
            burst: 0,
        });
        assert!(!b.allow(NS));
    }
}
