//! Durable appends to the audit journal, in a temporary directory on the machine's disk.
//! Run with `cargo bench --bench audit`; results land in target/criterion. Throughput is in
//! records/s ("elem/s").
//!
//! - `group commit`: the journal as the sidecar uses it. Appenders are tokio tasks on a
//!   two-thread runtime (like the pingora workers), each awaiting `Journal::append`, so
//!   records queued while an fsync runs share the next one.
//! - `group commit, 1 appender, blocking`: `Journal::append_blocking` from a plain thread, to
//!   tell the writer's cost apart from the cost of waking a runtime worker.
//! - `per-record fsync (before)`: what `Journal::append` did before the writer thread: under
//!   one mutex, open the day file, write one line, `sync_data()`. Appenders are OS threads,
//!   which is more concurrency than two runtime workers could give it.
//! - `paid call`: the inbound pattern per paid call, two records that only queue
//!   (`payment_verified`, `forwarded`) and two that are waited for (`settled`, `answered`);
//!   counted in records.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use x402_sidecar::audit::{Event, GENESIS, Journal, Kind, Record};
use x402_sidecar::util::{now_secs, rfc3339, sha256_hex};

fn event(i: u64) -> Event {
    Event::new(Kind::Settled)
        .request("req_0123456789abcdef0123456789abcdef")
        .payment("pay_0123456789abcdef0123456789abcdef")
        .payer("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")
        .tx("0x5c504ed432cb51138bcf09aa5e8a410dd4a1e204ef84bfed1be16dfba1b22060")
        .with("amount", "10000")
        .with("asset", "0x036CbD53842c5426634e7929541eC2318f3dCF7e")
        .with("network", "eip155:84532")
        .with("i", i)
}

/// The journal's write path before group commit, kept here as the baseline.
struct PerRecordFsync {
    dir: std::path::PathBuf,
    tail: Mutex<(u64, String)>,
}

impl PerRecordFsync {
    fn new(dir: &Path) -> Self {
        PerRecordFsync {
            dir: dir.into(),
            tail: Mutex::new((0, GENESIS.into())),
        }
    }

    fn append(&self, e: Event, now: u64) {
        let mut tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        let mut r = Record {
            seq: tail.0 + 1,
            time: rfc3339(now),
            event: e.kind.name().to_string(),
            request_id: e.request_id,
            payment_id: e.payment_id,
            tx: e.tx,
            payer: e.payer,
            details: e.details,
            prev_hash: tail.1.clone(),
            hash: String::new(),
        };
        let body = serde_json::to_string(&r).expect("json");
        r.hash = sha256_hex(format!("{}{}", r.prev_hash, body).as_bytes());
        let line = serde_json::to_string(&r).expect("json");
        let path = self
            .dir
            .join(format!("audit-{}.jsonl", &rfc3339(now)[..10]));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .expect("open");
        f.write_all(format!("{line}\n").as_bytes()).expect("write");
        f.sync_data().expect("fsync");
        *tail = (r.seq, r.hash);
    }
}

/// `appender`'s share of `iters`: the shares add up to `iters` exactly.
fn share(iters: u64, appenders: u64, appender: u64) -> u64 {
    iters / appenders + u64::from(appender < iters % appenders)
}

/// Split `iters` over `appenders` tasks; `per_task(n)` does `n` of them.
fn run_tasks<F, Fut>(
    rt: &tokio::runtime::Runtime,
    iters: u64,
    appenders: u64,
    per_task: F,
) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|a| tokio::spawn(per_task(share(iters, appenders, a))))
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        started.elapsed()
    })
}

fn benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let now = now_secs();
    let mut g = c.benchmark_group("audit durable append");
    g.throughput(Throughput::Elements(1));

    for appenders in [1u64, 16] {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let j = Arc::new(Journal::open(dir.path(), 90).expect("journal"));
        let before = (j.syncs(), Instant::now());
        let mut records = 0;
        g.bench_function(format!("group commit, {appenders} appender(s)"), |b| {
            b.iter_custom(|iters| {
                records += iters;
                run_tasks(&rt, iters, appenders, |n| {
                    let j = j.clone();
                    async move {
                        for i in 0..n {
                            j.append(event(i), now).await.expect("append");
                        }
                    }
                })
            })
        });
        eprintln!(
            "  group commit, {appenders} appender(s): {records} records, {} fsyncs ({:.1} records per fsync) in {:.1} s",
            j.syncs() - before.0,
            records as f64 / (j.syncs() - before.0).max(1) as f64,
            before.1.elapsed().as_secs_f64()
        );
    }

    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
    let j = Journal::open(dir.path(), 90).expect("journal");
    g.bench_function("group commit, 1 appender, blocking", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            j.append_blocking(event(i), now).expect("append")
        })
    });
    drop(j);

    for appenders in [1u64, 16] {
        let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
        let old = Arc::new(PerRecordFsync::new(dir.path()));
        g.bench_function(
            format!("per-record fsync (before), {appenders} appender(s)"),
            |b| {
                b.iter_custom(|iters| {
                    let started = Instant::now();
                    std::thread::scope(|s| {
                        for a in 0..appenders {
                            let old = &old;
                            s.spawn(move || {
                                for i in 0..share(iters, appenders, a) {
                                    old.append(event(i), now);
                                }
                            });
                        }
                    });
                    started.elapsed()
                })
            },
        );
    }

    // Four records per paid call; the throughput is still counted in records.
    let dir = tempfile::tempdir_in(std::env::temp_dir()).expect("tempdir");
    let j = Arc::new(Journal::open(dir.path(), 90).expect("journal"));
    g.bench_function(
        "group commit, paid-call pattern, 16 concurrent calls",
        |b| {
            b.iter_custom(|iters| {
                run_tasks(&rt, iters.div_ceil(4), 16, |calls| {
                    let j = j.clone();
                    async move {
                        for i in 0..calls {
                            j.append_unsynced(event(i), now).expect("queue");
                            j.append_unsynced(event(i), now).expect("queue");
                            j.append(event(i), now).await.expect("append");
                            j.append(event(i), now).await.expect("append");
                        }
                    }
                })
            })
        },
    );
    g.finish();
}

criterion_group!(audit, benches);
criterion_main!(audit);
