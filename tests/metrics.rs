//! `/metrics` of a seller and a buyer after paid and failed calls, read by a strict checker of
//! the Prometheus text exposition format (what `promtool check metrics` rejects, this rejects;
//! plus the project's own rules: no space and no empty value in a label).

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use x402_sidecar::x402::money::PriceSpec;

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
        && !s.starts_with("__")
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => v.parse().ok(),
    }
}

/// `{a="x",b="y"}` → labels, strictly (quoted values, only `\\`, `\"`, `\n` escapes).
fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let b: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i] != '=' {
            i += 1;
        }
        let name: String = b[start..i].iter().collect();
        if !is_label_name(&name) {
            return Err(format!("bad label name {name:?}"));
        }
        if b.get(i + 1) != Some(&'"') {
            return Err(format!("label {name}: value not quoted"));
        }
        i += 2;
        let mut value = String::new();
        loop {
            match b.get(i) {
                None => return Err(format!("label {name}: unterminated value")),
                Some('\\') => {
                    match b.get(i + 1) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        _ => return Err(format!("label {name}: bad escape")),
                    }
                    i += 2;
                }
                Some('"') => {
                    i += 1;
                    break;
                }
                Some(c) => {
                    value.push(*c);
                    i += 1;
                }
            }
        }
        if out.insert(name.clone(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        match b.get(i) {
            None => break,
            Some(',') => i += 1,
            Some(c) => return Err(format!("unexpected {c:?} after label {name}")),
        }
    }
    Ok(out)
}

/// The family a sample belongs to, given the declared types.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types
                .get(base)
                .is_some_and(|t| t == "histogram" || t == "summary")
        {
            return base;
        }
    }
    name
}

/// Every problem of `text` as an exposition; and its samples.
fn check_exposition(text: &str) -> (Vec<String>, Vec<Sample>) {
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut samples = Vec::new();
    let mut seen_series = BTreeSet::new();
    let mut done_families = BTreeSet::new();
    let mut current: Option<String> = None;
    if !text.ends_with('\n') {
        problems.push("the exposition does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}", n + 1);
        if line.is_empty() {
            problems.push(format!("{at}: empty line"));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, arg) = (parts.next(), parts.next(), parts.next());
            match (kind, name) {
                (Some("HELP"), Some(name)) => {
                    if !helps.insert(name.to_string()) {
                        problems.push(format!("{at}: second HELP for {name}"));
                    }
                    if arg.is_none_or(|h| h.trim().is_empty()) {
                        problems.push(format!("{at}: {name} has no help text"));
                    }
                }
                (Some("TYPE"), Some(name)) => {
                    let t = arg.unwrap_or("");
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&t) {
                        problems.push(format!("{at}: {name}: unknown type {t:?}"));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        problems.push(format!("{at}: second TYPE for {name}"));
                    }
                    if done_families.contains(name) || current.as_deref() == Some(name) {
                        problems.push(format!("{at}: TYPE for {name} after its samples"));
                    }
                    if t == "counter" && !name.ends_with("_total") {
                        problems.push(format!("{at}: counter {name} should end in _total"));
                    }
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => {
                problems.push(format!("{at}: no value"));
                continue;
            }
        };
        let Some(value) = parse_value(value) else {
            problems.push(format!("{at}: value {value:?} is not a number"));
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => match rest.strip_suffix('}') {
                Some(l) => (name, parse_labels(l)),
                None => {
                    problems.push(format!("{at}: unterminated labels"));
                    continue;
                }
            },
            None => (series, Ok(BTreeMap::new())),
        };
        if !is_metric_name(name) {
            problems.push(format!("{at}: bad metric name {name:?}"));
        }
        let labels = match labels {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        for (k, v) in &labels {
            if v.is_empty() {
                problems.push(format!("{at}: label {k} is empty"));
            }
            if v.contains(' ') {
                problems.push(format!("{at}: label {k}={v:?} has a space"));
            }
        }
        let fam = family(name, &types).to_string();
        if !types.contains_key(&fam) {
            problems.push(format!("{at}: {name} has no TYPE"));
        }
        if current.as_deref() != Some(fam.as_str()) {
            if let Some(c) = current.take() {
                done_families.insert(c);
            }
            if done_families.contains(&fam) {
                problems.push(format!("{at}: samples of {fam} are not together"));
            }
            current = Some(fam.clone());
        }
        if !seen_series.insert(series.to_string()) {
            problems.push(format!("{at}: {series} twice"));
        }
        if types.get(&fam).is_some_and(|t| t == "counter") && value < 0.0 {
            problems.push(format!("{at}: counter {name} is negative"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    // Histograms: cumulative buckets ending at +Inf, which equals _count.
    for (fam, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.name == format!("{fam}_bucket")) {
            let mut key = s.labels.clone();
            let le = key.remove("le").and_then(|v| parse_value(&v));
            match le {
                Some(le) => series.entry(key).or_default().push((le, s.value)),
                None => problems.push(format!("{fam}_bucket without a valid le")),
            }
        }
        for (key, buckets) in series {
            if buckets
                .windows(2)
                .any(|w| w[0].0 >= w[1].0 || w[0].1 > w[1].1)
            {
                problems.push(format!("{fam}{key:?}: buckets not cumulative"));
            }
            let inf = buckets.last().filter(|b| b.0.is_infinite()).map(|b| b.1);
            let count = samples
                .iter()
                .find(|s| s.name == format!("{fam}_count") && s.labels == key)
                .map(|s| s.value);
            if inf.is_none() || inf != count {
                problems.push(format!(
                    "{fam}{key:?}: +Inf bucket {inf:?} is not _count {count:?}"
                ));
            }
            if !samples
                .iter()
                .any(|s| s.name == format!("{fam}_sum") && s.labels == key)
            {
                problems.push(format!("{fam}{key:?}: no _sum"));
            }
        }
    }
    (problems, samples)
}

#[test]
fn the_checker_rejects_what_promtool_rejects() {
    for bad in [
        "# TYPE a_total counter\na_total{route=\"POST /x\"} 1\n",
        "# TYPE a_total counter\na_total{reason=\"\"} 1\n",
        "# TYPE a counter\na 1\n",
        "a_total 1\n",
        "# TYPE a_total counter\na_total{x=y} 1\n",
        "# TYPE a_total counter\na_total 1\na_total 2\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\nh_sum 0\n",
        "# TYPE g gauge\ng one\n",
    ] {
        let (problems, _) = check_exposition(bad);
        assert!(!problems.is_empty(), "accepted: {bad}");
    }
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{m=\"POST\",p=\"/x\"} 1\n# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n";
    assert_eq!(check_exposition(good).0, Vec::<String>::new());
}

fn value(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seller_and_buyer_metrics_parse_strictly_after_paid_and_failed_calls() {
    let admin = free_port();
    let w = World::start_with(|n| n.admin = Some(admin)).await;

    // Seller: a paid call, a 402, a 400, a 404 and a refused payment.
    let buyer = w.buyer(1_000_000).await;
    let (name, header) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    let (status, _, body) =
        post_json(&w.http, &w.paid_url(), seed_body(), &[(name, &header)]).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = post_json(&w.http, &w.paid_url(), "{\"not\":\"a strategy\"}", &[]).await;
    assert_eq!(status, 400);
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (status, _, _) = post_json(
        &w.http,
        &format!("{}/nowhere", w.seller.url),
        "{}",
        &[("traceparent", traceparent)],
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = post_json(
        &w.http,
        &w.paid_url(),
        seed_body(),
        &[("PAYMENT-SIGNATURE", "bm90IGEgcGF5bWVudA==")],
    )
    .await;
    assert_eq!(status, 402);

    // Buyer: a paid call through the outbound proxy, and one to a seller that is down.
    let (mut node, _key, l) = w
        .buyer_node(
            5_000_000,
            PriceSpec::Units(1_000_000),
            PriceSpec::Units(50_000),
        )
        .await;
    let buyer_admin = free_port();
    node.admin = Some(buyer_admin);
    let b = run(l, &node.yaml(), node.listen).await;
    let (status, _, body) = post_json(&w.http, &format!("{}/x402", b.url), seed_body(), &[]).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_transfers(2).await;
    // And the buyer's failed answers: a body that is no StrategyRequest, an unknown path.
    let (status, _, _) = post_json(
        &w.http,
        &format!("{}/x402", b.url),
        "{\"not\":\"a strategy\"}",
        &[],
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = post_json(&w.http, &format!("{}/nowhere", b.url), "{}", &[]).await;
    assert_eq!(status, 404);

    let seller_text = get_text(&w.http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    let (problems, s) = check_exposition(&seller_text);
    assert_eq!(problems, Vec::<String>::new(), "{seller_text}");
    // RED per route and status, every answer counted.
    for (path, code, n) in [
        // Ours and the buyer's.
        ("/x402", "200", 2.0),
        ("/x402", "400", 1.0),
        ("unmatched", "404", 1.0),
    ] {
        assert_eq!(
            value(
                &s,
                "x402_http_requests_total",
                &[("path", path), ("status", code)]
            ),
            n,
            "{path} {code}: {seller_text}"
        );
    }
    // 402s: the one of signed_payment, the buyer's first try, and the refused payment.
    assert!(
        value(
            &s,
            "x402_http_requests_total",
            &[("path", "/x402"), ("status", "402")]
        ) >= 3.0,
        "{seller_text}"
    );
    assert!(
        value(
            &s,
            "x402_http_request_duration_seconds_count",
            &[("path", "/x402")]
        ) >= 5.0
    );
    // Revenue: two paid calls of 10 000 atomic units (0.02 USDC).
    let pay_to = w.net.pay_to.to_string();
    assert_eq!(
        value(&s, "x402_revenue_atomic_total", &[("pay_to", &pay_to)]),
        20_000.0,
        "{seller_text}"
    );
    assert!((value(&s, "x402_revenue", &[("pay_to", &pay_to)]) - 0.02).abs() < 1e-9);
    assert_eq!(
        value(&s, "x402_settlements_total", &[("outcome", "settled")]),
        2.0
    );
    // Gas: two single settlement transactions, each a transferWithAuthorization's gas.
    assert_eq!(
        value(
            &s,
            "x402_settlement_transactions_total",
            &[("kind", "single")]
        ),
        2.0,
        "{seller_text}"
    );
    let gas = value(&s, "x402_settlement_gas_used_total", &[]);
    assert!(
        (2.0 * 30_000.0..=2.0 * 120_000.0).contains(&gas),
        "{seller_text}"
    );
    assert_eq!(value(&s, "x402_settlement_gas_per_payment_count", &[]), 2.0);
    assert!(value(&s, "x402_settlement_fees_wei_total", &[]) > 0.0);
    assert!(
        value(
            &s,
            "x402_challenges_total",
            &[("method", "POST"), ("path", "/x402")]
        ) >= 3.0,
        "{seller_text}"
    );
    assert!(
        value(&s, "process_resident_memory_bytes", &[]) > 0.0,
        "{seller_text}"
    );

    let buyer_text = get_text(&w.http, &format!("http://127.0.0.1:{buyer_admin}/metrics")).await;
    let (problems, s) = check_exposition(&buyer_text);
    assert_eq!(problems, Vec::<String>::new(), "{buyer_text}");
    assert!(value(&s, "x402_buyer_spend_atomic_total", &[("seller", "node-a")]) == 10_000.0);
    // RED on the buyer's listener: every answer, by path and status.
    for (path, code) in [("/x402", "200"), ("/x402", "400"), ("unmatched", "404")] {
        assert_eq!(
            value(
                &s,
                "x402_http_requests_total",
                &[("listener", "outbound"), ("path", path), ("status", code)]
            ),
            1.0,
            "{path} {code}: {buyer_text}"
        );
    }
    assert_eq!(
        value(
            &s,
            "x402_http_request_duration_seconds_count",
            &[("listener", "outbound")]
        ),
        3.0,
        "{buyer_text}"
    );
    assert_eq!(
        value(&s, "x402_http_requests_total", &[("listener", "inbound")]),
        0.0,
        "a buyer-only process counts no seller answers: {buyer_text}"
    );
    assert!(
        value(&s, "process_start_time_seconds", &[]) > 0.0,
        "{buyer_text}"
    );

    // The alerts and the dashboard of deploy/kubernetes/monitoring read metrics that exist:
    // each name they use is in one of the two expositions, or (a counter nothing here
    // triggered: upstream errors, late transfers, …) registered by the code.
    let exposed: BTreeSet<String> = [&seller_text, &buyer_text]
        .iter()
        .flat_map(|t| check_exposition(t).1)
        .map(|x| x.name)
        .collect();
    let registered = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/telemetry/mod.rs"),
    )
    .unwrap();
    let used = monitoring_metric_names();
    assert!(used.len() >= 20, "{used:?}");
    for name in &used {
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exposed.contains(name.as_str()) || registered.contains(&format!("\"{base}\"")),
            "deploy/kubernetes/monitoring uses {name}, which no sidecar exposes"
        );
    }
    // What the money alerts read is there after one paid call on each side.
    for name in [
        "x402_settlements_total",
        "x402_settler_balance_wei",
        "x402_settler_gas_floor_wei",
        "x402_audit_spill_pending",
        "x402_breaker_state",
        "x402_buyer_budget_remaining_atomic",
        "x402_buyer_budget_limit_atomic",
    ] {
        assert!(used.contains(name), "no alert or panel reads {name}");
        assert!(
            exposed.contains(name),
            "{name} is not exposed:\n{seller_text}\n{buyer_text}"
        );
    }

    // The seller's access log: one line per answer, 4xx included, with the request id.
    let logs = w.seller.logs();
    let access: Vec<&str> = logs.lines().filter(|l| l.contains("\"access\"")).collect();
    for code in ["200", "400", "402", "404"] {
        assert!(
            access
                .iter()
                .any(|l| l.contains(&format!("\"status\":{code}"))),
            "no access line for {code}:\n{logs}"
        );
    }
    assert!(
        access.iter().any(|l| l.contains("\"status\":404")
            && l.contains("\"trace_id\":\"4bf92f3577b34da6a3ce929d0e0e4736\"")),
        "the access line carries the caller's trace id:\n{logs}"
    );
    assert!(
        access.iter().all(|l| l.contains("\"request_id\":\"req_")),
        "{logs}"
    );
}

/// The `x402_…` names in the PrometheusRule and the Grafana dashboard.
fn monitoring_metric_names() -> BTreeSet<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes/monitoring");
    let mut names = BTreeSet::new();
    for f in ["prometheusrule.yaml", "dashboards/x402-sidecar.json"] {
        let text = std::fs::read_to_string(dir.join(f)).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("x402_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            // Not a metric: part of a word (x402_sidecar in a title is not used here).
            if i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() {
                names.insert(tail[..end].to_string());
            }
            rest = &tail[end..];
        }
    }
    names
}
