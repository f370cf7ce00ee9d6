//! Optional export of the spans to an OpenTelemetry collector, and W3C trace-context propagation.
//!
//! Off by default (`otlp.enabled: false`): spans then only shape the JSON logs, and a caller's
//! `traceparent` is passed through to the upstream unchanged.
//!
//! When enabled, a `tracing-opentelemetry` layer turns the request spans (`paid_request` with
//! `chain_verify`, `upstream`, `settle` on the seller; `buyer_call` with `seller_attempt` on the
//! buyer) into OpenTelemetry spans. A batch processor on its own thread sends them over
//! OTLP/HTTP (protobuf), so no request waits for the collector and a collector that is down
//! costs dropped spans, never failed calls. A caller's `traceparent` becomes the parent of the
//! request span, and outgoing calls (upstream, remote sellers) carry a `traceparent` naming
//! the span that made them: one trace runs from roma-01's buyer through the seller to its
//! advisor.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

use super::config::OtlpSpec;

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("cannot build the OTLP exporter for {endpoint}: {reason}")]
    Build { endpoint: String, reason: String },
}

/// A running exporter. Call [`Export::shutdown`] before the process exits so the last batch
/// is sent.
pub struct Export {
    provider: SdkTracerProvider,
}

impl Export {
    /// Build the exporter and its batch thread (nothing is sent until spans end).
    pub fn start(cfg: &OtlpSpec) -> Result<Self, OtlpError> {
        let fail = |reason: String| OtlpError::Build {
            endpoint: cfg.endpoint.clone(),
            reason,
        };
        let headers: HashMap<String, String> = cfg
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let timeout = cfg.timeout;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(cfg.endpoint.clone())
            .with_timeout(timeout)
            .with_headers(headers)
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let batch = BatchConfigBuilder::default()
            .with_scheduled_delay(cfg.batch_delay)
            .build();
        let processor = BatchSpanProcessor::builder(Counted::new(exporter, &cfg.endpoint))
            .with_batch_config(batch)
            .build();
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(cfg.sample_ratio)));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler)
            .with_resource(resource)
            .build();
        Ok(Export { provider })
    }

    /// The `tracing` layer that feeds this exporter.
    pub fn layer<S>(&self) -> impl Layer<S> + use<S>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    {
        let tracer = self.provider.tracer("x402-sidecar");
        // Spans, and warnings and errors as span events; info lines stay in the logs. Source
        // locations and thread names are left out: they were most of each exported span.
        let keep = tracing_subscriber::filter::filter_fn(|m| {
            m.is_span() || *m.level() <= tracing::Level::WARN
        });
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_filter(keep)
    }

    /// Send what is still queued and stop the batch thread.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.force_flush() {
            tracing::warn!("OTLP: the last spans were not sent: {e}");
        }
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!("OTLP shutdown: {e}");
        }
    }
}

/// The exporter, counting batches and spans by outcome (`x402_otlp_*` metrics) and warning
/// on the first failure after a success (and the first ever), not on every batch.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    endpoint: String,
    failing: std::sync::atomic::AtomicBool,
}

impl<E> Counted<E> {
    fn new(inner: E, endpoint: &str) -> Self {
        Counted {
            inner,
            endpoint: crate::util::redact_url(endpoint),
            failing: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Counted<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        use std::sync::atomic::Ordering;
        let n = batch.len() as u64;
        let r = self.inner.export(batch).await;
        let outcome = if r.is_ok() {
            super::ExportOutcome::Sent
        } else {
            super::ExportOutcome::Failed
        };
        match &r {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, "OTLP export failed, spans are dropped until the collector answers: {e}");
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "OTLP export works again");
            }
            _ => {}
        }
        // Counted after the log line, so whoever sees the count also finds the line.
        crate::telemetry::with(|m| {
            m.export(outcome, n);
        });
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Make the caller's `traceparent` (if any) the parent of `span`. Call before the span is
/// first entered. Without an exporter this does nothing.
pub fn adopt_parent(span: &tracing::Span, incoming: &http::HeaderMap) {
    if !incoming.contains_key("traceparent") {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(incoming));
    if cx.span().span_context().is_valid() {
        // Err only when no OpenTelemetry layer is installed (export off): nothing to adopt into.
        let _ = span.set_parent(cx);
    }
}

/// The trace-context headers for a call made inside `span`: the span's own context when spans
/// are exported, else the caller's `traceparent`/`tracestate` unchanged (if any).
pub fn outgoing(span: &tracing::Span, incoming: Option<&http::HeaderMap>) -> Vec<(String, String)> {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut out: HashMap<String, String> = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        let mut v: Vec<_> = out.into_iter().collect();
        v.sort();
        return v;
    }
    let Some(h) = incoming else {
        return Vec::new();
    };
    ["traceparent", "tracestate"]
        .into_iter()
        .filter_map(|k| {
            let v = h.get(k)?.to_str().ok()?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn incoming() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", http::HeaderValue::from_static(PARENT));
        h.insert("tracestate", http::HeaderValue::from_static("roma=1"));
        h
    }

    #[test]
    fn without_an_exporter_the_callers_context_passes_through() {
        let span = tracing::info_span!("paid_request");
        adopt_parent(&span, &incoming());
        let out = outgoing(&span, Some(&incoming()));
        assert_eq!(
            out,
            vec![
                ("traceparent".to_string(), PARENT.to_string()),
                ("tracestate".to_string(), "roma=1".to_string())
            ]
        );
        assert!(outgoing(&span, None).is_empty());
    }

    #[test]
    fn with_an_exporter_the_outgoing_parent_is_our_span_in_the_callers_trace() {
        // A provider without processors: spans get real ids, nothing is sent.
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("t"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("paid_request");
            adopt_parent(&span, &incoming());
            let child = span.in_scope(|| tracing::info_span!("upstream"));
            let out = outgoing(&child, Some(&incoming()));
            let tp = &out
                .iter()
                .find(|(k, _)| k == "traceparent")
                .expect("traceparent")
                .1;
            let parts: Vec<&str> = tp.split('-').collect();
            assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
            assert_ne!(parts[2], "00f067aa0ba902b7", "our own span is the parent");
            let own = child.context().span().span_context().span_id().to_string();
            assert_eq!(parts[2], own);
            assert_eq!(parts[3], "01", "the caller's sampling decision is kept");
        });
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("t"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let mut h = http::HeaderMap::new();
            h.insert("traceparent", http::HeaderValue::from_static("00-zz-yy-01"));
            let span = tracing::info_span!("paid_request");
            adopt_parent(&span, &h);
            let out = outgoing(&span, Some(&h));
            let tp = &out
                .iter()
                .find(|(k, _)| k == "traceparent")
                .expect("traceparent")
                .1;
            assert_ne!(tp, "00-zz-yy-01");
            assert_eq!(tp.len(), 55);
        });
    }
}
