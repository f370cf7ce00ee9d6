//! The command line: argument definitions, one file per command, and the one place that prints
//! a failure and picks the exit code (0 done, 1 failed, 2 nothing to do / bad usage).
//!
//! `main.rs` is `cli::main()`; every command returns an [`Outcome`].

mod audit;
mod buy;
mod check_config;
mod demo;
mod devnet;
mod pay;
mod preflight;
mod reload;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Resolved};

/// Why a command failed: the sentence to print (once, by [`main`]) and the exit code.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The command failed (exit 1).
    pub fn new(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// Nothing to do, or the command was used wrongly (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }

    /// The command already explained what went wrong on stderr (exit 1, nothing more printed).
    pub fn reported() -> Self {
        Failure::new(String::new())
    }
}

/// What every command returns.
pub type Outcome = Result<(), Failure>;

/// Map any error to a failure, prefixed with what was being done.
pub(crate) fn failed<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> Failure + '_ {
    move |e| {
        if what.is_empty() {
            Failure::new(e.to_string())
        } else {
            Failure::new(format!("{what}: {e}"))
        }
    }
}

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
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Json, global = true, env = "X402_LOG_FORMAT")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
}

#[derive(Subcommand)]
pub enum Cmd {
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
        /// Also ask each chain's RPC: the chain id, each settler key's gas against its floor
        /// (`gas_floor_settlements`), and each paid route's token (a contract at `asset`, its
        /// decimals and EIP-712 domain as configured, `pay_to` not the token itself).
        #[arg(long)]
        online: bool,
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
        /// Refuse to pay more than this ("$0.05" or atomic units; default $0.10).
        #[arg(long)]
        max_amount: Option<String>,
        /// Pay with x402 v1 (X-PAYMENT) even if the seller speaks v2.
        #[arg(long)]
        v1: bool,
        /// An RPC of the payment's chain: report what the chain says of the authorization.
        #[arg(long)]
        rpc: Option<String>,
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
        /// Refuse to sign for more than this ("$0.05" or atomic units; default $0.10).
        #[arg(long)]
        max_amount: Option<String>,
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
    /// List the buyer's ledger (each authorization's state) and sum the spend per day and
    /// seller; `ledger verify` reconciles every entry with the chain.
    Ledger {
        #[arg(long, default_value = "x402-ledger.jsonl", global = true)]
        path: PathBuf,
        /// Only entries on or after this day (YYYY-MM-DD).
        #[arg(long)]
        since: Option<String>,
        #[command(subcommand)]
        cmd: Option<buy::LedgerCmd>,
    },
    /// Serve the built-in strategy advisor: the sidecar's upstream (rule engine, optional model).
    ///
    /// Answers only calls carrying the shared secret (X-Sidecar-Secret) that the sidecar sends
    /// when `inbound.upstream.secret_env` names the same environment variable.
    Advisor(crate::advisor::server::AdvisorArgs),
    /// Read the audit journal: verify its hash chain, show a request's whole life, list, export.
    Audit {
        /// The journal directory (audit.dir in sidecar.yaml).
        #[arg(long, default_value = "x402-audit", global = true)]
        dir: PathBuf,
        #[command(subcommand)]
        cmd: audit::AuditCmd,
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

/// The program: parse the arguments, run the command, print a failure once.
pub fn main() -> ExitCode {
    crate::init_tls();
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn dispatch(cli: Cli) -> Outcome {
    if let Cmd::Run { config } = &cli.cmd {
        // The config decides whether spans are exported, so it is read before logs start.
        return run::run(config, cli.log_format);
    }
    let _logs = crate::telemetry::logs::init(cli.log_format == LogFormat::Json, None, false);
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
        Cmd::Run { config } => run::run(&config, cli.log_format),
        Cmd::CheckConfig { config, online } => check_config::check_config(&config, online),
        Cmd::Pay {
            url,
            body,
            key_env,
            max_amount,
            v1,
            rpc,
        } => block_on(pay::pay(url, body, key_env, max_amount, v1, rpc)),
        Cmd::Sign {
            challenge,
            body_file,
            key_env,
            v1,
            max_amount,
        } => pay::sign(challenge, body_file, &key_env, v1, max_amount),
        Cmd::Buy { body, via, ledger } => block_on(buy::buy(body, via, ledger)),
        Cmd::Ledger {
            path,
            cmd: Some(buy::LedgerCmd::Verify { rpc, from_block }),
            ..
        } => block_on(buy::verify_ledger(path, rpc, from_block)),
        Cmd::Ledger { path, since, .. } => {
            let since = since_day("--since", since)?;
            buy::show_ledger(&path, since.as_deref())
        }
        Cmd::Advisor(args) => {
            block_on(async { crate::advisor::server::run(args).await.map_err(failed("")) })
        }
        Cmd::Audit { dir, cmd } => audit::audit(&dir, cmd),
        Cmd::Standin { listen } => block_on(devnet::serve_standin(listen)),
        Cmd::Devnet { buyers } => block_on(devnet::run_devnet(buyers)),
        Cmd::Demo => block_on(demo::demo()),
    }
}

fn block_on(f: impl std::future::Future<Output = Outcome>) -> Outcome {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(failed("cannot start the async runtime"))?
        .block_on(f)
}

/// Load and resolve a configuration file; every problem is listed before failing.
fn resolve(path: &std::path::Path) -> Result<Resolved, Failure> {
    let problems = match config::load(path) {
        Ok(c) => match c.resolve() {
            Ok(r) => return Ok(r),
            Err(p) => p,
        },
        Err(p) => p,
    };
    let mut text = format!("{}: {} problem(s):", path.display(), problems.len());
    for p in &problems {
        text += &format!("\n  - {p}");
    }
    Err(Failure::new(text))
}

/// A `--since` day: `YYYY-MM-DD`, a real date (the records' times start with it). Anything
/// else is a usage error (exit 2) with a sentence, not an empty list.
fn since_day(flag: &str, value: Option<String>) -> Result<Option<String>, Failure> {
    let Some(v) = value else { return Ok(None) };
    let bad = || {
        Failure::usage(format!(
            "{flag}: not a date; give a day as YYYY-MM-DD (UTC), e.g. 2026-01-31"
        ))
    };
    let b = v.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let s = &v[r];
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return Err(bad());
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if d == 0 || d > days {
        return Err(bad());
    }
    Ok(Some(v))
}

/// A JSON body shown to a person: pretty if it is JSON, as text otherwise.
fn pretty(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned())
}
