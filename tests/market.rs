//! Market data for the built-in advisor: the Hyperliquid and Aster parsers against recorded
//! answers in the venues' own formats (tests/fixtures/venues/), the real clients against a
//! local server replaying them (one venue request per symbol and interval for a burst, the
//! breaker, a venue that is down), the engine with that market (marks, ATR stops, funding,
//! sized opens for a flat account, limits over generated accounts), and the whole path on the
//! devnet: the `advisor` process reading a local venue, behind a seller, paid once on chain.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy_primitives::U256;
use bytes::Bytes;
use common::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use x402_sidecar::advisor::contract::{self, StrategyRequest};
use x402_sidecar::advisor::engine::{self, decisions};
use x402_sidecar::advisor::market::aster::{self, Aster};
use x402_sidecar::advisor::market::hyperliquid::{self, Hyperliquid};
use x402_sidecar::advisor::market::{
    self as market, ClientConfig, Market, MarketData, MarketError, Snapshot,
};
use x402_sidecar::advisor::response::{ActionKind, DecisionAction, Strategy};
use x402_sidecar::advisor::{SEED_EXAMPLE, agree, engine::advise_with, model};
use x402_sidecar::buyer::client;
use x402_sidecar::http::server::{self, Request, Response};

fn venue_fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/venues")
        .join(name);
    std::fs::read_to_string(&p).unwrap()
}

fn json_fixture(name: &str) -> Value {
    serde_json::from_str(&venue_fixture(name)).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Parsers against the venues' recorded answers
// ---------------------------------------------------------------------------------------------

#[test]
fn hyperliquid_meta_and_asset_ctxs_give_marks_funding_and_open_interest() {
    let q = hyperliquid::parse_meta_and_asset_ctxs(&json_fixture(
        "hyperliquid_meta_and_asset_ctxs.json",
    ))
    .unwrap();
    let btc = &q["BTC"];
    assert_eq!(btc.mark, 97507.83);
    assert_eq!(btc.funding_rate, 0.0000125);
    assert_eq!(btc.funding_interval_hours, 1.0, "Hyperliquid funds hourly");
    assert_eq!(btc.open_interest, Some(31204.88672));
    assert_eq!((btc.max_leverage, btc.size_decimals), (Some(40), Some(5)));
    assert_eq!(q["SOL"].funding_rate, -0.0000073);
    assert!(!q.contains_key("MATIC"), "delisted coins are left out");
    assert!(q.contains_key("BNB"));
    let mids = hyperliquid::parse_all_mids(&json_fixture("hyperliquid_all_mids.json")).unwrap();
    assert_eq!(mids["ETH"], 3418.13);
    assert!(hyperliquid::parse_meta_and_asset_ctxs(&json!({"universe": []})).is_err());
}

#[test]
fn hyperliquid_candles_and_aster_klines_parse_oldest_first() {
    let hl = hyperliquid::parse_candle_snapshot(&json_fixture("hyperliquid_candles_btc_1h.json"))
        .unwrap();
    let ast = aster::parse_klines(&json_fixture("aster_klines_btcusdt_1h.json")).unwrap();
    assert_eq!(hl.len(), 30);
    assert_eq!(hl, ast, "the same recorded hour in both venues' formats");
    assert!(hl.windows(2).all(|w| w[0].open_time_ms < w[1].open_time_ms));
    assert!(
        hl.iter()
            .all(|c| c.low <= c.open.min(c.close) && c.high >= c.open.max(c.close))
    );
    let atr = market::atr(&hl, 14).unwrap();
    assert!(atr > 0.0 && atr < 1_000.0, "{atr}");
    assert!(aster::parse_klines(&json!([[1, "x"]])).is_err());
}

#[test]
fn aster_premium_index_gives_mark_and_eight_hour_funding() {
    let q = aster::parse_premium_index(&json_fixture("aster_premium_index_ethusdt.json")).unwrap();
    assert_eq!(q.coin, "ETHUSDT");
    assert_eq!(q.mark, 3418.48);
    assert_eq!(q.funding_rate, 0.00062);
    assert_eq!(q.funding_interval_hours, 8.0);
    assert!((q.hourly_funding() - 0.0000775).abs() < 1e-12);
    assert!(aster::parse_premium_index(&json_fixture("aster_invalid_symbol.json")).is_err());
}

// ---------------------------------------------------------------------------------------------
// A local venue replaying the recordings
// ---------------------------------------------------------------------------------------------

/// A venue on loopback: Hyperliquid's `/info` and Aster's `/fapi/v1/*`, from the fixtures,
/// counting requests per kind; `failing` answers 500 to everything.
struct Venue {
    url: String,
    hits: Arc<std::sync::Mutex<BTreeMap<String, usize>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Venue {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Venue {
    async fn start() -> Venue {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits: Arc<std::sync::Mutex<BTreeMap<String, usize>>> = Arc::default();
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (h, f) = (hits.clone(), failing.clone());
        let handler: server::Handler = Arc::new(move |req: Request| {
            let (h, f) = (h.clone(), f.clone());
            Box::pin(async move {
                let (kind, body) = answer(&req);
                *h.lock().unwrap().entry(kind).or_default() += 1;
                if f.load(Ordering::SeqCst) {
                    return Response::Body(500, "{}".into());
                }
                body
            })
        });
        let task = tokio::spawn(server::serve(listener, handler));
        Venue {
            url,
            hits,
            failing,
            task,
        }
    }

    fn hits(&self, kind: &str) -> usize {
        self.hits.lock().unwrap().get(kind).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.hits.lock().unwrap().values().sum()
    }
}

/// The recorded answer to one venue request, and its kind (`metaAndAssetCtxs`,
/// `candleSnapshot:BTC`, `premiumIndex:BTCUSDT`, …).
fn answer(req: &Request) -> (String, Response) {
    let ok = |name: &str| Response::Body(200, venue_fixture(name));
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    let param = |k: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    match (req.method.as_str(), path) {
        ("POST", "/info") => {
            let v: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            match v["type"].as_str().unwrap_or("") {
                "metaAndAssetCtxs" => (
                    "metaAndAssetCtxs".into(),
                    ok("hyperliquid_meta_and_asset_ctxs.json"),
                ),
                "allMids" => ("allMids".into(), ok("hyperliquid_all_mids.json")),
                "candleSnapshot" => {
                    let coin = v["req"]["coin"].as_str().unwrap_or("").to_string();
                    let name = format!("hyperliquid_candles_{}_1h.json", coin.to_lowercase());
                    let body = if v["req"]["interval"] == "1h"
                        && PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                            .join("tests/fixtures/venues")
                            .join(&name)
                            .exists()
                    {
                        ok(&name)
                    } else {
                        Response::Body(200, "[]".into())
                    };
                    (format!("candleSnapshot:{coin}"), body)
                }
                _ => ("other".into(), Response::Body(422, "{}".into())),
            }
        }
        ("GET", "/fapi/v1/premiumIndex") => {
            let s = param("symbol");
            let name = format!("aster_premium_index_{}.json", s.to_lowercase());
            let body = if matches!(s.as_str(), "BTCUSDT" | "ETHUSDT") {
                ok(&name)
            } else {
                Response::Body(400, venue_fixture("aster_invalid_symbol.json"))
            };
            (format!("premiumIndex:{s}"), body)
        }
        ("GET", "/fapi/v1/klines") => {
            let s = param("symbol");
            let body = if matches!(s.as_str(), "BTCUSDT" | "ETHUSDT") && param("interval") == "1h" {
                ok(&format!("aster_klines_{}_1h.json", s.to_lowercase()))
            } else {
                Response::Body(400, venue_fixture("aster_invalid_symbol.json"))
            };
            (format!("klines:{s}"), body)
        }
        _ => ("other".into(), Response::Body(404, "{}".into())),
    }
}

fn cfg(url: &str) -> ClientConfig {
    let mut c = ClientConfig::new(url);
    c.timeout = Duration::from_millis(1_000);
    c.cache_ttl = Duration::from_secs(60);
    c
}

fn market_for(hl: Option<&str>, aster: Option<&str>) -> Market {
    Market {
        hyperliquid: hl
            .map(|u| Arc::new(Hyperliquid::new(&cfg(u)).unwrap()) as Arc<dyn MarketData>),
        aster: aster.map(|u| Arc::new(Aster::new(&cfg(u)).unwrap()) as Arc<dyn MarketData>),
        interval: "1h".into(),
        candles: 30,
        budget: Duration::from_millis(2_000),
    }
}

const FLAT: &str = r#"{"account": {"platform": "hyperliquid",
    "balance": {"asset": "USDC", "amount": 5000}, "positions": []},
  "preferences": {"leverage": 3, "riskTolerance": "medium", "timeHorizon": "24h"},
  "objectives": "Deploy my capital into BTC and ETH",
  "symbols": ["BTC-PERP", "ETH-PERP"]}"#;

fn flat_request() -> StrategyRequest {
    contract::parse(FLAT.as_bytes()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_advice_makes_one_venue_request_per_symbol_and_interval() {
    let venue = Venue::start().await;
    let m = Arc::new(market_for(Some(&venue.url), Some(&venue.url)));
    let hl = flat_request();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (m, req) = (m.clone(), hl.clone());
        set.spawn(async move { m.snapshot(&req).await.unwrap() });
    }
    let mut snaps = Vec::new();
    while let Some(s) = set.join_next().await {
        snaps.push(s.unwrap());
    }
    assert!(snaps.iter().all(|s| s == &snaps[0]), "one shared answer");
    let s = &snaps[0];
    assert!(s.problems.is_empty(), "{:?}", s.problems);
    assert_eq!(s.quotes["BTC-PERP"].mark, 97507.83);
    assert_eq!(s.candles["ETH-PERP"].len(), 30);
    assert_eq!(venue.hits("metaAndAssetCtxs"), 1, "{:?}", venue.hits);
    assert_eq!(venue.hits("candleSnapshot:BTC"), 1);
    assert_eq!(venue.hits("candleSnapshot:ETH"), 1);
    assert_eq!(venue.total(), 3);

    // Aster: per symbol, premiumIndex and klines once each; an unknown symbol is unlisted.
    let mut aster_req = hl.clone();
    aster_req.account.platform = contract::Platform::Aster;
    aster_req.symbols = vec!["BTCUSDT".into(), "ETHUSDT".into(), "NOPEUSDT".into()];
    for _ in 0..5 {
        let s = m.snapshot(&aster_req).await.unwrap();
        assert_eq!(s.quotes["ETHUSDT"].mark, 3418.48);
        assert_eq!(s.unlisted, vec!["NOPEUSDT".to_string()]);
        assert!(s.problems.is_empty(), "a 400 is not the venue down");
    }
    for k in [
        "premiumIndex:BTCUSDT",
        "klines:BTCUSDT",
        "premiumIndex:ETHUSDT",
    ] {
        assert_eq!(venue.hits(k), 1, "{k}: {:?}", venue.hits);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_venue_opens_the_breaker_and_is_left_alone() {
    let venue = Venue::start().await;
    venue.failing.store(true, Ordering::SeqCst);
    let mut c = cfg(&venue.url);
    c.cache_ttl = Duration::from_millis(1);
    c.breaker_failures = 3;
    c.breaker_open = Duration::from_secs(60);
    let hl = Hyperliquid::new(&c).unwrap();
    for _ in 0..3 {
        assert!(matches!(
            hl.quote("BTC").await,
            Err(MarketError::Status { status: 500, .. })
        ));
    }
    let before = venue.total();
    for _ in 0..10 {
        assert!(matches!(
            hl.quote("BTC").await,
            Err(MarketError::BreakerOpen { .. })
        ));
    }
    assert_eq!(
        venue.total(),
        before,
        "no request while the breaker is open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_venue_down_the_advice_is_the_requests_own_and_says_so() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let m = market_for(Some(&dead), None);
    let req = contract::parse(SEED_EXAMPLE.as_bytes()).unwrap();
    let snap = m.snapshot(&req).await.unwrap();
    assert!(snap.is_empty() && !snap.problems.is_empty(), "{snap:?}");
    let with = advise_with(&req, Some(&snap));
    let without = engine::advise(&req);
    assert_eq!(with.actions, without.actions, "same trades as without data");
    assert!(with.confidence < without.confidence);
    assert!(
        with.risk_notes
            .iter()
            .any(|n| n.contains("hyperliquid is unavailable") && n.contains("could not be reached")),
        "{:?}",
        with.risk_notes
    );
    // A flat account with the venue down opens nothing.
    let flat = advise_with(&flat_request(), Some(&snap));
    assert!(flat.actions.iter().all(|a| a.action == ActionKind::Hold));
}

// ---------------------------------------------------------------------------------------------
// The engine with a recorded market
// ---------------------------------------------------------------------------------------------

/// The recorded Hyperliquid market for `symbols` (as the request spells them).
fn recorded_hyperliquid(symbols: &[&str]) -> Snapshot {
    let quotes = hyperliquid::parse_meta_and_asset_ctxs(&json_fixture(
        "hyperliquid_meta_and_asset_ctxs.json",
    ))
    .unwrap();
    let mut s = Snapshot {
        venue: "hyperliquid".into(),
        interval: "1h".into(),
        ..Snapshot::default()
    };
    for sym in symbols {
        let coin = engine::coin(sym);
        if let Some(q) = quotes.get(&coin) {
            s.quotes.insert(sym.to_string(), q.clone());
        }
        let name = format!("hyperliquid_candles_{}_1h.json", coin.to_lowercase());
        if let Ok(text) = std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/venues")
                .join(name),
        ) {
            s.candles.insert(
                sym.to_string(),
                hyperliquid::parse_candle_snapshot(&serde_json::from_str(&text).unwrap()).unwrap(),
            );
        }
    }
    s
}

/// Every suggested trade within the request's limits: gross after ≤ cap × equity, the opens'
/// margin ≤ the balance, leverage ≤ the cap.
fn assert_within_limits(s: &Strategy, req: &StrategyRequest) {
    let a = s.analysis.as_ref().unwrap();
    let cap_usd = a.leverage_cap * a.equity_usd;
    assert!(
        a.after.gross_usd <= cap_usd + 0.01 || a.after.gross_usd <= a.before.gross_usd + 0.01,
        "{a:?}"
    );
    let margin: f64 = s
        .actions
        .iter()
        .filter(|x| matches!(x.action, ActionKind::OpenLong | ActionKind::OpenShort))
        .map(|x| {
            let l = x.leverage.unwrap();
            assert!(f64::from(l) <= a.leverage_cap, "{x:?}");
            x.notional_usd / f64::from(l)
        })
        .sum();
    if let Some(b) = &req.account.balance {
        assert!(margin <= b.amount + 0.01, "margin {margin} > {}", b.amount);
    }
}

#[test]
fn a_flat_account_asking_to_deploy_gets_sized_opens_at_the_venues_marks() {
    let req = flat_request();
    let snap = recorded_hyperliquid(&["BTC-PERP", "ETH-PERP"]);
    let s = advise_with(&req, Some(&snap));
    assert_within_limits(&s, &req);
    assert_eq!(s.actions.len(), 2, "{s:#?}");
    for (a, mark) in s.actions.iter().zip([97507.83, 3418.08]) {
        assert_eq!(
            a.action,
            ActionKind::OpenLong,
            "{a:?} (both recordings trend up)"
        );
        assert!((a.notional_usd - a.size * mark).abs() < 0.01, "{a:?}");
        assert_eq!(a.leverage, Some(3));
        assert!(a.stop_loss.unwrap() < mark && a.take_profit.unwrap() > mark);
        // Sized to lose 2 % of equity ($100) at the stop, at most.
        let loss = a.size * (mark - a.stop_loss.unwrap());
        assert!(loss <= 100.0 + 0.5, "{loss} {a:?}");
    }
    let an = s.analysis.as_ref().unwrap();
    assert_eq!(an.goal, "deploy");
    assert!(an.after.gross_usd > 0.0 && an.before.net_usd == 0.0);
    assert!(an.before.net_usd.is_sign_positive(), "no -0.0");
    assert!(
        an.per_symbol
            .iter()
            .all(|p| p.price_source == "venue" && p.atr.is_some())
    );
    assert!(s.summary.contains("open 2 position(s)"), "{}", s.summary);
    assert!(
        s.risk_notes.iter().any(|n| n.contains("ATR(14")),
        "{:?}",
        s.risk_notes
    );
    // ETH's recorded funding (0.00584 %/h, 51 % a year) is material; BTC's (11 %) too.
    assert!(
        s.risk_notes
            .iter()
            .any(|n| n.starts_with("ETH-PERP funding") && n.contains("pays")),
        "{:?}",
        s.risk_notes
    );
    // roma-01's decisions: the same opens, margin = notional ÷ leverage, within the balance.
    let d = decisions(&s, &req);
    for (x, a) in d.iter().zip(&s.actions) {
        assert_eq!(x.action, DecisionAction::OpenLong);
        assert_eq!(x.leverage, Some(3));
        let m = x.position_size_usd.unwrap();
        assert!((m * 3.0 - a.notional_usd).abs() < 0.05, "{m} {a:?}");
        assert_eq!((x.stop_loss, x.take_profit), (a.stop_loss, a.take_profit));
    }
    // Without market data: nothing to price, nothing opened (the answer of today).
    let bare = engine::advise(&req);
    assert!(bare.actions.iter().all(|a| a.action == ActionKind::Hold));
}

#[test]
fn the_seed_example_is_valued_at_the_venues_marks_when_it_has_them() {
    let req = contract::parse(SEED_EXAMPLE.as_bytes()).unwrap();
    let snap = recorded_hyperliquid(&["ETH-PERP", "BTC-PERP", "BNB-PERP"]);
    let s = advise_with(&req, Some(&snap));
    let a = s.analysis.as_ref().unwrap();
    let eth = a
        .per_symbol
        .iter()
        .find(|p| p.symbol == "ETH-PERP")
        .unwrap();
    assert_eq!((eth.price, eth.price_source.as_str()), (3418.08, "venue"));
    // 1.2 × 3418.08 + 0.5 × 97507.83
    assert_eq!(a.before.gross_usd, 52_855.61);
    assert!(a.after.leverage <= 3.0, "{a:?}");
    assert!(!s.risk_notes.iter().any(|n| n.contains("No mark price")));
    assert!(
        s.risk_notes
            .iter()
            .any(|n| n.contains("hyperliquid's mark price"))
    );
    assert!(s.confidence > engine::advise(&req).confidence);
    // The BNB symbol is priced but not held: nothing opened (no deploy objective).
    assert_eq!(s.actions[2].action, ActionKind::Hold);
    assert_within_limits(&s, &req);
}

#[test]
fn no_suggested_trade_breaks_the_leverage_cap_or_uses_more_than_the_balance() {
    let mut rng = StdRng::seed_from_u64(16);
    let snap = recorded_hyperliquid(&["BTC-PERP", "ETH-PERP", "SOL-PERP"]);
    for _ in 0..2_000 {
        let n = rng.random_range(0..3);
        let positions: Vec<Value> = ["BTC-PERP", "ETH-PERP", "SOL-PERP"][..n]
            .iter()
            .map(|s| {
                let mut p = json!({"symbol": s, "size": rng.random_range(-2.0..2.0f64) + 0.001});
                if rng.random_bool(0.5) {
                    p["entryPx"] = json!(snap.quotes[*s].mark * rng.random_range(0.8..1.2));
                }
                p
            })
            .collect();
        let balance = rng.random_range(10.0..50_000.0f64);
        let tol = ["low", "medium", "high"][rng.random_range(0..3)];
        let objective = [
            "deploy capital",
            "reduce risk",
            "stay delta neutral, deploy",
        ][rng.random_range(0..3)];
        let v = json!({"account": {"platform": "hyperliquid",
                "balance": {"asset": "USDC", "amount": balance}, "positions": positions},
            "preferences": {"leverage": rng.random_range(1..=10),
                "riskTolerance": tol},
            "objectives": objective,
            "constraints": if rng.random_bool(0.3) { json!(["max positions 2"]) } else { json!([]) },
            "symbols": ["BTC-PERP", "ETH-PERP", "SOL-PERP"]});
        let req = contract::from_value(&v).unwrap();
        let s = advise_with(&req, Some(&snap));
        assert_within_limits(&s, &req);
        let opens_new = s
            .actions
            .iter()
            .filter(|a| {
                matches!(a.action, ActionKind::OpenLong | ActionKind::OpenShort)
                    && !req.account.positions.iter().any(|p| p.symbol == a.symbol)
            })
            .count();
        if req
            .constraints
            .iter()
            .any(|c| c.contains("max positions 2"))
        {
            assert!(req.account.positions.len().max(2) >= req.account.positions.len() + opens_new);
        }
        assert_eq!(decisions(&s, &req).len(), s.actions.len());
        // The engine's own words pass the check the model's must pass (same symbols, what it
        // does with each, each symbol's own numbers).
        let own = model::Words::of(&s);
        assert_eq!(agree::check_agreement(&own, &s, &req), Ok(()), "{s:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The whole path on the devnet: the advisor process reads the venue, the seller charges once
// ---------------------------------------------------------------------------------------------

const ADVISOR_SECRET: &str = "market-test-advisor-secret-0123";
const SECRET_ENV: &str = "X402_TEST_ADVISOR_SECRET";

/// `x402-sidecar advisor` on a free port reading Hyperliquid at `venue_url`, and a seller in
/// front of it; one paid call of `body` by a fresh buyer.
async fn paid_call_through_the_advisor_process(venue_url: &str, body: &str) -> Value {
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _advisor = launch(dir.path(), "advisor")
        .env(SECRET_ENV, ADVISOR_SECRET)
        .command(
            &[
                "advisor",
                "--listen",
                &listen,
                "--secret-env",
                SECRET_ENV,
                "--hyperliquid-url",
                venue_url,
                "--market-timeout-ms",
                "1000",
            ],
            port,
        )
        .await
        .unwrap();
    let mut node = seller_node(free_port(), &format!("http://{listen}"), &net);
    node.upstream_secret_env = Some(SECRET_ENV.into());
    let seller = run(
        launch(dir.path(), "seller")
            .env(SETTLER_ENV, net.settler_key_hex())
            .env(SECRET_ENV, ADVISOR_SECRET),
        &node.yaml(),
        node.listen,
    )
    .await;
    let buyer = net.new_buyer(U256::from(1_000_000u64)).await.unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let paid = client::pay(
        &http,
        &format!("{}/x402", seller.url),
        Bytes::from(body.to_string()),
        &buyer,
        false,
        Some(U256::from(PRICE)),
        |_| {},
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_slice(&paid.body).unwrap_or(Value::Null);
    assert_eq!(paid.status, 200, "{v}\n{}", seller.logs());
    Money::new(&net, PRICE)
        .assert_paid_once(buyer.address(), 1_000_000)
        .await;
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flat_account_pays_once_for_sized_opens_at_the_venues_mark() {
    let venue = Venue::start().await;
    let v = paid_call_through_the_advisor_process(&venue.url, FLAT).await;
    let actions = v["strategy"]["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 2, "{v}");
    assert_eq!(actions[0]["symbol"], "BTC-PERP");
    assert_eq!(actions[0]["action"], "open_long");
    let (size, notional) = (
        actions[0]["size"].as_f64().unwrap(),
        actions[0]["notionalUsd"].as_f64().unwrap(),
    );
    assert!(
        (notional - size * 97507.83).abs() < 0.01,
        "at the venue's mark: {v}"
    );
    assert_eq!(v["decisions"][0]["action"], "open_long");
    assert_eq!(v["decisions"][0]["symbol"], "BTCUSDT");
    assert_eq!(v["metadata"]["market"]["venue"], "hyperliquid");
    assert_eq!(v["metadata"]["market"]["available"], true);
    // What the engine computes from the same recordings.
    let want = advise_with(
        &flat_request(),
        Some(&recorded_hyperliquid(&["BTC-PERP", "ETH-PERP"])),
    );
    assert_eq!(
        v["strategy"]["actions"],
        serde_json::to_value(&want.actions).unwrap()
    );
    assert!(venue.hits("metaAndAssetCtxs") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_venue_down_the_paid_answer_says_so_and_is_still_correct() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let v = paid_call_through_the_advisor_process(&dead, SEED_EXAMPLE).await;
    let notes: Vec<&str> = v["strategy"]["riskNotes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("hyperliquid is unavailable")),
        "{notes:?}"
    );
    assert_eq!(v["metadata"]["market"]["available"], false);
    let rules = engine::advise(&contract::parse(SEED_EXAMPLE.as_bytes()).unwrap());
    assert_eq!(
        v["strategy"]["actions"],
        serde_json::to_value(&rules.actions).unwrap(),
        "the same trades as from the request alone"
    );
    assert!(v["strategy"]["confidence"].as_f64().unwrap() < rules.confidence);
}

#[test]
fn the_advisor_help_explains_the_venue_urls() {
    let out = std::process::Command::new(bin())
        .args(["advisor", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "--hyperliquid-url",
        "https://api.hyperliquid.xyz",
        "--aster-url",
        "https://fapi.asterdex.com",
        "--market-cache-ms",
        "Off when not given",
    ] {
        assert!(help.contains(want), "{want} missing from:\n{help}");
    }
    let out = std::process::Command::new(bin())
        .args([
            "advisor",
            "--hyperliquid-url",
            "ftp://x",
            "--secret-env",
            "X402_T_S",
        ])
        .env("X402_T_S", "0123456789abcdef-secret")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hyperliquid-url"));
}
