//! Metrics and health: one Prometheus registry for the process, and the admin listener that
//! serves `/metrics` (text format), `/healthz` (alive) and `/readyz` (RPC, store and upstream
//! reachable). Metric names follow Prometheus conventions (`_total`, `_seconds`).

mod config;
pub mod logs;
pub mod otlp;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use http::Response;
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use serde_json::json;

use crate::evm::Chain;
use crate::http::Reply;
use crate::store::ReplayStore;
use crate::x402::Reason;

pub use config::{AdminConfig, AdminSpec, OtlpConfig, OtlpSpec};

/// Every metric the sidecar exports.
pub struct Metrics {
    pub registry: Registry,
    /// 402 challenges sent, by route.
    pub challenges: IntCounterVec,
    /// Payments by outcome (`verified`, `refused`) and reason code.
    pub payments: IntCounterVec,
    /// Settlements by outcome (`settled`, `failed`, `pending`).
    pub settlements: IntCounterVec,
    /// Seconds per phase (`verify`, `chain`, `upstream`, `settle`, `total`).
    pub phase_seconds: HistogramVec,
    /// Upstream failures by kind.
    pub upstream_errors: IntCounterVec,
    /// Repeated payments by kind (`in_flight`, `reused`, `replayed`).
    pub replays: IntCounterVec,
    /// Buyer spend in atomic units, by asset and seller.
    pub buyer_spend: IntCounterVec,
    /// Budget left today, atomic units, by asset.
    pub budget_remaining: IntGaugeVec,
    /// Breaker state per seller: 0 closed, 1 half-open, 2 open.
    pub breaker_state: IntGaugeVec,
    /// Answers given by the buyer's fallback, by mode.
    pub fallbacks: IntCounterVec,
    /// Facilitator API calls by endpoint (`verify`, `settle`) and outcome.
    pub facilitator_requests: IntCounterVec,
    /// OTLP span batches by outcome (`sent`, `failed`), and the spans in them.
    pub otlp_batches: IntCounterVec,
    pub otlp_spans: IntCounterVec,
    /// Audit records waiting in the spill now (the journal could not write them yet).
    pub audit_spill_pending: IntGauge,
    /// Audit records by what the spill did with them (`spilled`, `journaled`, `dropped`).
    pub audit_spill_records: IntCounterVec,
    /// Paid calls refused because the journal could not record them, by stage.
    pub audit_refusals: IntCounterVec,
    /// Requests refused with 429 by a rate limit, by limit (`ip`, `payer`, `facilitator_client`).
    pub rate_limited: IntCounterVec,
    pub build_info: IntGauge,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let counter =
        |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
    let challenges = counter("x402_challenges_total", "402 challenges sent", &["route"])?;
    let payments = counter(
        "x402_payments_total",
        "Payments checked, by outcome and reason",
        &["outcome", "reason"],
    )?;
    let settlements = counter(
        "x402_settlements_total",
        "Settlements by outcome",
        &["outcome"],
    )?;
    let upstream_errors = counter(
        "x402_upstream_errors_total",
        "Upstream failures by kind",
        &["kind"],
    )?;
    let replays = counter(
        "x402_replay_rejections_total",
        "Repeated payments by kind",
        &["kind"],
    )?;
    let buyer_spend = counter(
        "x402_buyer_spend_atomic_total",
        "Buyer spend in atomic units",
        &["asset", "seller"],
    )?;
    let fallbacks = counter(
        "x402_fallback_answers_total",
        "Answers given by the buyer's fallback",
        &["mode"],
    )?;
    let facilitator_requests = counter(
        "x402_facilitator_requests_total",
        "Facilitator API calls by endpoint and outcome",
        &["endpoint", "outcome"],
    )?;
    let otlp_batches = counter(
        "x402_otlp_batches_total",
        "Span batches exported over OTLP, by outcome",
        &["outcome"],
    )?;
    let otlp_spans = counter(
        "x402_otlp_spans_total",
        "Spans in the exported batches, by outcome",
        &["outcome"],
    )?;
    let audit_spill_records = counter(
        "x402_audit_spill_records_total",
        "Audit records the journal could not write, by what became of them",
        &["outcome"],
    )?;
    let audit_refusals = counter(
        "x402_audit_refusals_total",
        "Paid calls not settled because the audit journal could not record them",
        &["stage"],
    )?;
    let rate_limited = counter(
        "x402_rate_limited_total",
        "Requests refused with 429 by a rate limit, by limit",
        &["limit"],
    )?;
    let audit_spill_pending = IntGauge::with_opts(Opts::new(
        "x402_audit_spill_pending",
        "Audit records waiting in the spill, not yet in the journal",
    ))?;
    registry.register(Box::new(audit_spill_pending.clone()))?;
    let phase_seconds = HistogramVec::new(
        HistogramOpts::new("x402_phase_seconds", "Latency of each phase of a paid call").buckets(
            vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        ),
        &["phase"],
    )?;
    registry.register(Box::new(phase_seconds.clone()))?;
    let budget_remaining = IntGaugeVec::new(
        Opts::new("x402_buyer_budget_remaining_atomic", "Budget left today"),
        &["asset"],
    )?;
    registry.register(Box::new(budget_remaining.clone()))?;
    let breaker_state = IntGaugeVec::new(
        Opts::new("x402_breaker_state", "0 closed, 1 half-open, 2 open"),
        &["seller"],
    )?;
    registry.register(Box::new(breaker_state.clone()))?;
    let build_info = IntGauge::with_opts(
        Opts::new("x402_build_info", "Build information")
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )?;
    registry.register(Box::new(build_info.clone()))?;
    build_info.set(1);
    Ok(Metrics {
        registry,
        challenges,
        payments,
        settlements,
        phase_seconds,
        upstream_errors,
        replays,
        buyer_spend,
        budget_remaining,
        breaker_state,
        fallbacks,
        facilitator_requests,
        otlp_batches,
        otlp_spans,
        audit_spill_pending,
        audit_spill_records,
        audit_refusals,
        rate_limited,
        build_info,
    })
}

/// A phase of a paid call (`x402_phase_seconds{phase}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Decode, match and check the payment (no I/O).
    Verify,
    /// The chain's nonce and balance reads, or a remote facilitator's `/verify`.
    Chain,
    /// The upstream call.
    Upstream,
    /// The settlement, to its receipt.
    Settle,
    /// The whole paid call.
    Total,
}

impl Phase {
    pub fn label(self) -> &'static str {
        match self {
            Phase::Verify => "verify",
            Phase::Chain => "chain",
            Phase::Upstream => "upstream",
            Phase::Settle => "settle",
            Phase::Total => "total",
        }
    }
}

/// What became of a payment (`x402_payments_total{outcome, reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    Verified,
    Refused(Reason),
}

/// What became of a settlement (`x402_settlements_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettlementOutcome {
    Settled,
    Pending,
    Failed,
}

impl SettlementOutcome {
    pub fn label(self) -> &'static str {
        match self {
            SettlementOutcome::Settled => "settled",
            SettlementOutcome::Pending => "pending",
            SettlementOutcome::Failed => "failed",
        }
    }
}

/// What a payment sent again got (`x402_replay_rejections_total{kind}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// With another body: refused (409).
    Reused,
    /// While its first copy is still being served: refused (409).
    InFlight,
    /// A settled payment: its stored answer.
    Replayed,
    /// A payment whose answer or settlement was unfinished: the call goes on.
    Resumed,
}

/// Whether an export went out (`x402_otlp_*_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportOutcome {
    Sent,
    Failed,
}

impl ExportOutcome {
    pub fn label(self) -> &'static str {
        match self {
            ExportOutcome::Sent => "sent",
            ExportOutcome::Failed => "failed",
        }
    }
}

/// Where the audit journal stopped a paid call (`x402_audit_refusals_total{stage}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalRefusal {
    /// The records before the settlement could not be made durable: not settled (503).
    BeforeSettlement,
}

impl JournalRefusal {
    pub fn label(self) -> &'static str {
        match self {
            JournalRefusal::BeforeSettlement => "before_settlement",
        }
    }
}

/// Which rate limit refused a request (`x402_rate_limited_total{limit}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    /// Unpaid calls to a paid route, per client IP.
    Ip,
    /// Signed payments, per payer, before any chain read.
    Payer,
    /// Facilitator API calls, per bearer key (or per client IP without authentication).
    FacilitatorClient,
}

impl RateLimit {
    pub fn label(self) -> &'static str {
        match self {
            RateLimit::Ip => "ip",
            RateLimit::Payer => "payer",
            RateLimit::FacilitatorClient => "facilitator_client",
        }
    }
}

/// What became of audit records the journal could not write
/// (`x402_audit_spill_records_total{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpillOutcome {
    /// Kept in the spill.
    Spilled,
    /// Written to the journal later, in order.
    Journaled,
    /// Dropped: a record about no money, past the spill's cap.
    Dropped,
}

impl SpillOutcome {
    pub fn label(self) -> &'static str {
        match self {
            SpillOutcome::Spilled => "spilled",
            SpillOutcome::Journaled => "journaled",
            SpillOutcome::Dropped => "dropped",
        }
    }
}

/// The journal's spill as `/metrics` shows it: records waiting now, and totals per outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpillCounts {
    pub pending: u64,
    pub spilled: u64,
    pub journaled: u64,
    pub dropped: u64,
}

impl Metrics {
    /// Show the journal's spill: `pending` as the gauge, the totals as the counters (they
    /// only grow).
    pub fn audit_spill(&self, c: SpillCounts) {
        self.audit_spill_pending
            .set(i64::try_from(c.pending).unwrap_or(i64::MAX));
        for (outcome, total) in [
            (SpillOutcome::Spilled, c.spilled),
            (SpillOutcome::Journaled, c.journaled),
            (SpillOutcome::Dropped, c.dropped),
        ] {
            let counter = self
                .audit_spill_records
                .with_label_values(&[outcome.label()]);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// Count a request a rate limit refused.
    pub fn rate_limited(&self, l: RateLimit) {
        self.rate_limited.with_label_values(&[l.label()]).inc();
    }

    /// Count a paid call the journal stopped.
    pub fn journal_refusal(&self, r: JournalRefusal) {
        self.audit_refusals.with_label_values(&[r.label()]).inc();
    }

    /// Count a payment by outcome and reason code (`reason` is empty for a verified one).
    pub fn payment(&self, outcome: PaymentOutcome) {
        let (label, reason) = match outcome {
            PaymentOutcome::Verified => ("verified", ""),
            PaymentOutcome::Refused(r) => ("refused", r.code()),
        };
        self.payments.with_label_values(&[label, reason]).inc();
    }

    /// Count a settlement by outcome.
    pub fn settlement(&self, outcome: SettlementOutcome) {
        self.settlements.with_label_values(&[outcome.label()]).inc();
    }

    /// Record how long a phase took.
    pub fn phase(&self, phase: Phase, took: Duration) {
        self.phase_seconds
            .with_label_values(&[phase.label()])
            .observe(took.as_secs_f64());
    }

    /// Count a payment sent again.
    pub fn replay(&self, r: Replay) {
        let kind = match r {
            Replay::Reused => "reused",
            Replay::InFlight => "in_flight",
            Replay::Replayed => "replayed",
            Replay::Resumed => "resumed",
        };
        self.replays.with_label_values(&[kind]).inc();
    }

    /// Count one OTLP batch of `spans` spans.
    pub fn export(&self, outcome: ExportOutcome, spans: u64) {
        self.otlp_batches
            .with_label_values(&[outcome.label()])
            .inc();
        self.otlp_spans
            .with_label_values(&[outcome.label()])
            .inc_by(spans);
    }
}

static METRICS: OnceLock<Option<Metrics>> = OnceLock::new();

/// A source read when `/metrics` is rendered (for values another part owns, e.g. the
/// journal's spill).
type RenderHook = Box<dyn Fn(&Metrics) + Send + Sync>;

static HOOKS: std::sync::Mutex<Vec<RenderHook>> = std::sync::Mutex::new(Vec::new());

/// Run `f` against the metrics each time they are rendered, before the text is made.
pub fn on_render(f: impl Fn(&Metrics) + Send + Sync + 'static) {
    if let Ok(mut hooks) = HOOKS.lock() {
        hooks.push(Box::new(f));
    }
}

/// The process's metrics (`None` only if registration failed, which is a programming error
/// caught by the tests; serving goes on without metrics rather than failing requests).
pub fn metrics() -> Option<&'static Metrics> {
    METRICS.get_or_init(|| build().ok()).as_ref()
}

/// Run `f` against the metrics when they exist.
pub fn with(f: impl FnOnce(&Metrics)) {
    if let Some(m) = metrics() {
        f(m)
    }
}

/// The Prometheus text exposition of everything.
pub fn render() -> String {
    let Some(m) = metrics() else {
        return String::new();
    };
    if let Ok(hooks) = HOOKS.lock() {
        for h in hooks.iter() {
            h(m);
        }
    }
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&m.registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// A service `/readyz` asks whether it answers (a remote facilitator: `GET /supported`).
#[async_trait]
pub trait Probe: Send + Sync {
    async fn reachable(&self) -> bool;
}

/// What `/readyz` checks.
#[derive(Clone, Default)]
pub struct Readiness {
    pub chains: Vec<(String, Arc<Chain>)>,
    /// Remote facilitators (`kind: http`), by network.
    pub facilitators: Vec<(String, Arc<dyn Probe>)>,
    pub store: Option<Arc<dyn ReplayStore>>,
    pub upstream: Option<SocketAddr>,
}

impl Readiness {
    /// Add another service's checks to these (a store or upstream it names replaces ours).
    pub(crate) fn merge(&mut self, other: Readiness) {
        self.chains.extend(other.chains);
        self.facilitators.extend(other.facilitators);
        if other.store.is_some() {
            self.store = other.store;
        }
        if other.upstream.is_some() {
            self.upstream = other.upstream;
        }
    }

    /// Each check's result; ready when all pass.
    pub async fn check(&self) -> (bool, serde_json::Value) {
        let mut all = true;
        let mut out = serde_json::Map::new();
        let limit = Duration::from_secs(2);
        for (network, chain) in &self.chains {
            let ok = matches!(
                tokio::time::timeout(limit, chain.check_chain_id()).await,
                Ok(Ok(()))
            );
            all &= ok;
            out.insert(format!("rpc:{network}"), json!(ok));
        }
        for (network, probe) in &self.facilitators {
            let ok = probe.reachable().await;
            all &= ok;
            out.insert(format!("facilitator:{network}"), json!(ok));
        }
        if let Some(store) = &self.store {
            let ok = matches!(tokio::time::timeout(limit, store.ping()).await, Ok(Ok(())));
            all &= ok;
            out.insert("store".into(), json!(ok));
        }
        if let Some(addr) = self.upstream {
            let ok = matches!(
                tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            all &= ok;
            out.insert("upstream".into(), json!(ok));
        }
        (all, serde_json::Value::Object(out))
    }
}

/// The admin listener's app.
pub struct Admin {
    pub readiness: Readiness,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let path = s.req_header().uri.path().to_string();
        let reply = match path.as_str() {
            "/metrics" => Reply::raw(200, "text/plain; version=0.0.4", render()),
            "/healthz" => Reply::json(200, &json!({"alive": true})),
            "/readyz" => {
                let (ready, checks) = self.readiness.check().await;
                Reply::json(
                    if ready { 200 } else { 503 },
                    &json!({"ready": ready, "checks": checks}),
                )
            }
            _ => Reply::error(404, "no_such_route", "use /metrics, /healthz or /readyz"),
        };
        reply.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_labels_render_the_label_values_dashboards_know() {
        with(|m| {
            m.payment(PaymentOutcome::Verified);
            m.payment(PaymentOutcome::Refused(Reason::Signature));
            m.settlement(SettlementOutcome::Pending);
            m.phase(Phase::Upstream, Duration::from_millis(3));
            m.replay(Replay::Resumed);
            m.export(ExportOutcome::Failed, 4);
            m.journal_refusal(JournalRefusal::BeforeSettlement);
        });
        on_render(|m| {
            m.audit_spill(SpillCounts {
                pending: 2,
                spilled: 3,
                journaled: 1,
                dropped: 0,
            })
        });
        let text = render();
        for line in [
            "x402_payments_total{outcome=\"verified\",reason=\"\"}",
            &format!(
                "x402_payments_total{{outcome=\"refused\",reason=\"{}\"}}",
                Reason::Signature.code()
            ),
            "x402_settlements_total{outcome=\"pending\"}",
            "x402_phase_seconds_count{phase=\"upstream\"}",
            "x402_replay_rejections_total{kind=\"resumed\"}",
            "x402_otlp_spans_total{outcome=\"failed\"}",
            "x402_audit_refusals_total{stage=\"before_settlement\"}",
            "x402_audit_spill_pending 2",
            "x402_audit_spill_records_total{outcome=\"spilled\"} 3",
            "x402_audit_spill_records_total{outcome=\"journaled\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn the_registry_builds_and_renders_prometheus_text() {
        with(|m| m.challenges.with_label_values(&["POST /x402"]).inc());
        let text = render();
        assert!(text.contains("x402_build_info{version=\""), "{text}");
        assert!(
            text.contains("x402_challenges_total{route=\"POST /x402\"}"),
            "{text}"
        );
    }
}
