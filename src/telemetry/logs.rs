//! Logs on stderr, JSON lines or pretty, with the OTLP layer added when spans are exported.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::otlp::Export;

/// What keeps a server's log writer running: dropped (when the server has stopped), it writes
/// what is still queued and stops the writer thread.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Lines a server may queue for its writer before a request waits for room (none is dropped).
const QUEUED_LINES: usize = 64 * 1024;

/// Install the process's subscriber: `RUST_LOG` (default `info`, pingora at `warn`), JSON lines
/// or pretty text on stderr, and the OTLP layer when `export` is given. A server
/// (`buffered`) hands its lines to a writer thread that writes them in batches, so an access
/// line costs a request no `write` of its own; other commands write each line at once.
pub fn init(json: bool, export: Option<&Export>, buffered: bool) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    let (writer, guard) = if buffered {
        let (w, g) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(QUEUED_LINES)
            .thread_name("log writer")
            .finish(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stderr(),
            ));
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(w),
            Some(g),
        )
    } else {
        (
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
            None,
        )
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer);
    let fmt = if json {
        // Every span the line is in, once (`spans`, outermost first), and not the current one a
        // second time (`span`): a request's fields appear once per line.
        fmt.json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .boxed()
    } else {
        fmt.boxed()
    };
    let otel = export.map(|e| e.layer());
    // A second init (tests that call main twice) is not an error worth stopping for.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
    LogGuard { _writer: guard }
}
