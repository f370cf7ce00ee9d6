//! The seller's own view of a run: its `x402_phase_seconds` histogram scraped from `/metrics`
//! before and after, and the devnet's block number.

use std::collections::BTreeMap;

use x402_sidecar::devkit::devnet::Devnet;

/// Sum (seconds) and count per phase.
pub(crate) type Phases = BTreeMap<String, (f64, f64)>;

/// Add the difference between two scrapes to `acc`.
pub(crate) fn add_phases(acc: &mut Phases, before: &Phases, after: &Phases) {
    for (k, (s1, c1)) in after {
        let (s0, c0) = before.get(k).copied().unwrap_or_default();
        let e = acc.entry(k.clone()).or_default();
        e.0 += s1 - s0;
        e.1 += c1 - c0;
    }
}

/// The devnet's current block number (0 if it cannot be read).
pub(crate) async fn block(net: &Devnet) -> u64 {
    use alloy_provider::Provider;
    net.provider().get_block_number().await.unwrap_or(0)
}

/// Sum and count of the seller's `x402_phase_seconds` histogram, per phase.
pub(crate) async fn phases(http: &reqwest::Client, admin: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out = BTreeMap::new();
    let Ok(resp) = http.get(format!("{admin}/metrics")).send().await else {
        return out;
    };
    let Ok(text) = resp.text().await else {
        return out;
    };
    for line in text.lines() {
        for (suffix, slot) in [("_sum{", 0), ("_count{", 1)] {
            let prefix = format!("x402_phase_seconds{suffix}phase=\"");
            if let Some(rest) = line.strip_prefix(&prefix)
                && let Some((phase, value)) = rest.split_once("\"} ")
                && let Ok(v) = value.trim().parse::<f64>()
            {
                let e: &mut (f64, f64) = out.entry(phase.to_string()).or_default();
                if slot == 0 { e.0 = v } else { e.1 = v }
            }
        }
    }
    out
}

/// Mean milliseconds of one phase between two scrapes.
pub(crate) fn phase_mean(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
    phase: &str,
) -> f64 {
    let Some((s1, c1)) = after.get(phase) else {
        return f64::NAN;
    };
    let (s0, c0) = before.get(phase).copied().unwrap_or_default();
    if c1 - c0 > 0.0 {
        (s1 - s0) / (c1 - c0) * 1000.0
    } else {
        f64::NAN
    }
}

/// Mean milliseconds per phase between two scrapes.
pub(crate) fn phase_means(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
) -> String {
    ["verify", "chain", "upstream", "settle", "total"]
        .iter()
        .filter_map(|p| {
            let m = phase_mean(before, after, p);
            (!m.is_nan()).then(|| format!("{p} {m:.2}"))
        })
        .collect::<Vec<_>>()
        .join(" · ")
}
