//! OTLP trace export from a real seller sidecar to a collector that speaks OTLP/HTTP protobuf:
//! the spans of a paid call arrive with the ids the client saw, in the caller's trace, and the
//! upstream is told which span called it. A collector that is down costs spans, not calls.

mod common;

use common::otlp::{Collector, Span, otlp};
use common::*;
use serde_json::Value;
use x402_sidecar::devkit::nodes::Otlp;

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// 402, then pay; returns (status, request id header, body).
async fn pay_once(w: &World, traceparent: Option<&str>) -> (u16, String, Value) {
    let buyer = w.buyer(1_000_000).await;
    let (name, value) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    let mut headers = vec![(name, value.as_str())];
    headers.extend(traceparent.map(|tp| ("traceparent", tp)));
    let (status, h, body) = post_json(&w.http, &w.paid_url(), seed_body(), &headers).await;
    let rid = h["x-request-id"].to_str().unwrap().to_string();
    (status, rid, body)
}

fn named<'a>(spans: &'a [Span], name: &str) -> Vec<&'a Span> {
    spans.iter().filter(|s| s.name == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_call_is_one_trace_from_the_caller_through_every_phase_to_the_upstream() {
    let collector = Collector::start().await;
    let w = World::start_with(|s| s.otlp = Some(otlp(&collector.url, "seller-under-test"))).await;
    let traceparent = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let (status, request_id, body) = pay_once(&w, Some(&traceparent)).await;
    assert_eq!(status, 200, "{body}");
    // The call was paid on chain.
    w.money().assert_transfers(1).await;

    let spans = collector
        .wait_for("the paid call's four spans", |s| {
            named(s, "settle").len() == 1 && named(s, "paid_request").len() == 2
        })
        .await;
    let paid: Vec<_> = named(&spans, "paid_request")
        .into_iter()
        .filter(|s| s.attr("request_id") == Some(request_id.as_str()))
        .collect();
    assert_eq!(paid.len(), 1, "one request span per request id: {spans:#?}");
    let root = paid[0];
    assert_eq!(root.service, "seller-under-test");
    assert_eq!(
        root.trace_id, CALLER_TRACE,
        "the caller's trace is continued"
    );
    assert_eq!(root.parent, CALLER_SPAN, "the caller's span is the parent");
    assert_eq!(
        root.attr("payment_id"),
        body["metadata"]["paymentId"].as_str()
    );
    assert_eq!(root.attr("http.response.status_code"), Some("200"));
    let payer = body["payment"]["payer"].as_str().unwrap().to_lowercase();
    assert_eq!(root.attr("payer").map(str::to_lowercase), Some(payer));

    for phase in ["chain_verify", "upstream", "settle"] {
        let p = named(&spans, phase);
        assert_eq!(p.len(), 1, "{phase}: {spans:#?}");
        assert_eq!(p[0].trace_id, CALLER_TRACE, "{phase} is in the same trace");
        assert_eq!(
            p[0].parent, root.span_id,
            "{phase} is a child of the request"
        );
    }

    // The upstream was called with a traceparent naming the `upstream` span.
    let up = named(&spans, "upstream")[0];
    let seen = w.upstream.last.lock().unwrap().clone().unwrap();
    assert_eq!(
        seen.header("traceparent"),
        Some(format!("00-{CALLER_TRACE}-{}-01", up.span_id).as_str())
    );

    // The unpaid 402 before it was its own trace (no traceparent was sent with it).
    let challenge = named(&spans, "paid_request")
        .into_iter()
        .find(|s| s.attr("request_id") != Some(request_id.as_str()))
        .unwrap();
    assert_eq!(challenge.attr("http.response.status_code"), Some("402"));
    assert_ne!(challenge.trace_id, CALLER_TRACE);
    assert_eq!(
        challenge.parent, "",
        "a request without traceparent starts a trace"
    );

    // Nothing secret travels in span attributes.
    for s in &spans {
        for (k, v) in &s.attrs {
            assert!(
                !k.contains("signature") && v.len() < 200,
                "{k}={v} looks like a payment header"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_spans_not_paid_calls() {
    let dead = format!("http://127.0.0.1:{}/v1/traces", free_port());
    let admin = free_port();
    let w = World::start_with(|s| {
        s.otlp = Some(otlp(&dead, "seller-dead-collector"));
        s.admin = Some(admin);
    })
    .await;
    let (status, _, body) = pay_once(&w, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["strategy"].is_object());
    w.money().assert_transfers(1).await;
    // The operator sees it: a failed-batch counter and one warning, not one per batch.
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    let mut seen = String::new();
    for _ in 0..100 {
        seen = get_text(&w.http, &metrics).await;
        if seen.contains(r#"x402_otlp_batches_total{outcome="failed"}"#) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        seen.contains(r#"x402_otlp_batches_total{outcome="failed"}"#),
        "{seen}"
    );
    assert!(!seen.contains(r#"x402_otlp_batches_total{outcome="sent"}"#));
    let logs = w.seller.logs();
    assert_eq!(
        logs.matches("OTLP export failed").count(),
        1,
        "one warning while the collector stays down"
    );
}

#[test]
fn check_config_reports_a_bad_otlp_section() {
    let err = check_config_fails(
        "otlp:\n  enabled: true\n  endpoint: \"collector:4318\"\n  sample_ratio: 2\n",
        &[],
        &[],
    );
    assert!(err.contains("otlp.endpoint"), "{err}");
    assert!(err.contains("otlp.sample_ratio"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_queued_at_sigterm_are_sent_before_the_process_exits() {
    let collector = Collector::start().await;
    // A batch delay far longer than the test: only the shutdown flush can deliver them.
    let section = Otlp {
        batch_delay_ms: 600_000,
        ..otlp(&collector.url, "seller-stopping")
    };
    let mut w = World::start_with(|s| s.otlp = Some(section)).await;
    let (status, request_id, body) = pay_once(&w, None).await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        collector.spans().is_empty(),
        "nothing is sent before the batch is due"
    );
    let clean = terminate(&mut w.seller).await.success();
    assert!(clean, "the sidecar exits 0 on SIGTERM");
    let spans = collector.spans();
    assert!(
        spans
            .iter()
            .any(|s| s.name == "paid_request" && s.attr("request_id") == Some(&request_id)),
        "the paid call's span was flushed at shutdown: {spans:#?}"
    );
    assert!(spans.iter().any(|s| s.name == "settle"));
}
