//! The command line as a user meets it: configuration checks, refusals, secrets kept out of output.

mod common;

use std::process::Command;

use common::bin;

const DEV_KEY_0: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

fn write(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("sidecar.yaml");
    std::fs::write(&p, text).unwrap();
    p
}

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut c = Command::new(bin());
    c.args(args).env_remove("X402_SIDECAR_CONFIG");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const INCOMPLETE: &str = r#"
inbound:
  enabled: true
  listen: 127.0.0.1:0
  routes:
    - path: /x402
      price: "$0.01"
      accepts:
        - network: eip155:84532
          asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
          pay_to: "not-an-address"
facilitators:
  - network: eip155:84532
    rpc_url: http://127.0.0.1:1
    settler: { key_env: X402_CLI_TEST_KEY }
"#;

#[test]
fn check_config_explains_every_problem_and_run_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), INCOMPLETE);
    let path = cfg.to_str().unwrap();
    let (code, _, err) = run(
        &["check-config", "--config", path],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("inbound.routes[0].accepts[0].pay_to"), "{err}");
    assert!(err.contains("inbound.routes[0].accepts[0].eip712"), "{err}");
    let (code, _, err2) = run(
        &["run", "--config", path],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1, "run must refuse an incomplete paid route: {err2}");
    assert!(err2.contains("pay_to"));
}

/// A checksummed address with one digit wrong (…C8 → …C9) would be re-checksummed and paid out
/// to someone else; check-config names the field instead, and never offers a "corrected" one.
#[test]
fn a_typo_in_a_checksummed_pay_to_fails_check_config_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let typo = "0x70997970C51812dc3A010C7d01b50e0d17dc79C9";
    let text = INCOMPLETE.replace("not-an-address", typo).replace(
        &format!("pay_to: \"{typo}\""),
        &format!("pay_to: \"{typo}\"\n          eip712: {{ name: USDC, version: \"2\" }}"),
    );
    let cfg = write(dir.path(), &text);
    let (code, _, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("inbound.routes[0].accepts[0].pay_to")
            && err.contains("checksum does not match — a typo?"),
        "{err}"
    );
    let corrected = typo
        .parse::<alloy_primitives::Address>()
        .unwrap()
        .to_checksum(None);
    assert!(
        !err.contains(&corrected),
        "no corrected address is suggested: {err}"
    );
    // The same address in one case is taken as it is.
    let lower = text.replace(typo, &typo.to_lowercase());
    let cfg = write(dir.path(), &lower);
    let (code, _, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_complete_config_is_summarised_with_prices() {
    let dir = tempfile::tempdir().unwrap();
    let text = INCOMPLETE
        .replace("not-an-address", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
        .replace("pay_to: \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"", "pay_to: \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"\n          eip712: { name: USDC, version: \"2\" }");
    let cfg = write(dir.path(), &text);
    let (code, out, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("POST /x402 costs 0.01 (10000 atomic units)"),
        "{out}"
    );
    for line in [
        "outbound: disabled",
        "facilitator: disabled",
        "admin: disabled",
        "otlp: off",
        "audit: x402-audit (kept 90 days; spill in memory only",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
}

#[test]
fn anvil_keys_are_refused_on_mainnet_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let text = INCOMPLETE.replace("eip155:84532", "eip155:8453");
    let cfg = write(dir.path(), &text);
    let (code, out, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1);
    assert!(err.contains("development keys"), "{err}");
    assert!(
        !err.contains(&DEV_KEY_0[2..]) && !out.contains(&DEV_KEY_0[2..]),
        "the key itself is never printed"
    );
    // A malformed key is reported by variable name only.
    let (_, out, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", "0xsecret-looking-garbage")],
    );
    assert!(err.contains("X402_CLI_TEST_KEY"));
    assert!(!err.contains("secret-looking-garbage") && !out.contains("secret-looking-garbage"));
}

#[test]
fn missing_environment_variables_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "inbound:\n  challenge_secret: ${X402_CLI_NO_SUCH_VAR}\n",
    );
    let (code, _, err) = run(&["check-config", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.contains("X402_CLI_NO_SUCH_VAR") && err.contains("inbound.challenge_secret"),
        "{err}"
    );
}

#[test]
fn run_with_nothing_enabled_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "store: memory\n");
    let (code, _, err) = run(&["run", "--config", cfg.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing to serve"), "{err}");
}

#[test]
fn help_explains_the_commands_without_secrets() {
    let (code, out, _) = run(&["--help"], &[("X402_BUYER_KEY", DEV_KEY_0)]);
    assert_eq!(code, 0);
    for cmd in ["run", "check-config", "pay", "sign", "demo", "devnet"] {
        assert!(out.contains(cmd), "{cmd} missing from --help");
    }
    let (_, out, _) = run(&["pay", "--help"], &[("X402_BUYER_KEY", DEV_KEY_0)]);
    assert!(!out.contains(&DEV_KEY_0[2..]), "--help never shows the key");
}

#[test]
fn a_wallet_address_that_does_not_match_the_key_stops_the_buyer() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
outbound:
  enabled: true
  wallet: { key_env: X402_CLI_TEST_KEY, address: "0x70997970C51812dc3A010C7d01b50e0d17dc79C8" }
  sellers:
    - name: a
      url: http://127.0.0.1:1/x402
      pay_to: ["0x70997970C51812dc3A010C7d01b50e0d17dc79C8"]
      networks: [eip155:84532]
      assets: ["0x036CbD53842c5426634e7929541eC2318f3dCF7e"]
      max_price: "$0.05"
  budgets: [ { network: eip155:84532, asset: "0x036CbD53842c5426634e7929541eC2318f3dCF7e", daily: "$1" } ]
"#;
    let cfg = write(dir.path(), text);
    let (code, _, err) = run(
        &["run", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("outbound.wallet.address")
            && err.contains("0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"),
        "{err}"
    );
    assert!(!err.contains(&DEV_KEY_0[2..]));
    // Without a budget nothing would ever be paid: that is an error too.
    let no_budget = text.replace("  budgets: [", "  #budgets: [").replace(
        ", address: \"0x70997970C51812dc3A010C7d01b50e0d17dc79C8\"",
        "",
    );
    let cfg = write(dir.path(), &no_budget);
    let (code, _, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1);
    assert!(err.contains("outbound.budgets"), "{err}");
}

#[test]
fn audit_and_ledger_refuse_a_missing_place_and_a_date_that_is_not_one() {
    let d = tempfile::tempdir().unwrap();
    let journal = d.path().join("audit");
    std::fs::create_dir(&journal).unwrap();
    let typo = d.path().join("typo");
    let typo = typo.to_str().unwrap();
    let (code, _, err) = run(&["audit", "--dir", typo, "verify"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("does not exist") && err.contains("audit.dir"),
        "{err}"
    );
    let dir = journal.to_str().unwrap();
    for since in ["banana", "yesterday", "2026-02-30", "2026-1-05"] {
        let (code, _, err) = run(&["audit", "--dir", dir, "list", "--since", since], &[]);
        assert_eq!(code, 2, "{since}: {err}");
        assert!(err.contains("YYYY-MM-DD"), "{err}");
    }
    let (code, out, err) = run(
        &["audit", "--dir", dir, "list", "--since", "2024-02-29"],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    // An empty journal that exists verifies.
    let (code, out, _) = run(&["audit", "--dir", dir, "verify"], &[]);
    assert_eq!(code, 0, "{out}");

    let ledger = d.path().join("ledger.jsonl");
    std::fs::write(&ledger, "").unwrap();
    let ledger = ledger.to_str().unwrap();
    let (code, _, err) = run(&["ledger", "--path", ledger, "--since", "yesterday"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("YYYY-MM-DD"), "{err}");
    let (code, _, err) = run(&["ledger", "--path", typo, "--since", "2026-01-01"], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no ledger at"), "{err}");
    let (code, out, err) = run(&["ledger", "--path", ledger, "--since", "2026-01-01"], &[]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A route's answer shape is checked with its path, and a key pasted into a field is never
/// printed back.
#[test]
fn check_config_names_a_bad_answer_shape_and_never_prints_a_pasted_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = DEV_KEY_0.trim_start_matches("0x");
    let text = INCOMPLETE.replace("not-an-address", key).replace(
        "      price: \"$0.01\"",
        "      price: \"$0.01\"\n      answer: strategie",
    );
    let cfg = write(dir.path(), &text);
    let (code, out, err) = run(
        &["check-config", "--config", cfg.to_str().unwrap()],
        &[("X402_CLI_TEST_KEY", DEV_KEY_0)],
    );
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("inbound.routes[0].answer: must be `strategy`"),
        "{err}"
    );
    assert!(err.contains("inbound.routes[0].accepts[0].pay_to"), "{err}");
    assert!(
        !err.contains(&key[..16]) && !out.contains(&key[..16]),
        "{err}"
    );
}
