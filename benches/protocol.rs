//! Micro-benchmarks of the paywall's CPU work per paid call: header decode, requirement match
//! and the payment check (window and signature); EIP-712 digest and signature recovery alone;
//! the 402 challenge; the StrategyRequest check.
//! Run with `make bench` (or `cargo bench`); results land in target/criterion.

use std::hint::black_box;

use alloy_primitives::{Address, U256};
use alloy_signer_local::PrivateKeySigner;
use criterion::{Criterion, criterion_group, criterion_main};
use x402_sidecar::buyer::client;
use x402_sidecar::evm::typed;
use x402_sidecar::x402::challenge::ChallengeKey;
use x402_sidecar::x402::codec::{self, decode_payment};
use x402_sidecar::x402::matching::{Offer, match_payment};

fn offer() -> Offer {
    Offer {
        scheme: "exact".into(),
        network: "eip155:84532".into(),
        chain_id: 84532,
        asset: x402_sidecar::devkit::devnet::USDC,
        pay_to: Address::repeat_byte(2),
        amount: U256::from(10_000),
        max_timeout_seconds: 300,
        decimals: 6,
        eip712_name: "USDC".into(),
        eip712_version: "2".into(),
        facilitator: "local:0x0000000000000000000000000000000000000001".into(),
    }
}

fn benches(c: &mut Criterion) {
    let key = ChallengeKey::new(b"bench-secret-0123456789".to_vec());
    let o = offer();
    let now = x402_sidecar::util::now_secs();
    let signer = PrivateKeySigner::random();
    let req = o.challenge(&key, "POST /x402", now);
    let auth = client::authorization(&signer, &req, now);
    let payload = client::sign(&signer, &req, auth).expect("sign");
    let header = client::v2_header(&serde_json::to_value(&req).expect("json"), &payload, None);
    let domain = typed::domain("USDC", "2", 84532, o.asset);
    let offers = [o.clone()];

    c.bench_function(
        "decode + match + check (v2 header, window and signature recovery)",
        |b| {
            b.iter(|| {
                let p = decode_payment(black_box(header.as_bytes()), true).expect("decode");
                match_payment(&offers, &p, &key, "POST /x402", now).expect("match")
            })
        },
    );
    c.bench_function("EIP-712 digest + signature recovery", |b| {
        b.iter(|| {
            typed::verify_signature(
                black_box(&payload.authorization),
                &payload.signature,
                &domain,
            )
            .expect("sig")
        })
    });
    c.bench_function("402 challenge (v2 header, HMAC)", |b| {
        b.iter(|| codec::encode(&black_box(&o).challenge(&key, "POST /x402", now)))
    });
    c.bench_function("StrategyRequest validation (seed example)", |b| {
        b.iter(|| {
            x402_sidecar::advisor::validate(black_box(
                x402_sidecar::advisor::SEED_EXAMPLE.as_bytes(),
            ))
            .expect("valid")
        })
    });
}

criterion_group!(protocol, benches);
criterion_main!(protocol);
