//! Micro-benchmarks of the built-in advisor's CPU work: the StrategyRequest contract, the rule
//! engine on the seed example, and the whole rules-only answer (parse + engine + JSON).
//! Run with `cargo bench --bench strategy`; results land in target/criterion.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use x402_sidecar::advisor::{SEED_EXAMPLE, contract, engine};

fn benches(c: &mut Criterion) {
    let seed = contract::parse(SEED_EXAMPLE.as_bytes()).expect("seed");
    c.bench_function("StrategyRequest parse + normalise (seed example)", |b| {
        b.iter(|| contract::parse(black_box(SEED_EXAMPLE.as_bytes())).expect("valid"))
    });
    c.bench_function("rule engine advise (seed example)", |b| {
        b.iter(|| engine::advise(black_box(&seed)))
    });
    c.bench_function(
        "rules-only answer: parse + advise + JSON (seed example)",
        |b| {
            b.iter(|| {
                let r = contract::parse(black_box(SEED_EXAMPLE.as_bytes())).expect("valid");
                serde_json::to_vec(&engine::advise(&r)).expect("json")
            })
        },
    );
    // The contract's maximum: 100 positions on both sides, 50 symbols.
    let positions: Vec<_> = (0..100)
        .map(|i| {
            json!({"symbol": format!("C{i}-PERP"), "size": if i % 2 == 0 { 1.5 } else { -2.0 },
                "entryPx": 100.0 + f64::from(i), "markPx": 101.0 + f64::from(i), "leverage": 10})
        })
        .collect();
    let big = contract::from_value(&json!({
        "account": {"platform": "hyperliquid", "equity": 5000, "positions": positions},
        "preferences": {"leverage": 3, "riskTolerance": "medium"},
        "objectives": "stay delta-neutral",
        "symbols": (0..50).map(|i| format!("C{i}-PERP")).collect::<Vec<_>>(),
    }))
    .expect("big");
    c.bench_function("rule engine advise (100 positions)", |b| {
        b.iter(|| engine::advise(black_box(&big)))
    });
}

criterion_group!(strategy, benches);
criterion_main!(strategy);
