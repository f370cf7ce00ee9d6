//! `x402-sidecar`: the command line. Parses arguments and wires the modules together.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use alloy_primitives::U256;
use alloy_signer_local::PrivateKeySigner;
use bytes::Bytes;
use clap::{Parser, Subcommand, ValueEnum};
use pingora_core::server::Server;
use pingora_core::server::configuration::ServerConf;

use x402_sidecar::config::{self, Resolved};
use x402_sidecar::{client, devnet, inbound, init_tls, outbound, standin, strategy, x402};

#[derive(Parser)]
#[command(
    name = "x402-sidecar",
    version,
    about = "Sell roma-01 strategy advice behind an x402 paywall (USDC, EIP-3009), and pay for it.",
    long_about = "x402-sidecar sits in front of a strategy endpoint. Unpaid calls get HTTP 402 with payment \
instructions; a paid call is verified (EIP-712 signature, amount, recipient, time window, nonce, balance), \
claimed against replay, forwarded, and settled on chain only after the upstream answered completely.\n\n\
Start with `x402-sidecar demo` (a local chain, the built-in advisor and one paid call) and \
`x402-sidecar check-config --config sidecar.yaml`."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true, env = "X402_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check that no record was edited, inserted or deleted (exit 1 if one was).
    Verify,
    /// Every record about a request id, payment id or transaction hash.
    Show { id: String },
    /// Records since a day, optionally for one payer.
    List {
        /// YYYY-MM-DD
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        payer: Option<String>,
        /// Only a buyer account owner's records (as logged: the address, or its `hmac:` form).
        #[arg(long)]
        owner: Option<String>,
        /// Hash `--owner` first, with the key in `--key-env`, to find records written with
        /// `outbound.owners.log: hashed`.
        #[arg(long, requires = "owner")]
        hash_owner: bool,
        /// Environment variable holding the owner hash key.
        #[arg(long, default_value = "X402_OWNER_HASH_KEY")]
        key_env: String,
    },
    /// All records, for accounting.
    Export {
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Jsonl,
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sidecar with a configuration file.
    Run {
        /// Path of sidecar.yaml.
        #[arg(
            long,
            short,
            env = "X402_SIDECAR_CONFIG",
            default_value = "sidecar.yaml"
        )]
        config: PathBuf,
    },
    /// Check a configuration file and explain every problem found (exit 1 if any).
    CheckConfig {
        #[arg(
            long,
            short,
            env = "X402_SIDECAR_CONFIG",
            default_value = "sidecar.yaml"
        )]
        config: PathBuf,
    },
    /// Pay for one call: POST, read the 402, sign an EIP-3009 authorization, retry; show each step.
    Pay {
        /// URL of the paid route, e.g. http://127.0.0.1:8402/x402
        #[arg(long)]
        url: String,
        /// JSON file to send as the body (a StrategyRequest).
        #[arg(long)]
        body: PathBuf,
        /// Environment variable holding the buyer's private key (never pass the key itself).
        #[arg(long, default_value = "X402_BUYER_KEY")]
        key_env: String,
        /// Refuse to pay more than this ("$0.05" or atomic units).
        #[arg(long)]
        max_amount: Option<String>,
        /// Pay with x402 v1 (X-PAYMENT) even if the seller speaks v2.
        #[arg(long)]
        v1: bool,
    },
    /// Sign a payment for a 402 challenge and print the header line to send (for curl scripts).
    ///
    /// Reads the challenge from --challenge (the PAYMENT-REQUIRED header value, v2) or from
    /// --body-file (a v1 402 JSON body) and prints e.g. `PAYMENT-SIGNATURE: eyJ4...`.
    Sign {
        /// Value of the PAYMENT-REQUIRED header of the 402.
        #[arg(long)]
        challenge: Option<String>,
        /// File holding the 402 JSON body (used for v1, or when no header is given).
        #[arg(long)]
        body_file: Option<PathBuf>,
        /// Environment variable holding the buyer's private key.
        #[arg(long, default_value = "X402_BUYER_KEY")]
        key_env: String,
        /// Answer with x402 v1 (X-PAYMENT) from the JSON body.
        #[arg(long)]
        v1: bool,
    },
    /// Buy strategy advice through the outbound paying proxy (the Buyer demo): shows the seller
    /// chosen, the price, the payment, the answer and the spend.
    Buy {
        /// JSON file with the StrategyRequest to send.
        #[arg(long)]
        body: PathBuf,
        /// The outbound proxy.
        #[arg(long, default_value = "http://127.0.0.1:8403")]
        via: String,
        /// Ledger file to sum today's spend from (the outbound.ledger_path of the proxy).
        #[arg(long)]
        ledger: Option<PathBuf>,
    },
    /// List the buyer's ledger of paid calls and sum the spend per day and seller.
    Ledger {
        #[arg(long, default_value = "x402-ledger.jsonl")]
        path: PathBuf,
        /// Only entries on or after this day (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
    },
    /// Serve the built-in strategy advisor: the sidecar's upstream (rule engine, optional model).
    ///
    /// Answers only calls carrying the shared secret (X-Sidecar-Secret) that the sidecar sends
    /// when `inbound.upstream.secret_env` names the same environment variable.
    Advisor(strategy::advisor::AdvisorArgs),
    /// Read the audit journal: verify its hash chain, show a request's whole life, list, export.
    Audit {
        /// The journal directory (audit.dir in sidecar.yaml).
        #[arg(long, default_value = "x402-audit", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        cmd: AuditCmd,
    },
    /// Serve the labelled stand-in strategy upstream (fixed answer, no model).
    Standin {
        #[arg(long, default_value = "127.0.0.1:8500")]
        listen: String,
    },
    /// Start the local devnet (anvil + the project's USDC) and keep it running until Ctrl-C.
    Devnet {
        /// Fund this many fresh buyers with 100 USDC each and print their keys.
        #[arg(long, default_value_t = 1)]
        buyers: usize,
    },
    /// The whole picture on the embedded default: devnet, built-in advisor, sidecars, one paid call.
    Demo,
}

/// Logs on stderr (JSON or pretty), plus the OTLP layer when the config enables export.
fn init_logs(format: LogFormat, export: Option<&x402_sidecar::otlp::Export>) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,pingora_core=warn,pingora_proxy=warn")
    });
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = match format {
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
        LogFormat::Pretty => fmt.boxed(),
    };
    let otel = export.map(|e| e.layer());
    // A second init (tests that call main twice) is not an error worth stopping for.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init();
}

fn main() -> ExitCode {
    init_tls();
    let cli = Cli::parse();
    if let Cmd::Run { config } = &cli.cmd {
        // The config decides whether spans are exported, so it is read before logs start.
        return run(config, cli.log_format);
    }
    init_logs(cli.log_format, None);
    if matches!(
        cli.cmd,
        Cmd::CheckConfig { .. } | Cmd::Audit { .. } | Cmd::Ledger { .. } | Cmd::Sign { .. }
    ) {
        // Report commands end quietly when their reader goes away (`… | head`), like any Unix
        // tool. Servers keep Rust's default (SIGPIPE ignored, write errors handled).
        // SAFETY: called once at start, before any thread is spawned.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.cmd {
        Cmd::Run { config } => run(&config, cli.log_format),
        Cmd::CheckConfig { config } => check_config(&config),
        Cmd::Pay {
            url,
            body,
            key_env,
            max_amount,
            v1,
        } => block_on(pay(url, body, key_env, max_amount, v1)),
        Cmd::Sign {
            challenge,
            body_file,
            key_env,
            v1,
        } => sign(challenge, body_file, &key_env, v1),
        Cmd::Buy { body, via, ledger } => block_on(buy(body, via, ledger)),
        Cmd::Ledger { path, since } => show_ledger(&path, since.as_deref()),
        Cmd::Advisor(args) => block_on(async {
            match strategy::advisor::run(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
        Cmd::Audit { dir, cmd } => audit(&dir, cmd),
        Cmd::Standin { listen } => block_on(serve_standin(listen)),
        Cmd::Devnet { buyers } => block_on(run_devnet(buyers)),
        Cmd::Demo => block_on(demo()),
    }
}

fn block_on(f: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(path: &Path) -> Result<Resolved, ExitCode> {
    let problems = match config::load(path) {
        Ok(c) => match c.resolve() {
            Ok(r) => return Ok(r),
            Err(p) => p,
        },
        Err(p) => p,
    };
    eprintln!("{}: {} problem(s):", path.display(), problems.len());
    for p in &problems {
        eprintln!("  - {p}");
    }
    Err(ExitCode::FAILURE)
}

fn check_config(path: &Path) -> ExitCode {
    let r = match resolve(path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    println!("{}: OK", path.display());
    let ib = &r.raw.inbound;
    println!(
        "  inbound: {}",
        if ib.enabled {
            format!("enabled on {} → {}", ib.listen, ib.upstream.url)
        } else {
            "disabled".into()
        }
    );
    for route in &r.routes {
        if route.offers.is_empty() {
            println!("  {} (free)", route.id());
        }
        for o in &route.offers {
            println!(
                "  {} costs {} ({} atomic units) of {} on {}, paid to {}, settled by {}",
                route.id(),
                x402::money::format_decimal(o.amount, o.decimals),
                o.amount,
                o.asset,
                o.network,
                o.pay_to,
                o.facilitator
            );
        }
    }
    println!("  store: {}", r.raw.store);
    if let Some(ob) = &r.outbound {
        println!(
            "  outbound: enabled on {}, paying from {}, {} seller(s), fallback {:?}, owners {}",
            ob.listen,
            ob.signer.address(),
            ob.sellers.len(),
            ob.fallback.mode,
            ob.owners.describe()
        );
    } else {
        println!("  outbound: disabled");
    }
    println!(
        "  facilitator: {}",
        if r.raw.facilitator.enabled {
            format!(
                "/supported /verify /settle on {} for {}",
                r.raw.facilitator.listen,
                r.facilitators
                    .iter()
                    .map(|f| f.network.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            "disabled".into()
        }
    );
    println!(
        "  admin: {}",
        if r.raw.admin.enabled {
            format!("/metrics /healthz /readyz on {}", r.raw.admin.listen)
        } else {
            "disabled".into()
        }
    );
    println!(
        "  audit: {}",
        if r.raw.audit.enabled {
            format!(
                "{} (kept {} days)",
                r.raw.audit.dir.display(),
                r.raw.audit.retention_days
            )
        } else {
            "disabled".into()
        }
    );
    println!(
        "  otlp: {}",
        if r.raw.otlp.enabled {
            format!(
                "spans to {} as {} (sampling {})",
                x402_sidecar::util::redact_url(&r.raw.otlp.endpoint),
                r.raw.otlp.service_name,
                r.raw.otlp.sample_ratio
            )
        } else {
            "off".into()
        }
    );
    ExitCode::SUCCESS
}

fn run(path: &Path, log_format: LogFormat) -> ExitCode {
    let r = match resolve(path) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let export = if r.raw.otlp.enabled {
        match x402_sidecar::otlp::Export::start(&r.raw.otlp) {
            Ok(e) => Some(e),
            Err(e) => {
                eprintln!("error: otlp: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    init_logs(log_format, export.as_ref());
    if let Some(_e) = &export {
        tracing::info!(endpoint = %x402_sidecar::util::redact_url(&r.raw.otlp.endpoint), service = %r.raw.otlp.service_name, sample_ratio = r.raw.otlp.sample_ratio, "exporting spans over OTLP/HTTP");
    }
    let code = serve(path, &r);
    if let Some(e) = export {
        e.shutdown();
    }
    code
}

/// Build the services the config enables and run them until SIGTERM/SIGINT.
fn serve(path: &Path, r: &Resolved) -> ExitCode {
    if !r.raw.inbound.enabled && r.outbound.is_none() && !r.raw.facilitator.enabled {
        eprintln!(
            "{}: inbound.enabled, outbound.enabled and facilitator.enabled are all false, so there is nothing to serve; enable one",
            path.display()
        );
        return ExitCode::from(2);
    }
    let conf = ServerConf {
        threads: r.raw.server.threads,
        grace_period_seconds: Some(r.raw.server.grace_period_seconds),
        graceful_shutdown_timeout_seconds: Some(5),
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let journal = if r.raw.audit.enabled {
        match x402_sidecar::audit::Journal::open(&r.raw.audit.dir, r.raw.audit.retention_days) {
            Ok(j) => Some(std::sync::Arc::new(j)),
            Err(e) => {
                eprintln!("error: audit journal: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        tracing::warn!("audit.enabled is false: paid requests are not journaled");
        None
    };
    let mut readiness = x402_sidecar::telemetry::Readiness::default();
    if r.raw.inbound.enabled {
        let paywall = match inbound::Paywall::new(r, journal.clone()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let ready = paywall.readiness();
        readiness.chains.extend(ready.chains);
        readiness.facilitators.extend(ready.facilitators);
        readiness.store = ready.store;
        readiness.upstream = ready.upstream;
        let mut svc =
            pingora_proxy::http_proxy_service_with_name(&server.configuration, paywall, "inbound");
        svc.add_tcp(&r.raw.inbound.listen);
        server.add_service(svc);
        tracing::info!(listen = %r.raw.inbound.listen, upstream = %r.raw.inbound.upstream.url, routes = r.routes.len(), "inbound paywall listening");
    }
    if let Some(ob) = r.outbound.clone() {
        let listen = ob.listen.clone();
        let (sellers, wallet) = (ob.sellers.len(), ob.signer.address());
        let payer = match outbound::Payer::new(ob, &r.raw.store, journal.clone()) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: outbound: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut svc = pingora_core::services::listening::Service::new(
            "outbound".to_string(),
            pingora_core::apps::http_app::HttpServer::new_app(payer),
        );
        svc.add_tcp(&listen);
        server.add_service(svc);
        tracing::info!(%listen, sellers, %wallet, "outbound paying proxy listening");
    }
    if r.raw.facilitator.enabled {
        let app = match x402_sidecar::facilitator::FacilitatorApp::new(r) {
            Ok(a) => a.with_journal(journal.clone()),
            Err(e) => {
                eprintln!("error: facilitator: {e}");
                return ExitCode::FAILURE;
            }
        };
        readiness.chains.extend(app.readiness_chains());
        let networks = app.networks().join(", ");
        let mut svc = pingora_core::services::listening::Service::new(
            "facilitator".to_string(),
            pingora_core::apps::http_app::HttpServer::new_app(app),
        );
        svc.add_tcp(&r.raw.facilitator.listen);
        server.add_service(svc);
        tracing::info!(listen = %r.raw.facilitator.listen, %networks, "facilitator listening: GET /supported, POST /verify, POST /settle");
    }
    if r.raw.admin.enabled {
        let admin = x402_sidecar::telemetry::Admin { readiness };
        let mut svc = pingora_core::services::listening::Service::new(
            "admin".to_string(),
            pingora_core::apps::http_app::HttpServer::new_app(admin),
        );
        svc.threads = Some(1);
        svc.add_tcp(&r.raw.admin.listen);
        server.add_service(svc);
        tracing::info!(listen = %r.raw.admin.listen, "admin listener: /metrics /healthz /readyz");
    }
    server.run(pingora_core::server::RunArgs::default());
    // The services have stopped: whatever the audit journal still holds goes to disk first.
    if let Some(j) = journal
        && let Err(e) = j.flush()
    {
        tracing::error!("audit journal: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn buyer_key(var: &str) -> Result<PrivateKeySigner, String> {
    let raw = std::env::var(var).map_err(|_| {
        format!("environment variable {var} is not set (it must hold the buyer's private key)")
    })?;
    raw.trim()
        .parse()
        .map_err(|_| format!("environment variable {var} does not hold a 32-byte hex private key"))
}

async fn pay(
    url: String,
    body: PathBuf,
    key_env: String,
    max_amount: Option<String>,
    v1: bool,
) -> ExitCode {
    let signer = match buyer_key(&key_env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let body = match std::fs::read(&body) {
        Ok(b) => Bytes::from(b),
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", body.display());
            return ExitCode::FAILURE;
        }
    };
    let limit = match max_amount
        .map(|m| x402::money::parse_price(&m, 6))
        .transpose()
    {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: --max-amount: {e}");
            return ExitCode::FAILURE;
        }
    };
    let http = reqwest::Client::new();
    println!("buyer {}", signer.address());
    match client::pay(&http, &url, body, &signer, v1, limit, |s| println!("→ {s}")).await {
        Ok(paid) => {
            println!("← {} {}", paid.status, pretty(&paid.body));
            if (200..300).contains(&paid.status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sign(
    challenge: Option<String>,
    body_file: Option<PathBuf>,
    key_env: &str,
    v1: bool,
) -> ExitCode {
    let fail = |e: String| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    };
    let signer = match buyer_key(key_env) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let body = match &body_file {
        Some(f) => match std::fs::read(f) {
            Ok(b) => b,
            Err(e) => return fail(format!("cannot read {}: {e}", f.display())),
        },
        None => Vec::new(),
    };
    if challenge.is_none() && body_file.is_none() {
        return fail(
            "give --challenge (PAYMENT-REQUIRED header value) or --body-file (402 JSON body)"
                .into(),
        );
    }
    let offer =
        match client::parse_challenge(challenge.as_deref(), &body, v1 || challenge.is_none()) {
            Ok(o) => o,
            Err(e) => return fail(e.to_string()),
        };
    match client::payment_for(&signer, &offer) {
        Ok((name, value, auth)) => {
            eprintln!(
                "signed: {} atomic units to {} on {}, nonce {}, valid until {}",
                auth.value, auth.to, offer.requirement.network, auth.nonce, auth.valid_before
            );
            println!("{name}: {value}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e.to_string()),
    }
}

async fn buy(body: PathBuf, via: String, ledger: Option<PathBuf>) -> ExitCode {
    let bytes = match std::fs::read(&body) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", body.display());
            return ExitCode::FAILURE;
        }
    };
    match buy_once(&reqwest::Client::new(), &via, Bytes::from(bytes)).await {
        Ok((status, report)) => {
            println!("{report}");
            if let Some(path) = ledger {
                show_ledger(
                    &path,
                    Some(&x402_sidecar::util::rfc3339(x402_sidecar::util::now_secs())[..10]),
                );
            }
            if status == 200 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One call through the outbound proxy; a report for people.
async fn buy_once(http: &reqwest::Client, via: &str, body: Bytes) -> Result<(u16, String), String> {
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

fn show_ledger(path: &Path, since: Option<&str>) -> ExitCode {
    let entries = match outbound::ledger::read(path) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
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
    for ((day, seller, asset), (sum, n)) in outbound::ledger::totals(&entries) {
        println!(
            "  {day}  {seller:<12} {} ({sum} atomic units of {asset}) over {n} call(s)",
            x402::money::format_decimal(U256::from(sum), 6)
        );
    }
    ExitCode::SUCCESS
}

/// `audit list`: records since a day, of one payer, of one buyer account owner.
fn list_records(
    dir: &Path,
    since: Option<String>,
    payer: Option<String>,
    owner: Option<String>,
    print: impl Fn(&[x402_sidecar::audit::Record]),
) -> Result<(), x402_sidecar::audit::AuditError> {
    let same = |field: Option<&str>, want: &Option<String>| {
        want.as_deref()
            .is_none_or(|w| field.is_some_and(|x| x.eq_ignore_ascii_case(w)))
    };
    let all = x402_sidecar::audit::read_all(dir)?;
    let records: Vec<_> = all
        .into_iter()
        .filter(|r| since.as_deref().is_none_or(|d| r.time.as_str() >= d))
        .filter(|r| same(r.payer.as_deref(), &payer))
        .filter(|r| same(r.details.get("owner").and_then(|v| v.as_str()), &owner))
        .collect();
    print(&records);
    Ok(())
}

fn audit(dir: &Path, cmd: AuditCmd) -> ExitCode {
    use x402_sidecar::audit as a;
    let print = |records: &[a::Record]| {
        for r in records {
            println!(
                "{}  #{:<6} {:<20} req {}  pay {}  tx {}  payer {}  {}",
                r.time,
                r.seq,
                r.event,
                r.request_id.as_deref().unwrap_or("-"),
                r.payment_id.as_deref().unwrap_or("-"),
                r.tx.as_deref().unwrap_or("-"),
                r.payer.as_deref().unwrap_or("-"),
                serde_json::to_string(&r.details).unwrap_or_default()
            );
        }
    };
    let result = match cmd {
        AuditCmd::Verify => a::verify(dir).map(|v| {
            println!(
                "{}: OK, {} record(s) in {} file(s), hash chain intact",
                dir.display(),
                v.records,
                v.files
            );
        }),
        AuditCmd::Show { id } => a::show(dir, &id).map(|records| {
            if records.is_empty() {
                println!("no record mentions {id}");
            }
            print(&records);
        }),
        AuditCmd::List {
            since,
            payer,
            owner,
            hash_owner,
            key_env,
        } => {
            let owner = match (owner, hash_owner) {
                (Some(o), true) => {
                    let key = std::env::var(&key_env).unwrap_or_default();
                    match outbound::config::Owners::hashed(key.as_bytes()) {
                        Ok(h) => h.render(&o),
                        Err(e) => {
                            eprintln!("error: {key_env}: {e}");
                            return ExitCode::from(2);
                        }
                    }
                }
                (o, _) => o,
            };
            list_records(dir, since, payer, owner, print)
        }
        AuditCmd::Export { format } => a::read_all(dir).map(|all| match format {
            ExportFormat::Csv => print!("{}", a::to_csv(&all)),
            ExportFormat::Jsonl => {
                for r in &all {
                    println!("{}", serde_json::to_string(r).unwrap_or_default());
                }
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}

async fn serve_standin(listen: String) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(&listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(%listen, "stand-in strategy upstream listening (fixed, labelled answers; no model)");
    standin::serve(listener, standin::standin_handler()).await;
    ExitCode::SUCCESS
}

async fn run_devnet(buyers: usize) -> ExitCode {
    let net = match devnet::Devnet::start().await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("devnet RPC      {}", net.rpc_url);
    println!("chain id        {} ({})", devnet::CHAIN_ID, devnet::NETWORK);
    println!("USDC (EIP-3009) {}", devnet::USDC);
    println!("seller payTo    {}", net.pay_to);
    println!(
        "settler key     export X402_SETTLER_KEY={}   # anvil dev key, devnet only",
        net.settler_key_hex()
    );
    for i in 0..buyers {
        match net.new_buyer(U256::from(100 * devnet::ONE_USDC)).await {
            Ok(b) => println!(
                "buyer {i}         {} holds 100 USDC: export X402_BUYER_KEY=0x{}",
                b.address(),
                x402_sidecar::util::hex(&b.to_bytes()[..])
            ),
            Err(e) => eprintln!("error: funding a buyer: {e}"),
        }
    }
    println!("running; Ctrl-C stops the devnet");
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}

/// A child process that is killed when dropped.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A built-in advisor (rules only) on a loopback port, behind a fresh secret.
async fn demo_advisor(
    prefix: &str,
) -> Result<(std::net::SocketAddr, String, tokio::task::JoinHandle<()>), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let secret = x402_sidecar::util::new_id(prefix);
    let advisor =
        strategy::advisor::Advisor::rules_only(secret.clone()).map_err(|e| e.to_string())?;
    let task = tokio::spawn(strategy::advisor::serve(
        listener,
        std::sync::Arc::new(advisor),
    ));
    Ok((addr, secret, task))
}

async fn demo() -> ExitCode {
    match demo_inner().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Start `x402-sidecar run` on a generated configuration; killed when the guard drops.
async fn start_sidecar(
    dir: &Path,
    name: &str,
    config: &str,
    env: &[(&str, String)],
    port: u16,
) -> Result<ChildGuard, String> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let home = dir.join(name);
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.current_dir(&home);
    cmd.args(["--log-format", "pretty", "run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let guard = ChildGuard(cmd.spawn().map_err(|e| e.to_string())?);
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(guard);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "the {name} sidecar did not start within 5 s; see {}",
        dir.join(format!("{name}.log")).display()
    ))
}

async fn demo_inner() -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let fmt = |v: U256| x402::money::format_decimal(v, 6);
    println!(
        "== 1. local chain: anvil, chain id {}, the project's EIP-3009 USDC at {}",
        devnet::CHAIN_ID,
        devnet::USDC
    );
    let net = devnet::Devnet::start().await.map_err(|e| s(&e))?;
    let wallet = net
        .new_buyer(U256::from(5 * devnet::ONE_USDC))
        .await
        .map_err(|e| s(&e))?;
    println!(
        "   RPC {}; roma-01's buyer wallet {} holds 5 USDC; the seller receives at {}",
        net.rpc_url,
        wallet.address(),
        net.pay_to
    );

    println!(
        "== 2. the seller's strategy endpoint: the built-in advisor (rule engine rules-v1, no model), on loopback behind a shared secret"
    );
    let (advisor_addr, advisor_secret, advisor_task) = demo_advisor("demo-secret").await?;
    // The buyer node's local fallback: its own built-in advisor, behind its own secret.
    let (up_addr, fallback_secret, up) = demo_advisor("demo-fallback-secret").await?;

    let dir = std::env::temp_dir().join(format!("x402-sidecar-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| s(&e))?;
    let (seller_port, buyer_port) = (
        free_port().map_err(|e| s(&e))?,
        free_port().map_err(|e| s(&e))?,
    );
    println!("== 3. seller node: a sidecar with the inbound paywall, POST /x402 at $0.01");
    let seller_cfg = format!(
        "inbound:\n  enabled: true\n  listen: 127.0.0.1:{seller_port}\n  upstream: {{ url: \"http://{advisor_addr}\", timeout_ms: 4000, secret_env: X402_DEMO_ADVISOR_SECRET }}\n  routes:\n    - path: /x402\n      description: Trading strategy advice\n      price: \"$0.01\"\n      accepts:\n        - network: {net_id}\n          asset: \"{usdc}\"\n          pay_to: \"{pay_to}\"\n          eip712: {{ name: USDC, version: \"2\" }}\nfacilitators:\n  - network: {net_id}\n    rpc_url: {rpc}\n    settler: {{ key_env: X402_DEMO_SETTLER_KEY }}\nstore: memory\n",
        net_id = devnet::NETWORK,
        usdc = devnet::USDC,
        pay_to = net.pay_to,
        rpc = net.rpc_url,
    );
    let _seller = start_sidecar(
        &dir,
        "seller",
        &seller_cfg,
        &[
            ("X402_DEMO_SETTLER_KEY", net.settler_key_hex()),
            ("X402_DEMO_ADVISOR_SECRET", advisor_secret),
        ],
        seller_port,
    )
    .await?;
    println!("   listening at http://127.0.0.1:{seller_port}/x402");

    println!(
        "== 4. buyer node: roma-01's sidecar with the outbound paying proxy (cap $0.05/call, budget $1/day)"
    );
    let ledger = dir.join("ledger.jsonl");
    let buyer_cfg = format!(
        "outbound:\n  enabled: true\n  listen: 127.0.0.1:{buyer_port}\n  wallet: {{ key_env: X402_DEMO_BUYER_KEY, address: \"{addr}\" }}\n  chains: [ {{ network: {net_id}, rpc_url: \"{rpc}\" }} ]\n  sellers:\n    - name: seller-node\n      url: \"http://127.0.0.1:{seller_port}/x402\"\n      pay_to: [\"{pay_to}\"]\n      networks: [{net_id}]\n      assets: [\"{usdc}\"]\n      max_price: \"$0.05\"\n  budgets: [ {{ network: {net_id}, asset: \"{usdc}\", daily: \"$1\" }} ]\n  fallback: {{ mode: local, url: \"http://{up_addr}/x402\", secret_env: X402_DEMO_FALLBACK_SECRET }}\n  ledger_path: \"{ledger}\"\nstore: memory\n",
        addr = wallet.address(),
        net_id = devnet::NETWORK,
        usdc = devnet::USDC,
        pay_to = net.pay_to,
        rpc = net.rpc_url,
        ledger = ledger.display(),
    );
    let key_hex = format!("0x{}", x402_sidecar::util::hex(&wallet.to_bytes()[..]));
    let _buyer = start_sidecar(
        &dir,
        "buyer",
        &buyer_cfg,
        &[
            ("X402_DEMO_BUYER_KEY", key_hex),
            ("X402_DEMO_FALLBACK_SECRET", fallback_secret),
        ],
        buyer_port,
    )
    .await?;
    println!("   roma-01 points its HTTP client at http://127.0.0.1:{buyer_port}/x402");

    println!(
        "== 5. roma-01 asks for advice on the seed example StrategyRequest (402 → sign → settle happen inside)"
    );
    let before = (
        net.balance(wallet.address()).await.map_err(|e| s(&e))?,
        net.balance(net.pay_to).await.map_err(|e| s(&e))?,
    );
    let via = format!("http://127.0.0.1:{buyer_port}");
    let (status, report) = buy_once(
        &reqwest::Client::new(),
        &via,
        Bytes::from_static(strategy::SEED_EXAMPLE.as_bytes()),
    )
    .await?;
    println!(
        "{}",
        report
            .lines()
            .map(|l| format!("   {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let after = (
        net.balance(wallet.address()).await.map_err(|e| s(&e))?,
        net.balance(net.pay_to).await.map_err(|e| s(&e))?,
    );
    println!("== 6. balances on chain (USDC)");
    println!("   buyer  {} → {}", fmt(before.0), fmt(after.0));
    println!("   seller {} → {}", fmt(before.1), fmt(after.1));
    println!("== 7. the buyer's ledger");
    show_ledger(&ledger, None);
    println!(
        "== 8. the seller's audit journal (x402-sidecar audit show <paymentId>; hash chain verified)"
    );
    let seller_audit = dir.join("seller").join("x402-audit");
    let payment_id = outbound::ledger::read(&ledger)
        .ok()
        .and_then(|l| l.last().and_then(|e| e.remote_payment_id.clone()))
        .unwrap_or_default();
    audit(&seller_audit, AuditCmd::Show { id: payment_id });
    audit(&seller_audit, AuditCmd::Verify);
    up.abort();
    advisor_task.abort();
    let _ = std::fs::remove_dir_all(&dir);
    let price = U256::from(10_000u64);
    if status != 200 || after.1 != before.1 + price {
        return Err(format!(
            "expected 200 and +0.01 USDC for the seller, got {status}"
        ));
    }
    println!(
        "== done: one paid strategy call, buyer node → seller node, settled on chain; everything stopped."
    );
    Ok(())
}
