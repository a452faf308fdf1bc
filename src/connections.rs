//! What one connection may cost: how it is served (`http1`), and how many
//! connections one client address may hold open at once, so one client
//! cannot take every slot of `max_connections` and starve the rest.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use crate::client_ip::Cidr;

/// The most a connection may buffer of what its client sent: the request
/// line and headers must fit (else 431), as in Node.js by default. hyper's
/// own default, about 400 KB, let each of 4,096 connections that sent
/// headers and never finished them hold that much, 1 GB in all.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// HTTP/1.1 as every listener of ours serves it. `client_timeout` bounds
/// the wait for a request's headers, which also runs while a keep-alive
/// connection waits for its next request, so it bounds idle connections too.
pub fn http1(client_timeout: Duration) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(client_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
}

/// The answer to a connection over its address's cap, written before the
/// connection is closed: the client learns why instead of seeing a reset.
pub const OVER_CAP_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 5\r\n\
connection: close\r\n\
content-length: 56\r\n\
\r\n\
{\"detail\":\"Too many open connections from this address\"}";

/// A connection as hyper is handed it: `stream` behind a write deadline.
pub fn io(stream: TcpStream, client_timeout: Duration) -> TokioIo<WriteDeadline> {
    TokioIo::new(WriteDeadline {
        stream,
        timeout: client_timeout,
        stalled: None,
    })
}

/// A stream whose writes fail (`TimedOut`) once the client has taken no
/// byte for `timeout`. hyper stops reading while an answer waits to be
/// written, so the header timeout never runs then: a client that pipelines
/// requests and reads no answer held its connection, and the answers piled
/// up in the kernel behind it, for as long as it liked.
pub struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Armed when a write first finds the client's window full; cleared by
    /// any write that goes through. Usually none, so nothing is allocated.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteDeadline {
    /// `poll` of a write: its result once ready, else pending until the
    /// deadline, then `TimedOut`.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        poll: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>) -> Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(done) = poll(Pin::new(&mut self.stream), cx) {
            self.stalled = None;
            return Poll::Ready(done);
        }
        let timeout = self.timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        ready!(stalled.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client took no byte of the answer in time",
        )))
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().deadline(cx, |s, cx| s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .deadline(cx, |s, cx| s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().deadline(cx, |s, cx| s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().deadline(cx, |s, cx| s.poll_shutdown(cx))
    }
}

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
