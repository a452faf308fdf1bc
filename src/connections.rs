//! How many connections one client address may hold open at once, so one
//! client cannot take every slot of `max_connections` and starve the rest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::client_ip::Cidr;

/// The answer to a connection over its address's cap, written before the
/// connection is closed: the client learns why instead of seeing a reset.
pub const OVER_CAP_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 56\r\n\
\r\n\
{\"detail\":\"Too many open connections from this address\"}";

/// Open connections per client address, with a cap.
pub struct PerAddress {
    cap: usize,
    exempt: Arc<[Cidr]>,
    /// Only addresses with at least one open connection: the map is never
    /// larger than `max_connections`.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One counted connection; dropping it frees its place.
pub struct Counted {
    owner: Arc<PerAddress>,
    key: Option<IpAddr>,
}

impl PerAddress {
    /// A cap of `cap` connections per address (0: no cap). Connections from
    /// `exempt` (trusted proxies, which carry many clients) are not counted.
    pub fn new(cap: usize, exempt: Arc<[Cidr]>) -> Arc<PerAddress> {
        Arc::new(PerAddress {
            cap,
            exempt,
            open: Mutex::new(HashMap::new()),
        })
    }

    /// Counts a new connection from `peer`, or `None` when its address
    /// already holds `cap` connections.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Counted> {
        let peer = crate::client_ip::canonical(peer);
        if self.cap == 0 || self.exempt.iter().any(|c| c.0.contains(&peer)) {
            return Some(Counted {
                owner: Arc::clone(self),
                key: None,
            });
        }
        let key = crate::client_ip::client_key(peer);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(Counted {
            owner: Arc::clone(self),
            key: Some(key),
        })
    }

    /// Addresses holding at least one connection now.
    pub fn addresses(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let Some(key) = self.key else { return };
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn caps_each_address_and_frees_on_drop() {
        let limit = PerAddress::new(2, Arc::from([]));
        let a = limit.admit(ip("10.0.0.1")).unwrap();
        let _b = limit.admit(ip("10.0.0.1")).unwrap();
        assert!(limit.admit(ip("10.0.0.1")).is_none());
        assert!(limit.admit(ip("10.0.0.2")).is_some());
        drop(a);
        assert!(limit.admit(ip("10.0.0.1")).is_some());
    }

    #[test]
    fn forgets_addresses_with_no_connection() {
        let limit = PerAddress::new(1, Arc::from([]));
        drop(limit.admit(ip("10.0.0.1")));
        assert_eq!(limit.addresses(), 0);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_client() {
        let limit = PerAddress::new(1, Arc::from([]));
        let _a = limit.admit(ip("2001:db8::1")).unwrap();
        assert!(limit.admit(ip("2001:db8::ffff:2")).is_none());
        assert!(limit.admit(ip("2001:db8:0:1::1")).is_some());
    }

    #[test]
    fn trusted_proxies_and_a_zero_cap_are_not_counted() {
        let proxy: Cidr = "127.0.0.1".parse().unwrap();
        let limit = PerAddress::new(1, Arc::from([proxy]));
        let held: Vec<_> = (0..5).map(|_| limit.admit(ip("127.0.0.1"))).collect();
        assert!(held.iter().all(Option::is_some));
        let off = PerAddress::new(0, Arc::from([]));
        assert!((0..5).all(|_| off.admit(ip("10.0.0.1")).is_some()));
    }

    #[test]
    fn the_refusal_is_a_well_formed_response() {
        let text = std::str::from_utf8(OVER_CAP_RESPONSE).unwrap();
        let (_, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(text.contains(&format!("content-length: {}\r\n", body.len())));
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}
