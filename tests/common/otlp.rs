//! A trace collector for the tests: it speaks OTLP/HTTP with protobuf bodies on `/v1/traces`
//! (what an OpenTelemetry Collector's `otlphttp` receiver accepts) and keeps the decoded spans.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use x402_sidecar::devkit::nodes::Otlp;
use x402_sidecar::devkit::standin::{self, Request, Response};

/// One received span, ids in lowercase hex (an absent parent is "").
#[derive(Debug, Clone)]
pub struct Span {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent: String,
    pub attrs: BTreeMap<String, String>,
}

impl Span {
    pub fn attr(&self, k: &str) -> Option<&str> {
        self.attrs.get(k).map(String::as_str)
    }
}

pub struct Collector {
    /// The traces URL to configure as `otlp.endpoint`.
    pub url: String,
    spans: Arc<Mutex<Vec<Span>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kv: &[KeyValue]) -> BTreeMap<String, String> {
    kv.iter().map(|a| (a.key.clone(), text(&a.value))).collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/traces", listener.local_addr().unwrap());
        let spans = Arc::new(Mutex::new(Vec::new()));
        let keep = spans.clone();
        let handler: standin::Handler = Arc::new(move |req: Request| {
            let keep = keep.clone();
            Box::pin(async move {
                if req.method != "POST" || req.path != "/v1/traces" {
                    return Response::Body(404, String::new());
                }
                if req.header("content-type") != Some("application/x-protobuf") {
                    return Response::Body(415, String::new());
                }
                let Ok(export) = ExportTraceServiceRequest::decode(&req.body[..]) else {
                    return Response::Body(400, String::new());
                };
                let mut got = Vec::new();
                for rs in &export.resource_spans {
                    let res = rs.resource.as_ref().map(|r| attrs(&r.attributes));
                    let service = res
                        .and_then(|r| r.get("service.name").cloned())
                        .unwrap_or_default();
                    for ss in &rs.scope_spans {
                        for s in &ss.spans {
                            got.push(Span {
                                service: service.clone(),
                                name: s.name.clone(),
                                trace_id: hex(&s.trace_id),
                                span_id: hex(&s.span_id),
                                parent: hex(&s.parent_span_id),
                                attrs: attrs(&s.attributes),
                            });
                        }
                    }
                }
                keep.lock().unwrap().extend(got);
                // An empty ExportTraceServiceResponse is an empty protobuf message.
                Response::Body(200, String::new())
            })
        });
        let task = tokio::spawn(standin::serve(listener, handler));
        Collector { url, spans, task }
    }

    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap().clone()
    }

    /// Wait (up to 15 s) until `done` holds for the spans received so far.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&[Span]) -> bool) -> Vec<Span> {
        let until = Instant::now() + Duration::from_secs(15);
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if Instant::now() > until {
                let names: Vec<_> = spans.iter().map(|s| (&s.service, &s.name)).collect();
                panic!("the collector never received {what}; it has {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The `otlp:` section sending a sidecar's spans to `url` quickly.
pub fn otlp(url: &str, service: &str) -> Otlp {
    Otlp {
        endpoint: url.into(),
        service_name: service.into(),
        batch_delay_ms: 100,
    }
}
