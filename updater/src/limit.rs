//! Token-bucket rate limits, keyed by client address or host name, bounded
//! in memory.
//!
//! Used for failed authentication (per client address and per host), for
//! committed changes per host and for new connections per client address;
//! [`ConnectionCounts`] also bounds open connections per client address. A
//! bucket holds `burst` tokens and regains one every `per_token`; full
//! buckets are forgotten when the map needs room, so it holds at most
//! `max_keys` keys, those limited now first. This module must never block on I/O: it is
//! called on every request, under one short mutex.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::proxy::{self, Network};

/// How much a limiter allows: `burst` events at once, then one per
/// `per_token`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Tokens in a full bucket; at least 1.
    pub burst: u32,
    /// Time to regain one token.
    pub per_token: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A set of token buckets.
#[derive(Debug)]
pub(crate) struct Limiter<K> {
    rate: Rate,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    pub(crate) fn new(rate: Rate, max_keys: usize) -> Limiter<K> {
        Limiter {
            rate: Rate {
                burst: rate.burst.max(1),
                per_token: rate.per_token.max(Duration::from_micros(1)),
            },
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64()
            / self.rate.per_token.as_secs_f64();
        bucket.tokens = (bucket.tokens + gained).min(f64::from(self.rate.burst));
        bucket.at = now;
    }

    /// Time until one token is back, for `Retry-After`.
    fn wait(&self, bucket: &Bucket) -> Duration {
        let missing = (1.0 - bucket.tokens).max(0.0);
        self.rate.per_token.mul_f64(missing)
    }

    /// `Err(retry_after)` if `key` has no token left; takes nothing.
    pub(crate) fn check(&self, key: &K) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = buckets.get_mut(key) else {
            return Ok(());
        };
        self.refill(bucket, Instant::now());
        if bucket.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.wait(bucket))
        }
    }

    /// Takes one token for `key`, or `Err(retry_after)` if none is left.
    pub(crate) fn take(&self, key: &K) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Forget full buckets first; if every tracked key is still
            // limited, drop one arbitrary entry rather than refuse a key we
            // know nothing bad about (a flood of fresh addresses must not
            // lock everyone else out).
            let burst = f64::from(self.rate.burst);
            let per_token = self.rate.per_token.as_secs_f64();
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() / per_token < burst
            });
            if buckets.len() >= self.max_keys
                && let Some(victim) = buckets.keys().next().cloned()
            {
                buckets.remove(&victim);
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: f64::from(self.rate.burst),
            at: now,
        });
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.wait(bucket))
        }
    }
}

/// Open connections per client address (IPv6: per /64), so that one
/// source cannot take every one of `max_connections`, and optionally new
/// connections per address over time, so that one source reconnecting as
/// fast as it can (each a TLS handshake of ~0.3 ms of CPU) cannot take the
/// updater's cores while staying under the open-connection limit. Peers
/// that are trusted proxies are limited by neither: every client behind
/// them shares their address. The open map holds only addresses with a
/// connection open, at most `max_connections` of them.
#[derive(Debug)]
pub(crate) struct ConnectionCounts {
    max: u32,
    rate: Option<Limiter<IpAddr>>,
    exempt: Vec<Network>,
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// Why a connection was closed at accept: [`Refused::Full`] from the
/// accept loop's `max_connections`, the others from
/// [`ConnectionCounts::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every one of `max_connections` is taken.
    Full,
    /// The address has `max` connections open.
    Open,
    /// The address opened its burst of new connections too fast.
    Rate,
}

impl Refused {
    /// Every reason, in the order of [`Refused::index`].
    pub(crate) const ALL: [Refused; 3] = [Refused::Full, Refused::Open, Refused::Rate];

    /// Its place in [`Refused::ALL`] (and in the metrics' counters).
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The setting that refused: the `reason` label in `/metrics`.
    pub(crate) fn setting(self) -> &'static str {
        match self {
            Refused::Full => "max_connections",
            Refused::Open => "max_connections_per_address",
            Refused::Rate => "new_connections_per_address",
        }
    }

    /// Whether a per-address limit refused (which an unlisted proxy in
    /// front of every router would trip).
    pub(crate) fn per_address(self) -> bool {
        self != Refused::Full
    }
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    counts: Arc<ConnectionCounts>,
    /// `None` for an exempt peer.
    key: Option<IpAddr>,
}

impl ConnectionCounts {
    /// At most `max` open connections and, with `rate`, only as many new
    /// ones per address as it allows.
    pub(crate) fn new(
        max: u32,
        rate: Option<Limiter<IpAddr>>,
        exempt: Vec<Network>,
    ) -> Arc<ConnectionCounts> {
        Arc::new(ConnectionCounts {
            max: max.max(1),
            rate,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// A place for a new connection from `peer`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<ConnectionSlot, Refused> {
        let peer = proxy::canonical(peer);
        let key = if self.exempt.iter().any(|n| n.contains(peer)) {
            None
        } else {
            let key = address_key(peer);
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let count = open.get(&key).copied().unwrap_or(0);
            if count >= self.max {
                return Err(Refused::Open);
            }
            // A token only for a connection the open limit would admit.
            if let Some(rate) = &self.rate
                && rate.take(&key).is_err()
            {
                return Err(Refused::Rate);
            }
            open.insert(key, count + 1);
            Some(key)
        };
        Ok(ConnectionSlot {
            counts: self.clone(),
            key,
        })
    }

    /// Addresses with a connection open (for tests).
    #[cfg(test)]
    fn addresses(&self) -> usize {
        self.open.lock().unwrap().len()
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let Some(key) = self.key else {
            return;
        };
        let mut open = self.counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

/// The key for per-address limits: IPv4 as is, IPv6 by its /64, since one
/// customer usually holds a whole /64 and can pick any address in it.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_and_freed() {
        let proxy: Network = "10.9.0.0/16".parse().unwrap();
        let counts = ConnectionCounts::new(2, None, vec![proxy]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let first = counts.admit(a).unwrap();
        // The same address seen through a dual-stack socket.
        let second = counts.admit("::ffff:192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(counts.admit(a).unwrap_err(), Refused::Open);
        // Other addresses are unaffected; one IPv6 /64 is one client.
        let _other = counts.admit("192.0.2.2".parse().unwrap()).unwrap();
        let _v6 = counts.admit("2001:db8::1".parse().unwrap()).unwrap();
        let _v6b = counts.admit("2001:db8::2".parse().unwrap()).unwrap();
        assert_eq!(
            counts
                .admit("2001:db8::ffff:1".parse().unwrap())
                .unwrap_err(),
            Refused::Open
        );
        assert!(counts.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
        // A trusted proxy is never counted.
        let behind: Vec<_> = (0..5)
            .map(|_| counts.admit("10.9.1.1".parse().unwrap()).unwrap())
            .collect();
        drop(first);
        let third = counts.admit(a).unwrap();
        drop((second, third, behind));
        assert_eq!(
            counts.addresses(),
            2,
            "192.0.2.2 and 2001:db8::/64 still open"
        );
    }

    #[test]
    fn refusal_reasons_are_listed_in_index_order() {
        for (i, refused) in Refused::ALL.into_iter().enumerate() {
            assert_eq!(refused.index(), i, "{refused:?}");
        }
    }

    #[test]
    fn new_connections_are_rate_limited_per_address() {
        let proxy: Network = "10.9.0.0/16".parse().unwrap();
        let rate = Rate {
            burst: 3,
            per_token: Duration::from_secs(3600),
        };
        let counts = ConnectionCounts::new(2, Some(Limiter::new(rate, 100)), vec![proxy]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        // Closed at once, each: the open limit never bites, the rate does.
        for _ in 0..3 {
            drop(counts.admit(a).unwrap());
        }
        assert_eq!(counts.admit(a).unwrap_err(), Refused::Rate);
        assert_eq!(
            counts
                .admit("::ffff:192.0.2.1".parse().unwrap())
                .unwrap_err(),
            Refused::Rate
        );
        // A refused connection holds no place.
        assert_eq!(counts.addresses(), 0);
        // Another address has its own bucket; an IPv6 /64 shares one.
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let held = [counts.admit(b).unwrap(), counts.admit(b).unwrap()];
        // The open limit is checked first and takes no token.
        assert_eq!(
            counts.admit("2001:db8::2".parse().unwrap()).unwrap_err(),
            Refused::Open
        );
        drop(held);
        let _third = counts.admit("2001:db8::3".parse().unwrap()).unwrap();
        assert_eq!(
            counts.admit("2001:db8::4".parse().unwrap()).unwrap_err(),
            Refused::Rate
        );
        // A trusted proxy is never limited.
        for _ in 0..10 {
            drop(counts.admit("10.9.1.1".parse().unwrap()).unwrap());
        }
    }

    #[test]
    fn burst_then_limited_with_a_retry_time() {
        let limiter = Limiter::new(
            Rate {
                burst: 2,
                per_token: Duration::from_secs(60),
            },
            10,
        );
        assert!(limiter.check(&"a").is_ok());
        assert!(limiter.take(&"a").is_ok());
        assert!(limiter.take(&"a").is_ok());
        let wait = limiter.take(&"a").unwrap_err();
        assert!(wait > Duration::from_secs(50) && wait <= Duration::from_secs(60));
        assert!(limiter.check(&"a").is_err());
        assert!(limiter.take(&"b").is_ok());
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = Limiter::new(
            Rate {
                burst: 1,
                per_token: Duration::from_secs(3600),
            },
            4,
        );
        for i in 0..100 {
            assert!(limiter.take(&i).is_ok());
        }
        assert!(limiter.buckets.lock().unwrap().len() <= 4);
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(address_key(v4), v4);
    }
}
