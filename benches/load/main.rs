//! HTTP load harness (issue 6): the devnet, the stand-in upstream and real sidecar processes
//! (the release binary), measured on loopback by a load generator written here (reqwest +
//! tokio): closed loops at a fixed number of clients with warm-up, an open loop at a fixed
//! arrival rate, every latency kept and sorted. Paid calls are whole client calls or pre-signed
//! payments; the chain is checked afterwards (one transfer per paid 200). The one-client paid
//! scenarios (devnet floor, the settler code in-process, seller, buyer's outbound proxy, seller
//! without audit journal) run in interleaved rounds, because anvil slows down as blocks pile up.
//!
//! Run it with `make bench-load` (or `benches/load.sh`, or `cargo bench --bench load`). It prints
//! one table and rewrites the generated part of `benches/RESULTS.md`; text outside the
//! generated block (the analysis) is kept. Without `--bench` (e.g. `cargo test --all-targets`,
//! which builds and runs bench targets in test mode) it does nothing.
//!
//! The parts: [`stack`] (the devnet and the processes, started with the dev kit), [`measure`]
//! (the load generator), [`flows`] (what the paid scenarios drive), [`watch`] (memory and CPU
//! from /proc), [`phases`] (the seller's phase histogram), [`scenarios`] (one function per
//! scenario, in the order they run) and [`report`] (the table, the budget verdict, RESULTS.md).
//!
//! Knobs (environment): `X402_LOAD_SECS` (measured seconds per timed run, 8),
//! `X402_LOAD_WARMUP` (2), `X402_LOAD_CONCURRENCY` (50), `X402_LOAD_PAID` (pre-signed paid
//! calls, 1000), `X402_LOAD_PAID_CONCURRENCY` (16), `X402_LOAD_SEQ` (one-client paid calls per
//! scenario, 200), `X402_LOAD_BUYERS` (funded buyers signing the pre-signed payments, 8),
//! `X402_LOAD_RATE` (open-loop rate of the forward path, 1000/s), `X402_LOAD_ONLY=batch` (only
//! the batching comparison, its own block of RESULTS.md), `X402_LOAD_ONLY=402` (only the 402
//! rows and their verdicts, printed), `X402_LOAD_NO_WRITE` (print
//! only, leave RESULTS.md alone), `X402_LOAD_KEEP` (keep the temp dir with configs, logs and
//! journals).

mod flows;
mod measure;
mod phases;
mod raw;
mod report;
mod scenarios;
mod stack;
mod watch;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use report::Findings;
use scenarios::Ctx;
use stack::Stack;

const SIDECAR: &str = env!("CARGO_BIN_EXE_x402-sidecar");
/// $0.01 per paid call.
const PRICE: u64 = 10_000;

type Res<T> = Result<T, String>;

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; anything else (e.g. a test run of all targets) is a no-op.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("load: skipped (run it with `make bench-load` or `cargo bench --bench load`)");
        return ExitCode::SUCCESS;
    }
    x402_sidecar::init_tls();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("load: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Ctrl-C or SIGTERM drops the whole run, and with it every child process (kill on drop).
    let out = rt.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => return Err(format!("cannot watch SIGTERM: {e}")),
            };
        tokio::select! {
            r = run() => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".to_string()),
            _ = term.recv() => Err("terminated".to_string()),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(2));
    match out {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nload: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn say(msg: impl AsRef<str>) {
    eprintln!("[load] {}", msg.as_ref());
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The run's knobs.
#[derive(Clone, Copy)]
struct Knobs {
    secs: u64,
    warmup: u64,
    conc: usize,
    paid: usize,
    paid_conc: usize,
    seq: usize,
    buyers: usize,
    rate: u64,
}

impl Knobs {
    fn from_env() -> Knobs {
        Knobs {
            secs: env_num("X402_LOAD_SECS", 8).max(1),
            warmup: env_num("X402_LOAD_WARMUP", 2),
            conc: env_num("X402_LOAD_CONCURRENCY", 50).max(1) as usize,
            paid: env_num("X402_LOAD_PAID", 1000).max(1) as usize,
            paid_conc: env_num("X402_LOAD_PAID_CONCURRENCY", 16).max(1) as usize,
            seq: env_num("X402_LOAD_SEQ", 200).max(1) as usize,
            buyers: env_num("X402_LOAD_BUYERS", 8).max(1) as usize,
            rate: env_num("X402_LOAD_RATE", 1000).max(1),
        }
    }
}

/// The whole run: set up, each scenario in turn, the chain check, the report; then everything
/// stops and the chain's verdict decides the exit.
async fn run() -> Res<()> {
    let k = Knobs::from_env();
    if !Path::new(SIDECAR).is_file() {
        return Err(format!("the sidecar binary is missing ({SIDECAR})"));
    }
    let load_at_start = report::loadavg();
    let dir = tempfile::Builder::new()
        .prefix("x402-load-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?;
    let mut stack = Stack::start(&k, dir.path()).await?;
    let mut c = Ctx::new(k, &stack)?;
    scenarios::sanity(&c, &stack).await?;
    // `X402_LOAD_ONLY=batch`: only the batching comparison (and the chain check).
    if std::env::var("X402_LOAD_ONLY").is_ok_and(|v| v == "batch") {
        let start = scenarios::batching(&mut c, &mut stack, dir.path()).await?;
        let chain = scenarios::chain(&c, &stack).await?;
        let block = report::batching(&load_at_start, &c.rows[start..]);
        println!("\n{block}");
        if std::env::var_os("X402_LOAD_NO_WRITE").is_none() {
            report::write_batching(&block)?;
            say("wrote the batching block of benches/RESULTS.md");
        }
        drop(stack);
        return match &chain.mismatch {
            None => Ok(()),
            Some(e) => Err(format!(
                "the chain has {} transfers to payTo for {} paid 200s ({e})",
                chain.transfers, chain.paid_200
            )),
        };
    }

    // `X402_LOAD_ONLY=402`: only the 402 rows (ours, with rate limits on, the official
    // sellers) and their verdicts, printed.
    if std::env::var("X402_LOAD_ONLY").is_ok_and(|v| v == "402") {
        scenarios::unpaid(&mut c, &mut stack, dir.path()).await?;
        scenarios::official_402(&mut c, &mut stack, dir.path()).await?;
        println!(
            "\n{}\n\n{}\n| budget | measured | verdict |\n| --- | --- | --- |\n{}",
            report::machine(&load_at_start),
            report::table(&c.rows),
            report::the_402_path(&c.rows)
        );
        return Ok(());
    }
    let forward = scenarios::forward(&mut c, &mut stack).await?;
    let at_200 = scenarios::unpaid(&mut c, &mut stack, dir.path()).await?;
    scenarios::official_402(&mut c, &mut stack, dir.path()).await?;
    let rounds = scenarios::paid_rounds(&mut c, &mut stack, dir.path()).await?;
    let presigned = scenarios::presigned(&mut c, &mut stack).await?;
    scenarios::whole_at_8(&mut c, &mut stack).await?;
    let batched = scenarios::batching(&mut c, &mut stack, dir.path()).await?;
    let floor_end_mean = scenarios::floor_again(&mut c, &stack).await?;
    let chain = scenarios::chain(&c, &stack).await?;

    let findings = Findings {
        forward,
        at_200,
        rounds,
        presigned,
        floor_end_mean,
        chain,
    };
    let generated = report::generated(&k, stack.buyers.len(), &load_at_start, &c.rows, &findings);
    println!("\n{}", report::printed(&generated));
    let batch_block = report::batching(&load_at_start, &c.rows[batched..batched + 4]);
    if std::env::var_os("X402_LOAD_NO_WRITE").is_none() {
        report::write_results(&generated)?;
        report::write_batching(&batch_block)?;
        say("wrote benches/RESULTS.md");
    }
    drop(stack);
    if std::env::var_os("X402_LOAD_KEEP").is_some() {
        say(format!(
            "kept the configs, logs, audit journals and ledger in {}",
            dir.keep().display()
        ));
    }
    let chain = &findings.chain;
    match &chain.mismatch {
        None => Ok(()),
        Some(e) => Err(format!(
            "the chain has {} transfers to payTo for {} paid 200s ({e})",
            chain.transfers, chain.paid_200
        )),
    }
}
