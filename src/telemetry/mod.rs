//! Metrics and health: one Prometheus registry for the process, and the admin listener that
//! serves `/metrics` (text format), `/livez` (alive), `/readyz` (can take traffic) and
//! `/readyz?settle` (can settle now: RPC, store, gas, upstream). Metric names follow Prometheus conventions (`_total`, `_seconds`).

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
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use serde_json::json;

use crate::evm::{Chain, SettlerGas};
use crate::http::Reply;
use crate::store::ReplayStore;
use crate::x402::Reason;

pub use config::{AdminConfig, AdminSpec, OtlpConfig, OtlpSpec};

/// Every metric the sidecar exports.
pub struct Metrics {
    pub registry: Registry,
    /// 402 challenges sent, by route (`method`, `path`).
    pub challenges: IntCounterVec,
    /// Every answer the sidecar's listener gave, by `method`, `path` (a configured route, or
    /// `unmatched`) and `status` (RED: rate and errors).
    pub http_requests: IntCounterVec,
    /// Seconds per answer, by `method` and `path` (RED: duration).
    pub http_seconds: HistogramVec,
    /// Revenue settled to a payTo, in the asset's atomic units.
    pub revenue_atomic: IntCounterVec,
    /// The same revenue in whole tokens (atomic units over 10^decimals).
    pub revenue: prometheus::GaugeVec,
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
    /// Buyer ledger lines by outcome (`pending`, `paid`, `unconfirmed`, `paid_no_answer`, …).
    pub buyer_payments: IntCounterVec,
    /// Transfers the buyer's watcher saw only after their call had ended, by seller.
    pub buyer_late_transfers: IntCounterVec,
    /// Budget left today, atomic units, by asset.
    pub budget_remaining: IntGaugeVec,
    /// The day's budget, atomic units, by asset (alerts compare the two).
    pub budget_limit: IntGaugeVec,
    /// Breaker state per seller: 1 for the state it is in (`closed`, `half_open`, `open`), 0
    /// for the others.
    pub breaker_state: IntGaugeVec,
    /// Answers given by the buyer's fallback, by mode.
    pub fallbacks: IntCounterVec,
    /// Facilitator API calls by endpoint (`verify`, `settle`) and outcome.
    pub facilitator_requests: IntCounterVec,
    /// OTLP span batches by outcome (`sent`, `failed`), and the spans in them.
    pub otlp_batches: IntCounterVec,
    pub otlp_spans: IntCounterVec,
    /// Each settler key's balance in wei, by network and settler address.
    pub settler_balance: GaugeVec,
    /// The gas floor each key is held to (`gas_floor_settlements` at today's fee), in wei.
    pub settler_floor: GaugeVec,
    /// Audit records waiting in the spill now (the journal could not write them yet).
    pub audit_spill_pending: IntGauge,
    /// Audit records by what the spill did with them (`spilled`, `journaled`, `dropped`).
    pub audit_spill_records: IntCounterVec,
    /// Paid calls refused because the journal could not record them, by stage.
    pub audit_refusals: IntCounterVec,
    /// Requests refused with 429 by a rate limit, by limit (`ip`, `payer`, `facilitator_client`).
    pub rate_limited: IntCounterVec,
    /// Settlement transactions mined, by network and kind (`single`, `batch`).
    pub settlement_txs: IntCounterVec,
    /// Gas those transactions used, and what they cost in wei, by network.
    pub settlement_gas: IntCounterVec,
    pub settlement_fees: prometheus::CounterVec,
    /// Gas per payment settled (a batch's gas shared among its payments), by network.
    pub gas_per_payment: HistogramVec,
    /// Payments per settlement transaction, by network.
    pub payments_per_tx: HistogramVec,
    /// Configuration reloads (`SIGHUP`) by outcome (`applied`, `refused`).
    pub reloads: IntCounterVec,
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
    let challenges = counter(
        "x402_challenges_total",
        "402 challenges sent",
        &["method", "path"],
    )?;
    let http_requests = counter(
        "x402_http_requests_total",
        "Answers given, by listener, method, route path and status",
        &["listener", "method", "path", "status"],
    )?;
    let http_seconds = HistogramVec::new(
        HistogramOpts::new("x402_http_request_duration_seconds", "Seconds per answer").buckets(
            vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        ),
        &["listener", "method", "path"],
    )?;
    registry.register(Box::new(http_seconds.clone()))?;
    let revenue_atomic = counter(
        "x402_revenue_atomic_total",
        "Revenue settled, in the asset's atomic units",
        &["network", "asset", "pay_to"],
    )?;
    let revenue = prometheus::GaugeVec::new(
        Opts::new(
            "x402_revenue",
            "Revenue settled since start, in whole tokens (atomic units over 10^decimals)",
        ),
        &["network", "asset", "pay_to"],
    )?;
    registry.register(Box::new(revenue.clone()))?;
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
    let buyer_payments = counter(
        "x402_buyer_payments_total",
        "Buyer authorizations written down, by outcome",
        &["outcome"],
    )?;
    let buyer_late_transfers = counter(
        "x402_buyer_late_transfers_total",
        "Transfers seen only after their call had ended, by seller",
        &["seller"],
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
    let budget_limit = IntGaugeVec::new(
        Opts::new("x402_buyer_budget_limit_atomic", "The day's budget"),
        &["asset"],
    )?;
    registry.register(Box::new(budget_limit.clone()))?;
    let breaker_state = IntGaugeVec::new(
        Opts::new(
            "x402_breaker_state",
            "1 for the state each seller's breaker is in, 0 for the others",
        ),
        &["seller", "state"],
    )?;
    registry.register(Box::new(breaker_state.clone()))?;
    let settler_balance = GaugeVec::new(
        Opts::new(
            "x402_settler_balance_wei",
            "Balance of each settler key (pays the settlements' gas), in wei",
        ),
        &["network", "settler"],
    )?;
    registry.register(Box::new(settler_balance.clone()))?;
    let settler_floor = GaugeVec::new(
        Opts::new(
            "x402_settler_gas_floor_wei",
            "Gas floor of each settler key (gas_floor_settlements at the current fee), in wei",
        ),
        &["network", "settler"],
    )?;
    registry.register(Box::new(settler_floor.clone()))?;
    let settlement_txs = counter(
        "x402_settlement_transactions_total",
        "Settlement transactions mined, by network and kind (single, batch)",
        &["network", "kind"],
    )?;
    let settlement_gas = counter(
        "x402_settlement_gas_used_total",
        "Gas used by the mined settlement transactions (from their receipts)",
        &["network"],
    )?;
    let settlement_fees = prometheus::CounterVec::new(
        Opts::new(
            "x402_settlement_fees_wei_total",
            "What the mined settlement transactions cost the settler keys, in wei",
        ),
        &["network"],
    )?;
    registry.register(Box::new(settlement_fees.clone()))?;
    let gas_per_payment = HistogramVec::new(
        HistogramOpts::new(
            "x402_settlement_gas_per_payment",
            "Gas per payment settled (a batch's gas shared among its payments)",
        )
        .buckets(vec![
            10_000.0, 20_000.0, 30_000.0, 40_000.0, 50_000.0, 60_000.0, 70_000.0, 80_000.0,
            100_000.0, 150_000.0,
        ]),
        &["network"],
    )?;
    registry.register(Box::new(gas_per_payment.clone()))?;
    let payments_per_tx = HistogramVec::new(
        HistogramOpts::new(
            "x402_settlement_payments_per_transaction",
            "Payments carried by each mined settlement transaction (1 without batching)",
        )
        .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]),
        &["network"],
    )?;
    registry.register(Box::new(payments_per_tx.clone()))?;
    let reloads = counter(
        "x402_config_reloads_total",
        "Configuration reloads on SIGHUP, by outcome (applied, refused: the running one kept)",
        &["outcome"],
    )?;
    let build_info = IntGauge::with_opts(
        Opts::new("x402_build_info", "Build information")
            .const_label("version", env!("CARGO_PKG_VERSION")),
    )?;
    registry.register(Box::new(build_info.clone()))?;
    build_info.set(1);
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(Metrics {
        registry,
        challenges,
        http_requests,
        http_seconds,
        revenue_atomic,
        revenue,
        payments,
        settlements,
        phase_seconds,
        upstream_errors,
        replays,
        buyer_spend,
        buyer_payments,
        buyer_late_transfers,
        budget_remaining,
        budget_limit,
        breaker_state,
        fallbacks,
        facilitator_requests,
        otlp_batches,
        otlp_spans,
        settler_balance,
        settler_floor,
        audit_spill_pending,
        audit_spill_records,
        audit_refusals,
        rate_limited,
        settlement_txs,
        settlement_gas,
        settlement_fees,
        gas_per_payment,
        payments_per_tx,
        reloads,
        build_info,
    })
}

/// Which listener gave an answer (`x402_http_requests_total{listener}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The seller's paywall (`inbound.listen`).
    Inbound,
    /// The buyer's paying proxy (`outbound.listen`).
    Outbound,
}

impl Listener {
    pub fn label(self) -> &'static str {
        match self {
            Listener::Inbound => "inbound",
            Listener::Outbound => "outbound",
        }
    }
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
    /// Payments from a client IP whose payments the chain refused too often.
    RefusedIp,
}

impl RateLimit {
    pub fn label(self) -> &'static str {
        match self {
            RateLimit::Ip => "ip",
            RateLimit::Payer => "payer",
            RateLimit::FacilitatorClient => "facilitator_client",
            RateLimit::RefusedIp => "refused_ip",
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

    /// Count a payment by outcome and reason code (`none` for a verified one).
    pub fn payment(&self, outcome: PaymentOutcome) {
        let (label, reason) = match outcome {
            PaymentOutcome::Verified => ("verified", "none"),
            PaymentOutcome::Refused(r) => ("refused", r.code()),
        };
        self.payments.with_label_values(&[label, reason]).inc();
    }

    /// Count a 402 sent for the route `METHOD /path`.
    pub fn challenge(&self, route: &str) {
        let (method, path) = split_route(route);
        self.challenges.with_label_values(&[method, path]).inc();
    }

    /// Count one answer of the seller's listener and its duration (`path`: a configured
    /// route's, or `unmatched`).
    pub fn answer(&self, method: &str, path: &str, status: u16, took: Duration) {
        self.answer_on(Listener::Inbound, method, path, status, took);
    }

    /// Count one answer of `listener` and its duration.
    pub fn answer_on(
        &self,
        listener: Listener,
        method: &str,
        path: &str,
        status: u16,
        took: Duration,
    ) {
        let l = listener.label();
        self.http_requests
            .with_label_values(&[l, method, path, &status.to_string()])
            .inc();
        self.http_seconds
            .with_label_values(&[l, method, path])
            .observe(took.as_secs_f64());
    }

    /// Count a settled payment's amount to `pay_to` (atomic units and whole tokens).
    pub fn revenue(&self, network: &str, asset: &str, pay_to: &str, atomic: u64, decimals: u8) {
        let labels = [network, asset, pay_to];
        self.revenue_atomic
            .with_label_values(&labels)
            .inc_by(atomic);
        let total = self.revenue_atomic.with_label_values(&labels).get();
        self.revenue
            .with_label_values(&labels)
            .set(total as f64 / 10f64.powi(i32::from(decimals)));
    }

    /// Show a seller's breaker in `state` (`closed`, `half_open`, `open`).
    pub fn breaker(&self, seller: &str, state: &str) {
        for s in ["closed", "half_open", "open"] {
            self.breaker_state
                .with_label_values(&[seller, s])
                .set(i64::from(s == state));
        }
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

    /// Record a settler key's balance.
    pub fn settler_gas(&self, network: &str, g: &SettlerGas) {
        let wei = |v: alloy_primitives::U256| u128::try_from(v).map_or(f64::MAX, |w| w as f64);
        let settler = g.address.to_checksum(None);
        self.settler_balance
            .with_label_values(&[network, &settler])
            .set(wei(g.balance));
        self.settler_floor
            .with_label_values(&[network, &settler])
            .set(wei(g.floor));
    }

    /// Count a configuration reload.
    pub fn reload(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "refused" };
        self.reloads.with_label_values(&[outcome]).inc();
    }

    /// Count a mined settlement transaction and its gas.
    pub fn mined(&self, t: &crate::evm::observe::MinedTx) {
        let network = format!("eip155:{}", t.chain_id);
        let kind = if t.payments > 1 { "batch" } else { "single" };
        self.settlement_txs
            .with_label_values(&[&network, kind])
            .inc();
        self.settlement_gas
            .with_label_values(&[&network])
            .inc_by(t.gas_used);
        self.settlement_fees
            .with_label_values(&[&network])
            .inc_by(t.fee_wei as f64);
        let each = t.gas_used as f64 / t.payments as f64;
        self.gas_per_payment
            .with_label_values(&[&network])
            .observe(each);
        self.payments_per_tx
            .with_label_values(&[&network])
            .observe(t.payments as f64);
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

/// The trace id of a W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`), if valid.
pub fn trace_id(headers: &http::HeaderMap) -> Option<String> {
    let v = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = v.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|c| c.is_ascii_hexdigit()) && id.bytes().any(|c| c != b'0'))
        .then(|| id.to_ascii_lowercase())
}

/// `"POST /x402"` as `("POST", "/x402")` (labels carry no spaces).
pub fn split_route(route: &str) -> (&str, &str) {
    route.split_once(' ').unwrap_or(("ANY", route))
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
    METRICS
        .get_or_init(|| {
            let m = build().ok()?;
            crate::evm::observe::set_observer(|t| with(|m| m.mined(t)));
            Some(m)
        })
        .as_ref()
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

/// A check whose state another part keeps (the start preflight, repeated until it could be
/// made): ok or not, and the sentence `/readyz` shows.
pub struct Flag {
    state: std::sync::Mutex<(bool, String)>,
}

impl Flag {
    pub fn new(ok: bool, reason: impl Into<String>) -> Self {
        Flag {
            state: std::sync::Mutex::new((ok, reason.into())),
        }
    }

    pub fn set(&self, ok: bool, reason: String) {
        if let Ok(mut s) = self.state.lock() {
            *s = (ok, reason);
        }
    }

    pub fn get(&self) -> (bool, String) {
        self.state
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| (false, "the check's state is unreadable".into()))
    }
}

/// What a `/readyz` check decides: whether the pod can take traffic (answer 402s and free
/// calls: its listeners are up), or whether it can sell and settle now (RPC, store, gas,
/// facilitators, upstream).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affects {
    Serve,
    Settle,
}

impl Affects {
    fn label(self) -> &'static str {
        match self {
            Affects::Serve => "serve",
            Affects::Settle => "settle",
        }
    }
}

/// One `/readyz` check's result.
#[derive(Debug, Clone)]
pub struct CheckResult {
    pub name: String,
    pub affects: Affects,
    pub ok: bool,
    pub reason: String,
}

/// What `/readyz` checks.
#[derive(Clone, Default)]
pub struct Readiness {
    /// The sidecar's own listeners (`inbound`, `outbound`, `facilitator`), by name and
    /// address: accepting connections is what "can answer 402s" means.
    pub listeners: Vec<(String, String)>,
    pub chains: Vec<(String, Arc<Chain>)>,
    /// Remote facilitators (`kind: http`), by network.
    pub facilitators: Vec<(String, Arc<dyn Probe>)>,
    pub store: Option<Arc<dyn ReplayStore>>,
    pub upstream: Option<SocketAddr>,
    /// Checks another part keeps (`preflight`), all about settling.
    pub flags: Vec<(String, Arc<Flag>)>,
}

impl Readiness {
    /// Add another service's checks to these (a store or upstream it names replaces ours).
    pub(crate) fn merge(&mut self, other: Readiness) {
        self.listeners.extend(other.listeners);
        self.chains.extend(other.chains);
        self.facilitators.extend(other.facilitators);
        self.flags.extend(other.flags);
        if other.store.is_some() {
            self.store = other.store;
        }
        if other.upstream.is_some() {
            self.upstream = other.upstream;
        }
    }

    /// Every check's result, listeners first.
    pub async fn results(&self) -> Vec<CheckResult> {
        let limit = Duration::from_secs(2);
        let mut out = Vec::new();
        let mut push = |name: String, affects, ok, reason: String| {
            out.push(CheckResult {
                name,
                affects,
                ok,
                reason,
            })
        };
        for (name, addr) in &self.listeners {
            let (ok, reason) =
                match tokio::time::timeout(limit, tokio::net::TcpStream::connect(loopback(addr)))
                    .await
                {
                    Ok(Ok(_)) => (true, format!("listening on {addr}")),
                    Ok(Err(e)) => (false, format!("{addr} does not accept connections: {e}")),
                    Err(_) => (false, format!("{addr} did not accept within 2000 ms")),
                };
            push(format!("listener:{name}"), Affects::Serve, ok, reason);
        }
        for (network, chain) in &self.chains {
            let (ok, reason) = match tokio::time::timeout(limit, chain.check_chain_id()).await {
                Ok(Ok(())) => (
                    true,
                    format!("the RPC answers with chain id {}", chain.chain_id()),
                ),
                Ok(Err(e)) => (false, format!("{e}; settlements wait until it answers")),
                Err(_) => (
                    false,
                    "the RPC did not answer within 2000 ms; settlements wait until it does".into(),
                ),
            };
            push(format!("rpc:{network}"), Affects::Settle, ok, reason);
            if chain.settlers().is_empty() {
                continue;
            }
            let (ok, why) = gas_check(network, chain, limit).await;
            let reason = why.unwrap_or_else(|| "a settler key holds gas above its floor".into());
            push(
                format!("settler_gas:{network}"),
                Affects::Settle,
                ok,
                reason,
            );
        }
        for (network, probe) in &self.facilitators {
            let ok = probe.reachable().await;
            let reason = if ok {
                "GET /supported answers 200".to_string()
            } else {
                "GET /supported does not answer 200; paid calls are refused until it does".into()
            };
            push(
                format!("facilitator:{network}"),
                Affects::Settle,
                ok,
                reason,
            );
        }
        if let Some(store) = &self.store {
            let (ok, reason) = match tokio::time::timeout(limit, store.ping()).await {
                Ok(Ok(())) => (true, "the store answers".to_string()),
                Ok(Err(e)) => (
                    false,
                    format!("{e}; paid calls get 503 store_unavailable until it answers"),
                ),
                Err(_) => (
                    false,
                    "the store did not answer within 2000 ms; paid calls get 503 store_unavailable"
                        .into(),
                ),
            };
            push("store".into(), Affects::Settle, ok, reason);
        }
        if let Some(addr) = self.upstream {
            let (ok, reason) = match tokio::time::timeout(
                limit,
                tokio::net::TcpStream::connect(addr),
            )
            .await
            {
                Ok(Ok(_)) => (true, format!("the upstream {addr} accepts connections")),
                _ => (
                    false,
                    format!(
                        "the upstream {addr} does not accept connections; paid calls are refused before any settlement"
                    ),
                ),
            };
            push("upstream".into(), Affects::Settle, ok, reason);
        }
        for (name, flag) in &self.flags {
            let (ok, reason) = flag.get();
            push(name.clone(), Affects::Settle, ok, reason);
        }
        out
    }

    /// The `/readyz` body and whether the pod can take traffic (`serve`: every listener is
    /// up) and can settle now (`settle`: every other check passes as well). `ready` is `serve`.
    pub async fn check(&self) -> (bool, bool, serde_json::Value) {
        let results = self.results().await;
        let ok_of = |a: Affects| results.iter().filter(|c| c.affects == a).all(|c| c.ok);
        let serve = ok_of(Affects::Serve);
        let settle = serve && ok_of(Affects::Settle);
        let checks: Vec<serde_json::Value> = results
            .iter()
            .map(|c| {
                json!({"name": c.name, "affects": c.affects.label(), "ok": c.ok, "reason": c.reason})
            })
            .collect();
        let body = json!({"ready": serve, "serve": serve, "settle": settle, "checks": checks});
        (serve, settle, body)
    }
}

/// A listen address to connect to: the unspecified address (`0.0.0.0`, `[::]`) is reached
/// on loopback.
fn loopback(listen: &str) -> String {
    if let Some(port) = listen.strip_prefix("0.0.0.0:") {
        return format!("127.0.0.1:{port}");
    }
    if let Some(port) = listen.strip_prefix("[::]:") {
        return format!("[::1]:{port}");
    }
    listen.to_string()
}

/// The settler keys' gas on one chain: ready while at least one key holds the floor (the pool
/// skips the others); the reason names every key short of it. Records the balances.
async fn gas_check(network: &str, chain: &Chain, limit: Duration) -> (bool, Option<String>) {
    let read = match tokio::time::timeout(limit, chain.read_gas()).await {
        Ok(Ok(read)) => read,
        Ok(Err(e)) => return (false, Some(e)),
        Err(_) => {
            return (
                false,
                Some(format!(
                    "the settlers' balances could not be read within {} ms",
                    limit.as_millis()
                )),
            );
        }
    };
    with(|m| read.iter().for_each(|g| m.settler_gas(network, g)));
    let short: Vec<String> = read
        .iter()
        .filter(|g| !g.enough())
        .map(SettlerGas::describe)
        .collect();
    let ok = read.iter().any(SettlerGas::enough);
    (ok, (!short.is_empty()).then(|| short.join("; ")))
}

/// Reads every settler key's balance at start and then every `every`: the metric
/// `x402_settler_balance_wei` stays current, and a key short of gas is logged (and skipped by
/// its pool) before a paid call finds out.
pub struct GasWatch {
    pub chains: Vec<(String, Arc<Chain>)>,
    pub every: Duration,
}

impl GasWatch {
    /// Read once now.
    pub async fn read_all(&self) {
        for (network, chain) in &self.chains {
            match chain.read_gas().await {
                Ok(read) => {
                    for g in &read {
                        with(|m| m.settler_gas(network, g));
                        if !g.enough() {
                            tracing::warn!(network = %network, settler = %g.address, "{}", g.describe());
                        }
                    }
                }
                Err(e) => tracing::warn!(network = %network, "settler gas not read: {e}"),
            }
        }
    }
}

#[async_trait]
impl pingora_core::services::background::BackgroundService for GasWatch {
    async fn start(&self, mut shutdown: pingora_core::server::ShutdownWatch) {
        loop {
            self.read_all().await;
            tokio::select! {
                _ = tokio::time::sleep(self.every) => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// The admin listener's app: `/metrics`; `/livez` (alias `/healthz`): the process answers;
/// `/readyz`: 200 while the pod can take traffic (its listeners are up: it answers 402s and
/// free calls) even when an RPC, the store or gas is short, so one blip of a shared
/// dependency does not empty the Service; `/readyz?settle`: 200 only when it can also settle
/// now. Both bodies list every check with its reason.
pub struct Admin {
    pub readiness: Readiness,
    /// `/openapi.json`: the paid API's OpenAPI document, when a seller runs here.
    pub openapi: Option<serde_json::Value>,
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, s: &mut ServerSession) -> Response<Vec<u8>> {
        let uri = &s.req_header().uri;
        let path = uri.path().to_string();
        let strict = uri.query().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "settle" || p.starts_with("settle="))
        });
        let reply = match path.as_str() {
            "/metrics" => Reply::raw(200, "text/plain; version=0.0.4", render()),
            "/livez" | "/healthz" => Reply::json(200, &json!({"alive": true})),
            "/openapi.json" if self.openapi.is_some() => Reply::json(
                200,
                self.openapi.as_ref().unwrap_or(&serde_json::Value::Null),
            ),
            "/readyz" => {
                let (serve, settle, body) = self.readiness.check().await;
                let ok = if strict { settle } else { serve };
                Reply::json(if ok { 200 } else { 503 }, &body)
            }
            _ => Reply::error(
                404,
                "no_such_route",
                "use /metrics, /livez, /readyz or /readyz?settle",
            ),
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
            "x402_payments_total{outcome=\"verified\",reason=\"none\"}",
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
        with(|m| {
            m.challenge("POST /x402");
            m.answer("POST", "/x402", 404, Duration::from_millis(2));
            m.revenue("eip155:84532", "0xA", "0xB", 25_000, 6);
            m.breaker("alpha", "open");
        });
        let text = render();
        assert!(text.contains("x402_build_info{version=\""), "{text}");
        for line in [
            "x402_challenges_total{method=\"POST\",path=\"/x402\"}",
            "x402_http_requests_total{listener=\"inbound\",method=\"POST\",path=\"/x402\",status=\"404\"}",
            "x402_revenue_atomic_total{asset=\"0xA\",network=\"eip155:84532\",pay_to=\"0xB\"} 25000",
            "x402_revenue{asset=\"0xA\",network=\"eip155:84532\",pay_to=\"0xB\"} 0.025",
            "x402_breaker_state{seller=\"alpha\",state=\"open\"} 1",
            "x402_breaker_state{seller=\"alpha\",state=\"closed\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
