//! `buy` and `ledger`: one call through the outbound paying proxy, reported for people, and the
//! buyer's ledger with its spend per day and seller.

use std::path::{Path, PathBuf};

use alloy_primitives::U256;
use bytes::Bytes;

use super::{Failure, Outcome, failed, pretty};
use crate::buyer::ledger;
use crate::util::{now_secs, rfc3339};
use crate::x402;

pub(super) async fn buy(body: PathBuf, via: String, ledger: Option<PathBuf>) -> Outcome {
    let bytes = std::fs::read(&body).map_err(failed(&format!("cannot read {}", body.display())))?;
    let (status, report) = buy_once(&reqwest::Client::new(), &via, Bytes::from(bytes))
        .await
        .map_err(Failure::new)?;
    println!("{report}");
    if let Some(path) = ledger {
        show_ledger(&path, Some(&rfc3339(now_secs())[..10]))?;
    }
    if status == 200 {
        Ok(())
    } else {
        Err(Failure::reported())
    }
}

/// One call through the outbound proxy; a report for people.
pub(super) async fn buy_once(
    http: &reqwest::Client,
    via: &str,
    body: Bytes,
) -> Result<(u16, String), String> {
    let url = format!("{}/x402", via.trim_end_matches('/'));
    let resp = http
        .post(&url)
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| format!("the outbound proxy at {via} did not answer: {e}"))?;
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    let get = |k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let text = resp.bytes().await.map_err(|e| e.to_string())?;
    let mut out = format!(
        "→ POST {url}\n← {status}, answered by: {}\n",
        get("x-strategy-source")
    );
    if get("x-strategy-source") == "paid" {
        let amount = get("x-payment-amount")
            .parse::<U256>()
            .map(|a| x402::money::format_decimal(a, 6))
            .unwrap_or_default();
        out += &format!(
            "  seller   {}\n  price    {} ({} atomic units of {} on {})\n  payment  tx {} from {}\n",
            get("x-payment-seller"),
            amount,
            get("x-payment-amount"),
            get("x-payment-asset"),
            get("x-payment-network"),
            get("x-payment-tx"),
            get("x-payment-payer"),
        );
    }
    if h.contains_key("x-attempts") {
        out += &format!("  attempts {}\n", get("x-attempts"));
    }
    out += &format!(
        "  answer   {}",
        pretty(&text).replace('\n', "\n           ")
    );
    Ok((status, out))
}

pub(super) fn show_ledger(path: &Path, since: Option<&str>) -> Outcome {
    if !path.is_file() {
        return Err(Failure::usage(format!(
            "no ledger at {}: the file does not exist (give --path the outbound.ledger_path of sidecar.yaml)",
            path.display()
        )));
    }
    let entries = ledger::read(path).map_err(failed(""))?;
    let entries: Vec<_> = entries
        .into_iter()
        .filter(|e| since.is_none_or(|d| e.time.as_str() >= d))
        .collect();
    println!("{} paid call(s) in {}", entries.len(), path.display());
    for e in &entries {
        println!(
            "  {}  {:<12} {:>10} {}  tx {}  remote {} / {}  {} ms  {}",
            e.time,
            e.seller,
            e.amount,
            e.outcome,
            e.tx.as_deref().unwrap_or("-"),
            e.remote_request_id.as_deref().unwrap_or("-"),
            e.remote_payment_id.as_deref().unwrap_or("-"),
            e.latency_ms,
            e.call_id
        );
    }
    println!("spend per day and seller:");
    for ((day, seller, asset), (sum, n)) in ledger::totals(&entries) {
        println!(
            "  {day}  {seller:<12} {} ({sum} atomic units of {asset}) over {n} call(s)",
            x402::money::format_decimal(U256::from(sum), 6)
        );
    }
    Ok(())
}
