//! Per-client limits on expensive, abusable routes (signup): a keyed GCRA
//! limiter from `governor`, and the `X-RateLimit-*` headers that describe it.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use warp::http::{HeaderMap, HeaderValue};

use crate::client_ip;

/// The window the configured number applies to.
const WINDOW: Duration = Duration::from_secs(60);

type Keyed<C> = RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, StateInformationMiddleware>;

/// Requests per minute per client; `None` when limiting is off.
pub struct Limiter<C: Clock = DefaultClock> {
    per_minute: u32,
    inner: Option<Keyed<C>>,
}

/// What the client is told about its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateInfo {
    /// Requests allowed per minute.
    pub limit: u32,
    /// Requests left right now.
    pub remaining: u32,
    /// Unix time at which the full budget is back.
    pub reset: u64,
}

/// The limiter's answer for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not limited (limiting is off).
    Unlimited,
    /// Allowed; report these headers.
    Allowed(RateInfo),
    /// Refused; retry after this many seconds.
    Denied(RateInfo, u64),
}

impl Limiter<DefaultClock> {
    /// `per_minute` requests per client per minute; 0 turns limiting off.
    pub fn new(per_minute: u32) -> Self {
        Self::with_clock(per_minute, DefaultClock::default())
    }
}

impl<C: Clock> Limiter<C> {
    /// As `new`, on the given clock (tests use a fake one).
    pub fn with_clock(per_minute: u32, clock: C) -> Self {
        let inner = NonZeroU32::new(per_minute).map(|n| {
            RateLimiter::dashmap_with_clock(Quota::per_minute(n), clock)
                .with_middleware::<StateInformationMiddleware>()
        });
        Limiter { per_minute, inner }
    }

    /// Counts one request from `ip` and decides.
    pub fn check(&self, ip: IpAddr) -> Decision {
        let Some(limiter) = &self.inner else {
            return Decision::Unlimited;
        };
        let key = client_ip::client_key(ip);
        match limiter.check_key(&key) {
            Ok(state) => Decision::Allowed(self.info(state.remaining_burst_capacity())),
            Err(not_until) => {
                let wait = not_until.wait_time_from(limiter.clock().now());
                // Round up: a client that waits exactly this long succeeds.
                let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                Decision::Denied(self.info(0), retry_after.max(1))
            }
        }
    }

    /// Forgets clients whose budget is full again, so memory stays bounded
    /// however many addresses appear. Call periodically.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.inner {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Clients currently tracked.
    pub fn tracked(&self) -> usize {
        self.inner.as_ref().map_or(0, |l| l.len())
    }

    fn info(&self, remaining: u32) -> RateInfo {
        // Each used request comes back after WINDOW / limit.
        let refill = WINDOW / self.per_minute.max(1) * (self.per_minute - remaining);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let reset = now + refill;
        RateInfo {
            limit: self.per_minute,
            remaining,
            reset: reset.as_secs() + u64::from(reset.subsec_nanos() > 0),
        }
    }
}

impl RateInfo {
    /// Adds `X-RateLimit-Limit`, `-Remaining` and `-Reset`.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert("x-ratelimit-limit", HeaderValue::from(self.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn allows_the_budget_then_denies_with_a_retry_time() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock(3, clock.clone());
        let remaining: Vec<u32> = (0..3)
            .map(|_| match limiter.check(ip("192.0.2.1")) {
                Decision::Allowed(info) => info.remaining,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        match limiter.check(ip("192.0.2.1")) {
            Decision::Denied(info, retry) => {
                assert_eq!((info.limit, info.remaining), (3, 0));
                assert_eq!(retry, 20, "one request comes back every 60/3 s");
            }
            other => panic!("{other:?}"),
        }
        // Another client is unaffected.
        assert!(matches!(
            limiter.check(ip("192.0.2.2")),
            Decision::Allowed(_)
        ));
        // After the retry time, the first client may go again.
        clock.advance(Duration::from_secs(20));
        assert!(matches!(
            limiter.check(ip("192.0.2.1")),
            Decision::Allowed(_)
        ));
    }

    #[test]
    fn zero_turns_limiting_off() {
        let limiter = Limiter::new(0);
        for _ in 0..100 {
            assert_eq!(limiter.check(ip("192.0.2.1")), Decision::Unlimited);
        }
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let clock = FakeRelativeClock::default();
        let limiter = Limiter::with_clock(10, clock.clone());
        for i in 0..5000u32 {
            limiter.check(IpAddr::V4(i.into()));
        }
        assert_eq!(limiter.tracked(), 5000);
        clock.advance(WINDOW);
        limiter.forget_idle();
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            client_ip::client_key(ip("2001:db8:1:2:aaaa::1")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            client_ip::client_key(ip("::ffff:192.0.2.7")),
            ip("192.0.2.7")
        );
        assert_eq!(client_ip::client_key(ip("192.0.2.7")), ip("192.0.2.7"));
    }
}
