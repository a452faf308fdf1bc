//! Log output: `tracing` to stderr, filtered by `log_level`, as text or JSON,
//! through a buffer that a thread of its own writes out.
//!
//! Why not a channel per line (tracing-appender's `non_blocking`): at tens of
//! thousands of requests a second, waking the writer thread for every line
//! cost more CPU than formatting the lines (its receiver spins and yields).
//! Here a line is one short lock and a copy into a shared buffer; the writer
//! thread wakes when the first line arrives after a quiet spell and writes it
//! at once, then under load once every `GATHER`, writing whatever gathered in
//! one syscall.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::LogFormat;

/// The text and JSON line formats.
mod line;

/// Bytes waiting for the log thread at most. Past it, new lines are dropped
/// (and counted) rather than making a request wait for a slow or blocked
/// stderr: a stuck pipe must never stall the API.
const BUFFERED_BYTES: usize = 8 * 1024 * 1024;
/// How long the log thread lets lines gather before writing them out; also
/// the most a line waits before it reaches stderr.
const GATHER: Duration = Duration::from_millis(20);
/// How long the exit waits for the buffered lines to be written: a stderr
/// nobody reads must not keep the process from ending.
const FLUSH_AT_EXIT: Duration = Duration::from_secs(1);

/// Installs the global subscriber. `filter` was validated with the settings.
/// Keep the guard until exit: dropping it writes out every buffered line.
pub fn init(filter: &str, format: LogFormat) -> LogGuard {
    let shared = Arc::new(Shared::default());
    let (finished, written) = channel();
    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                shared.write_out(&mut std::io::stderr(), |dropped| {
                    // Through the subscriber, so it has the log's format; it
                    // joins the buffer and goes out with the next write.
                    tracing::warn!(dropped, "log lines dropped: stderr was too slow");
                });
                let _ = finished.send(());
            })
            .expect("spawning a thread at startup only fails when the OS is out of resources");
    }
    match by_target(filter) {
        Some(targets) => install(targets, format, Arc::clone(&shared)),
        None => install(EnvFilter::new(filter), format, Arc::clone(&shared)),
    }
    LogGuard { shared, written }
}

/// tokio-postgres logs every statement's parameters at DEBUG and below:
/// password hashes, key digests, emails. Whatever `log_level` says (even
/// `tokio_postgres=trace`), nothing of it below INFO is ever logged. A
/// `Targets` filter, not a closure: tracing caches its verdict per callsite,
/// so the request path's spans and events never consult it again.
fn no_query_parameters() -> Targets {
    Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_target("tokio_postgres", LevelFilter::INFO)
}

/// Sets the global subscriber: `filter`, then lines in `format` to `writer`.
fn install<F>(filter: F, format: LogFormat, writer: Arc<Shared>)
where
    F: Layer<Registry> + Send + Sync + 'static,
{
    let lines = tracing_subscriber::fmt::layer().with_writer(writer);
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(no_query_parameters());
    match format {
        LogFormat::Text => registry
            .with(
                lines
                    .with_ansi(std::io::stderr().is_terminal())
                    .fmt_fields(line::TextFields)
                    .event_format(line::Text::default()),
            )
            .init(),
        // Flattened: one object per line with the fields at the top level.
        LogFormat::Json => registry
            .with(
                lines
                    .json()
                    .flatten_event(true)
                    .fmt_fields(line::JsonFields)
                    .event_format(line::Json::default()),
            )
            .init(),
    }
}

/// `filter` as a filter by target and level alone, when that is all it
/// says (`info`, `warn,kaggleingest=debug`, ...), else `None`. EnvFilter
/// also understands directives on spans and fields, and for them looks up
/// every span entered, exited or closed in a table under a lock shared by
/// all threads: three times each for every request's span. `Targets` is
/// the same filter without that table; EnvFilter stays for the rest.
fn by_target(filter: &str) -> Option<Targets> {
    let word = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_:.-".contains(&b))
    };
    let plain = |directive: &str| match directive.split_once('=') {
        Some((target, level)) => {
            // `level.parse` also takes "", which the two read differently.
            word(target) && word(level) && level.parse::<LevelFilter>().is_ok()
        }
        None => word(directive),
    };
    if filter.split(',').all(plain) {
        filter.parse().ok()
    } else {
        None
    }
}

/// Writes out every buffered line when dropped (waiting `FLUSH_AT_EXIT` at
/// most), then stops the log thread.
pub struct LogGuard {
    shared: Arc<Shared>,
    written: Receiver<()>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        // A thread stuck writing to a full pipe is left behind: the process
        // ends anyway.
        let _ = self.written.recv_timeout(FLUSH_AT_EXIT);
    }
}

/// The buffer between the threads that log and the one that writes.
#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    /// Rung when the first line arrives in an empty buffer, and at close.
    wake: Condvar,
    /// Lines dropped because the buffer was full, not yet reported.
    dropped: AtomicU64,
}

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    closed: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding the lock leaves only bytes behind: go on.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The log thread: waits for lines and writes out what is there in one
    /// go, then lets the next lines gather for `GATHER` before the next
    /// write; after the close, writes what is left and returns. The first
    /// line after a quiet spell goes out at once (a startup line is awaited).
    /// `report_dropped` is told how many lines the full buffer refused.
    fn write_out(&self, out: &mut impl Write, report_dropped: impl Fn(u64)) {
        let mut spare = Vec::new();
        loop {
            let mut pending = self.lock();
            while pending.bytes.is_empty() && !pending.closed {
                pending = self.wake.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            let closed = pending.closed;
            std::mem::swap(&mut pending.bytes, &mut spare);
            drop(pending);
            // Nothing useful can be done when stderr itself fails.
            let _ = out.write_all(&spare).and_then(|()| out.flush());
            spare.clear();
            // After the lines that came before the drops.
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                report_dropped(dropped);
            }
            if closed {
                if self.lock().bytes.is_empty() {
                    return;
                }
            } else {
                std::thread::sleep(GATHER);
            }
        }
    }
}

impl Write for &Shared {
    /// One formatted event (the fmt layer writes each line in one call).
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.lock();
        if pending.bytes.len() + line.len() > BUFFERED_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Ok(line.len());
        }
        let was_empty = pending.bytes.is_empty();
        pending.bytes.extend_from_slice(line);
        drop(pending);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn every_line_is_written_out_in_order_by_the_close() {
        let shared = Arc::new(Shared::default());
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut out = Vec::new();
                shared.write_out(&mut out, |_| panic!("nothing is dropped"));
                out
            })
        };
        for i in 0..1000 {
            (&*shared)
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        shared.lock().closed = true;
        shared.wake.notify_one();

        let out = String::from_utf8(writer.join().unwrap()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, expected);
    }

    /// Whether each of a few targets logs at each level under `filter`.
    fn decisions(filter: impl Layer<Registry> + Send + Sync + 'static) -> Vec<bool> {
        let subscriber = tracing_subscriber::registry().with(filter);
        tracing::subscriber::with_default(subscriber, || {
            let mut seen = Vec::new();
            macro_rules! probe {
                ($($target:literal),*) => {$(
                    seen.push(tracing::enabled!(target: $target, Level::TRACE));
                    seen.push(tracing::enabled!(target: $target, Level::DEBUG));
                    seen.push(tracing::enabled!(target: $target, Level::INFO));
                    seen.push(tracing::enabled!(target: $target, Level::WARN));
                    seen.push(tracing::enabled!(target: $target, Level::ERROR));
                )*};
            }
            probe!(
                "kaggleingest::server",
                "kaggleingest::error",
                "kaggleingest",
                "hyper::proto",
                "r2d2",
                "info"
            );
            seen
        })
    }

    #[test]
    fn a_filter_by_target_and_level_decides_as_env_filter_does() {
        for filter in [
            "info",
            "warn",
            "TRACE",
            "off",
            "3",
            "info,kaggleingest=debug",
            "kaggleingest::server=warn,info",
            "error,hyper=trace,kaggleingest::error=off",
            "kaggleingest",
            "kaggleingest=info,kaggleingest::server=trace,warn",
            "info=debug",
        ] {
            let targets = by_target(filter).unwrap_or_else(|| panic!("{filter} is by target"));
            assert_eq!(
                decisions(targets),
                decisions(EnvFilter::new(filter)),
                "{filter}"
            );
        }
    }

    #[test]
    fn a_filter_on_spans_or_fields_stays_an_env_filter() {
        for filter in [
            "kaggleingest[request]=debug",
            "[request{request_id}]=trace",
            "info,kaggleingest[{status=500}]=debug",
            "info, kaggleingest=debug",
            "info,",
            "",
            "kaggleingest=",
        ] {
            assert!(by_target(filter).is_none(), "{filter:?}");
        }
    }

    #[test]
    fn a_full_buffer_drops_lines_and_says_how_many() {
        let shared = Shared::default();
        let line = vec![b'x'; 1024 * 1024];
        for _ in 0..10 {
            (&shared).write_all(&line).unwrap();
        }
        shared.lock().closed = true;

        let mut out = Vec::new();
        let reported = std::cell::Cell::new(0);
        shared.write_out(&mut out, |n| reported.set(reported.get() + n));

        assert_eq!(reported.get(), 2);
        assert_eq!(out.len(), 8 * 1024 * 1024);
    }
}
