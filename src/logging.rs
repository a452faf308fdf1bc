//! Log output: `tracing` to stderr, filtered by `log_level`, as text or JSON,
//! through a buffered writer on its own thread.

use std::io::{BufWriter, IsTerminal};

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Lines waiting for the log thread at most. Past it, new lines are dropped
/// (and counted by the appender) rather than making a request wait for a
/// slow stderr: a blocked pipe must never stall the API.
const BUFFERED_LINES: usize = 64 * 1024;

/// Installs the global subscriber. `filter` was validated with the settings.
/// Keep the guard until exit: dropping it writes out every buffered line.
pub fn init(filter: &str, format: LogFormat) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("log-writer")
        // Buffered: the log thread writes whatever queued up in one syscall
        // and flushes each time the queue runs empty.
        .finish(BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        // Flattened: one object per line with the fields at the top level.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    guard
}
