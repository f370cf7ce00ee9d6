//! Logs on stderr, JSON lines or pretty, with the OTLP layer added when spans are exported.

use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use super::otlp::Export;

/// Install the process's subscriber: `RUST_LOG` (default `info`, pingora at `warn`), JSON lines
/// or pretty text on stderr, and the OTLP layer when `export` is given.
pub fn init(json: bool, export: Option<&Export>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
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
}
