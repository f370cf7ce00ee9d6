//! The official x402 SDKs as peers, pinned: Python `x402` 2.25.0 (`.venv-interop`, made by
//! `scripts/setup-interop.sh`) and TypeScript `@x402/*` 2.27.0 (`tests/interop/js`, `npm ci`),
//! driven as child processes (`tests/interop/x402_peer.py`, `tests/interop/js/*.mjs`) against
//! real sidecar processes on the devnet with the project's token. Every case settles for real
//! and checks the chain: the transfers into `payTo`, the payers' balances, which key sent each
//! settlement, and the sellers' journals and the buyer's ledger against them.
//!
//! Each settler has its own funded devnet key: our seller the devnet's settler (account 1),
//! the official Python facilitator account 2, our facilitator service account 3.
//!
//! Without the peers installed the suite is skipped with a loud message, unless
//! X402_REQUIRE_INTEROP is set (as `make test` does, after installing them), in which case it
//! fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use alloy_primitives::{Address, B256, U256};
use alloy_provider::Provider;
use alloy_signer_local::PrivateKeySigner;
use common::*;
use serde_json::{Value, json};
use x402_sidecar::buyer::{client, ledger};
use x402_sidecar::devkit::nodes::{BuyerNode, FacilitatorNode, SellerEntry, SettledBy};
use x402_sidecar::devkit::peers::{OfficialPeers, PEER_KEY_ENV};
use x402_sidecar::devkit::spawn::{PROXY_VARS, SpawnError};
use x402_sidecar::evm::keys::DEV_KEYS;
use x402_sidecar::x402::money::PriceSpec;

/// What each payer is given.
const FUNDED: u64 = 1_000_000;
/// The official Python facilitator's key (devnet account 2).
const OFFICIAL_FACILITATOR: usize = 2;
/// Our facilitator service's key (devnet account 3).
const OUR_FACILITATOR: usize = 3;
const BUYER_KEY_ENV: &str = "X402_TEST_BUYER_KEY";
const FACILITATOR_KEY_ENV: &str = "X402_TEST_FACILITATOR_KEY";
/// The v1 name of the devnet's network (Base Sepolia's chain id).
const V1_NETWORK: &str = "base-sepolia";

/// The installed peers (the dev kit's launchers, plus the one-shot clients).
struct Peers {
    python: PathBuf,
    script: PathBuf,
    js: PathBuf,
    official: OfficialPeers,
}

impl Peers {
    /// The peers, or `None` (after a loud message) when they are not installed and
    /// X402_REQUIRE_INTEROP is unset.
    fn find() -> Option<Peers> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let what = match OfficialPeers::find(&root) {
            Ok(official) => {
                return Some(Peers {
                    python: official.python.clone(),
                    script: official.script.clone(),
                    js: official.js.clone(),
                    official,
                });
            }
            Err(what) => what,
        };
        let msg = format!("the interop suite needs {what} (`make interop` does both)");
        if std::env::var_os("X402_REQUIRE_INTEROP").is_some() {
            panic!("{msg}");
        }
        eprintln!(
            "\n{}\nSKIPPED interop: {msg}\n{}\n",
            "!".repeat(78),
            "!".repeat(78)
        );
        None
    }

    /// The official Python client pays `url` once (v2, or v1 from the 402's body): its report.
    async fn python_client(&self, url: &str, payer: &PrivateKeySigner, v1: bool) -> Value {
        let body = body_file();
        let mut args = vec![
            self.script.to_string_lossy().into_owned(),
            "client".into(),
            "--url".into(),
            url.into(),
            "--body".into(),
            body.path().to_string_lossy().into_owned(),
        ];
        if v1 {
            args.push("--v1".into());
        }
        one_shot("official Python client", &self.python, &args, payer).await
    }

    /// The official TypeScript client (`@x402/fetch` + `@x402/evm`) pays `url` once.
    async fn typescript_client(&self, url: &str, payer: &PrivateKeySigner) -> Value {
        let body = body_file();
        let args = vec![
            self.js.join("client.mjs").to_string_lossy().into_owned(),
            "--url".into(),
            url.into(),
            "--body".into(),
            body.path().to_string_lossy().into_owned(),
        ];
        one_shot(
            "official TypeScript client",
            Path::new("node"),
            &args,
            payer,
        )
        .await
    }

    /// The official Python facilitator, served over HTTP, settling with devnet key `key`.
    async fn python_facilitator(&self, dir: &Path, net: &Devnet, key: usize) -> Sidecar {
        started(
            self.official
                .python_facilitator(dir, &net.rpc_url, DEV_KEYS[key])
                .await,
        )
    }

    /// An official FastAPI seller of `POST /x402` at $0.01 to `pay_to`.
    async fn python_seller(&self, dir: &Path, facilitator: &str, pay_to: Address) -> Sidecar {
        started(self.official.python_seller(dir, facilitator, pay_to).await)
    }

    /// An official express seller (`@x402/express`) of the same route.
    async fn express_seller(&self, dir: &Path, facilitator: &str, pay_to: Address) -> Sidecar {
        started(self.official.express_seller(dir, facilitator, pay_to).await)
    }
}

fn started(r: Result<Sidecar, SpawnError>) -> Sidecar {
    r.unwrap_or_else(|e| panic!("peer did not start: {e}"))
}

/// The seed strategy request, in a file for a client's `--body`.
fn body_file() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), seed_body()).unwrap();
    f
}

/// Run a one-shot peer with `payer`'s key in its environment; its one-line JSON report.
async fn one_shot(what: &str, exe: &Path, args: &[String], payer: &PrivateKeySigner) -> Value {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .env(PEER_KEY_ENV, key_hex(payer))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for v in PROXY_VARS {
        cmd.env_remove(v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot start {what} ({}): {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{what} printed no report ({e}):\n{stdout}\n{stderr}"))
}

fn key_hex(s: &PrivateKeySigner) -> String {
    format!("0x{}", x402_sidecar::util::hex(&s.to_bytes()[..]))
}

fn dev_address(i: usize) -> Address {
    DEV_KEYS[i].parse::<PrivateKeySigner>().unwrap().address()
}

/// Who sent transaction `tx` (the settler that paid its gas).
async fn sender(net: &Devnet, tx: B256) -> Address {
    net.provider()
        .get_transaction_receipt(tx)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no receipt for {tx}"))
        .from
}

/// A client's report of one paid call: 200, a successful receipt in `header` naming `payer`
/// and `network`, and the strategy body. Returns the receipt's transaction.
fn assert_paid_report(r: &Value, payer: &PrivateKeySigner, header: &str, network: &str) -> B256 {
    assert_eq!(r["status"], 200, "{r}");
    let receipt = &r["receipt"];
    assert_eq!(receipt["header"], header, "{r}");
    assert_eq!(receipt["success"], true, "{r}");
    assert_eq!(receipt["network"], network, "{r}");
    assert_eq!(
        receipt["payer"].as_str(),
        Some(payer.address().to_checksum(None).as_str()),
        "the receipt names the payer, EIP-55: {r}"
    );
    assert!(r["body"]["strategy"]["summary"].is_string(), "{r}");
    receipt["transaction"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no transaction in the receipt: {r}"))
}

/// The chain shows exactly these payments into `payTo`, one per payer at the price, each with
/// the transaction named, each payer left with `FUNDED` less the price, each settled (sent) by
/// `settler`.
async fn assert_settled(net: &Devnet, paid: &[(&PrivateKeySigner, B256)], settler: Address) {
    let money = Money::new(net, PRICE);
    let transfers = money.assert_transfers(paid.len()).await;
    for (payer, tx) in paid {
        let t = transfers
            .iter()
            .find(|t| t.tx == *tx)
            .unwrap_or_else(|| panic!("no transfer to payTo in {tx}: {transfers:?}"));
        assert_eq!(t.from, payer.address(), "the payer's own money moved");
        money.assert_holds(payer.address(), FUNDED - PRICE).await;
        assert_eq!(sender(net, *tx).await, settler, "settled by its own key");
    }
}

/// The transactions of a journal's `event` records (`settled` for a seller,
/// `facilitator_settled` for the facilitator service), in order.
fn journal_txs(dir: &Path, event: &str) -> Vec<B256> {
    x402_sidecar::audit::read_all(dir)
        .unwrap()
        .into_iter()
        .filter(|r| r.event == event)
        .map(|r| {
            r.tx.and_then(|t| t.parse().ok())
                .expect("a settled record names its tx")
        })
        .collect()
}

/// A buyer node paying the one seller `url` from `payer`'s key, started in `dir` as `name`.
async fn start_buyer(
    net: &Devnet,
    dir: &Path,
    name: &str,
    url: &str,
    payer: &PrivateKeySigner,
) -> (Sidecar, PathBuf) {
    let port = free_port();
    let ledger = dir.join(format!("{name}-ledger.jsonl"));
    let mut node = BuyerNode::new(port, net, BUYER_KEY_ENV, PriceSpec::Units(FUNDED), &ledger);
    node.sellers = vec![SellerEntry::new(
        name,
        url,
        net.pay_to,
        PriceSpec::Units(PRICE),
    )];
    node.timeout_ms = Some(20_000);
    node.server = Some(Server::small());
    let buyer = run(
        launch(dir, name).env(BUYER_KEY_ENV, key_hex(payer)),
        &node.yaml(),
        port,
    )
    .await;
    (buyer, ledger)
}

/// Ask `buyer` for a strategy: it pays its seller. The answer's transaction.
async fn buy(http: &reqwest::Client, buyer: &Sidecar, payer: &PrivateKeySigner) -> B256 {
    let (status, headers, body) =
        post_json(http, &format!("{}/x402", buyer.url), seed_body(), &[]).await;
    let log = || buyer.log_tail(20);
    assert_eq!(status, 200, "{body}\n{}", log());
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
    assert_eq!(h("x-strategy-source"), "paid", "{body}");
    assert_eq!(h("x-payment-payer"), payer.address().to_checksum(None));
    assert!(body["strategy"]["summary"].is_string(), "{body}");
    h("x-payment-tx")
        .parse()
        .unwrap_or_else(|_| panic!("no X-Payment-Tx: {headers:?}"))
}

/// The buyer's ledger: one authorization, `paid`, for `tx`, of the price.
fn assert_ledger(path: &Path, tx: B256) {
    let l = ledger::finals(&ledger::read(path).unwrap());
    assert_eq!(l.len(), 1, "{l:?}");
    assert_eq!(l[0].outcome, "paid");
    assert_eq!(l[0].amount, PRICE.to_string());
    assert_eq!(l[0].tx.as_deref(), Some(tx.to_string().as_str()));
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// The official Python client pays our seller once in v2 (`PAYMENT-SIGNATURE`, CAIP-2 receipt)
/// and once in v1 (`X-PAYMENT` from the 402's body, `base-sepolia` receipt): two transfers, two
/// answers, two `settled` records, sent by our seller's key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_client_pays_our_seller_in_v2_and_v1() {
    let Some(peers) = Peers::find() else { return };
    let w = World::start().await;
    let (a, b) = (w.buyer(FUNDED).await, w.buyer(FUNDED).await);

    let v2 = peers.python_client(&w.paid_url(), &a, false).await;
    let tx_a = assert_paid_report(&v2, &a, "PAYMENT-RESPONSE", "eip155:84532");
    let v1 = peers.python_client(&w.paid_url(), &b, true).await;
    let tx_b = assert_paid_report(&v1, &b, "X-PAYMENT-RESPONSE", V1_NETWORK);

    assert_settled(&w.net, &[(&a, tx_a), (&b, tx_b)], w.net.settler.address()).await;
    assert_eq!(journal_txs(&w.seller.audit_dir(), "settled"), [tx_a, tx_b]);
    assert_eq!(w.upstream.calls(), 2, "one answer per payment");
}

/// The official TypeScript client (`@x402/fetch` + `@x402/evm`, a viem account) pays our seller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_typescript_client_pays_our_seller() {
    let Some(peers) = Peers::find() else { return };
    let w = World::start().await;
    let payer = w.buyer(FUNDED).await;

    let r = peers.typescript_client(&w.paid_url(), &payer).await;
    let tx = assert_paid_report(&r, &payer, "PAYMENT-RESPONSE", "eip155:84532");

    assert_settled(&w.net, &[(&payer, tx)], w.net.settler.address()).await;
    assert_eq!(journal_txs(&w.seller.audit_dir(), "settled"), [tx]);
    assert_eq!(w.upstream.calls(), 1);
}

/// Our buyer pays an official FastAPI seller and an official express seller, both verified and
/// settled by the official Python facilitator over HTTP with its own key; the ledger matches the
/// chain. A payer short of the price is refused by both (the facilitator's reason in the v2
/// `PAYMENT-REQUIRED` header), our buyer shows that reason, and nobody is charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_buyer_pays_official_python_and_express_sellers_settled_by_the_official_facilitator() {
    let Some(peers) = Peers::find() else { return };
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let fac = peers
        .python_facilitator(dir.path(), &net, OFFICIAL_FACILITATOR)
        .await;
    let py = peers.python_seller(dir.path(), &fac.url, net.pay_to).await;
    let js = peers.express_seller(dir.path(), &fac.url, net.pay_to).await;
    let (a, b) = (
        net.new_buyer(U256::from(FUNDED)).await.unwrap(),
        net.new_buyer(U256::from(FUNDED)).await.unwrap(),
    );
    let (buyer_a, ledger_a) =
        start_buyer(&net, dir.path(), "python", &format!("{}/x402", py.url), &a).await;
    let (buyer_b, ledger_b) =
        start_buyer(&net, dir.path(), "express", &format!("{}/x402", js.url), &b).await;
    let http = http();

    let tx_a = buy(&http, &buyer_a, &a).await;
    let tx_b = buy(&http, &buyer_b, &b).await;

    assert_settled(
        &net,
        &[(&a, tx_a), (&b, tx_b)],
        dev_address(OFFICIAL_FACILITATOR),
    )
    .await;
    assert_ledger(&ledger_a, tx_a);
    assert_ledger(&ledger_b, tx_b);

    // A payer short of the price: each official seller refuses (its facilitator's reason in the
    // v2 PAYMENT-REQUIRED header), our buyer shows that reason, nobody is charged.
    for (name, seller) in [("python-poor", &py), ("express-poor", &js)] {
        let poor = net.new_buyer(U256::from(PRICE - 1)).await.unwrap();
        let (buyer, ledger) = start_buyer(
            &net,
            dir.path(),
            name,
            &format!("{}/x402", seller.url),
            &poor,
        )
        .await;
        let (status, _, body) =
            post_json(&http, &format!("{}/x402", buyer.url), seed_body(), &[]).await;
        assert_eq!(
            (status, &body["error"]),
            (502, &json!("no_seller_answered")),
            "{body}"
        );
        let attempt = &body["attempts"][0];
        assert_eq!(attempt["outcome"], "payment_refused", "{body}");
        assert!(
            attempt["detail"].as_str().unwrap_or_default().starts_with(
                "the seller refused the payment: invalid_exact_evm_insufficient_balance;"
            ),
            "the official facilitator's reason, as the seller put it: {body}"
        );
        Money::new(&net, PRICE)
            .assert_holds(poor.address(), PRICE - 1)
            .await;
        assert!(
            ledger::finals(&ledger::read(&ledger).unwrap())
                .iter()
                .all(|e| !e.charged() && e.tx.is_none()),
            "nothing paid, nothing charged in the ledger"
        );
    }
    Money::new(&net, PRICE).assert_transfers(2).await;
}

/// Our seller with `kind: http` verifies and settles v2 and v1 payments through the official
/// Python facilitator, which sends the settlements with its own key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_seller_settles_through_the_official_python_facilitator() {
    let Some(peers) = Peers::find() else { return };
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let fac = peers
        .python_facilitator(dir.path(), &net, OFFICIAL_FACILITATOR)
        .await;
    let upstream = Upstream::start().await;
    let mut node = seller_node(free_port(), &upstream.url, &net);
    node.settlement.by = SettledBy::Remote {
        url: fac.url.clone(),
        timeout_ms: 20_000,
    };
    // No settler key: the remote facilitator settles.
    let seller = run(launch(dir.path(), "seller"), &node.yaml(), node.listen).await;
    let url = format!("{}/x402", seller.url);
    let http = http();
    let (a, b) = (
        net.new_buyer(U256::from(FUNDED)).await.unwrap(),
        net.new_buyer(U256::from(FUNDED)).await.unwrap(),
    );

    let mut paid = Vec::new();
    for (payer, v1) in [(&a, false), (&b, true)] {
        let p = client::pay(&http, &url, seed_body().into(), payer, v1, None, |_| {})
            .await
            .unwrap_or_else(|e| panic!("v1={v1}: {e}\n{}", seller.log_tail(20)));
        assert_eq!(
            p.status,
            200,
            "v1={v1}: {}",
            String::from_utf8_lossy(&p.body)
        );
        let receipt = p.receipt.expect("a receipt");
        assert!(receipt.success);
        assert_eq!(receipt.payer, Some(payer.address()));
        let network = if v1 { V1_NETWORK } else { "eip155:84532" };
        assert_eq!(receipt.network, network);
        paid.push((payer, receipt.transaction.parse::<B256>().unwrap()));
    }

    assert_settled(&net, &paid, dev_address(OFFICIAL_FACILITATOR)).await;
    let txs: Vec<B256> = paid.iter().map(|(_, tx)| *tx).collect();
    assert_eq!(journal_txs(&seller.audit_dir(), "settled"), txs);
    assert_eq!(upstream.calls(), 2);
}

/// An official FastAPI seller (paid by the official Python client) and an official express
/// seller (paid by the official TypeScript client) verify and settle through our facilitator
/// service, which sends the settlements with its own key and journals them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_and_express_servers_settle_through_our_facilitator() {
    let Some(peers) = Peers::find() else { return };
    let net = devnet().await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = FacilitatorNode::new(free_port(), &net, FACILITATOR_KEY_ENV);
    node.settlement.receipt_timeout_ms = Some(10_000);
    node.server = Some(Server::small());
    let fac = run(
        launch(dir.path(), "facilitator").env(FACILITATOR_KEY_ENV, DEV_KEYS[OUR_FACILITATOR]),
        &node.yaml(),
        node.listen,
    )
    .await;
    let py = peers.python_seller(dir.path(), &fac.url, net.pay_to).await;
    let js = peers.express_seller(dir.path(), &fac.url, net.pay_to).await;
    let (a, b) = (
        net.new_buyer(U256::from(FUNDED)).await.unwrap(),
        net.new_buyer(U256::from(FUNDED)).await.unwrap(),
    );

    let r = peers
        .python_client(&format!("{}/x402", py.url), &a, false)
        .await;
    let tx_a = assert_paid_report(&r, &a, "PAYMENT-RESPONSE", "eip155:84532");
    let r = peers
        .typescript_client(&format!("{}/x402", js.url), &b)
        .await;
    let tx_b = assert_paid_report(&r, &b, "PAYMENT-RESPONSE", "eip155:84532");

    assert_settled(
        &net,
        &[(&a, tx_a), (&b, tx_b)],
        dev_address(OUR_FACILITATOR),
    )
    .await;
    assert_eq!(
        journal_txs(&fac.audit_dir(), "facilitator_settled"),
        [tx_a, tx_b]
    );
}

/// Discovery, checked by the official SDK: the 402's `extensions.bazaar` passes the Python
/// SDK's bazaar validators (its `info` against its own schema, and the protocol rules); the
/// `/.well-known/x402` document lists the paid route (not the free one) with the same bazaar
/// declaration; the admin port's `/openapi.json` is OpenAPI 3.1 whose schemas are valid JSON
/// Schema (draft 2020-12) and whose request example validates against its schema. And the
/// official Python client, which echoes the 402's extensions in its payment, still pays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_documents_pass_the_official_validators() {
    let Some(peers) = Peers::find() else { return };
    let admin = free_port();
    let w = World::start_with(|n| {
        n.admin = Some(admin);
        n.free_route = true;
    })
    .await;
    let (status, headers, _) = post_json(&w.http, &w.paid_url(), seed_body(), &[]).await;
    assert_eq!(status, 402);
    let required: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            headers["payment-required"].to_str().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let bazaar = required["extensions"]["bazaar"].clone();
    assert_eq!(bazaar["info"]["input"]["method"], "POST", "{required}");

    let known: Value = w
        .http
        .get(format!("{}/.well-known/x402", w.seller.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(known["version"], 1, "{known}");
    let resources: Vec<&str> = known["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(resources.len(), 1, "only the paid route: {known}");
    assert!(resources[0].ends_with("/x402"), "{known}");
    assert_eq!(known["items"][0]["accepts"][0]["amount"], PRICE.to_string());

    let openapi: Value = w
        .http
        .get(format!("http://127.0.0.1:{admin}/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        openapi["paths"]["/x402"]["post"]["responses"]["402"].is_object(),
        "{openapi}"
    );
    assert!(
        openapi["paths"]["/free"]["get"]["responses"]["402"].is_null(),
        "the free route asks for no payment"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("discovery.json");
    let doc =
        json!({"bazaar": [bazaar, known["items"][0]["extensions"]["bazaar"]], "openapi": openapi});
    std::fs::write(&file, doc.to_string()).unwrap();
    let args = vec![
        peers.script.to_string_lossy().into_owned(),
        "discovery".into(),
        "--file".into(),
        file.to_string_lossy().into_owned(),
    ];
    let payer = w.buyer(0).await;
    let report = one_shot("official bazaar validator", &peers.python, &args, &payer).await;
    assert_eq!(
        report["bazaar"][0]["kind"], "BodyDiscoveryExtension",
        "{report}"
    );
    assert_eq!(report["bazaar"][0]["errors"], json!([]), "{report}");
    assert_eq!(report["bazaar"][1]["errors"], json!([]), "{report}");
    assert_eq!(report["openapi"], json!([]), "{report}");

    // The official client echoes the declaration in its payment header: still paid, once.
    let buyer = w.buyer(1_000_000).await;
    let paid = peers.python_client(&w.paid_url(), &buyer, false).await;
    assert_eq!(paid["status"], 200, "{paid}");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
}
