//! The audit journal on a full disk, with real processes: the seller fails closed before money
//! moves (503 `journal_unavailable`, nobody charged), delivers a paid answer whose records
//! could not be written (they wait in the spill, counted on `/metrics`, reported by
//! `audit verify`), and writes the spill to the journal in order once the disk has room.
//!
//! The full disk is a small tmpfs of its own under the audit directory, filled with a file. A
//! full disk still takes a few bytes into the last page of an open file, so the records after
//! the settlement are made larger than a page (a long `modelCallId`): they can never fit.
//! Where mounting is not allowed, a file-size limit on the seller process stands in (the
//! sidecar ignores SIGXFSZ, so its writes fail with EFBIG); the spill file is then limited too
//! and the spill stays in memory, so `audit verify` cannot see it from outside.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use x402_sidecar::audit::{Record, read_all};

/// The disk under the seller's audit directory.
struct Disk {
    dir: PathBuf,
    tmpfs: bool,
}

impl Disk {
    /// `root/audit`, a 1 MiB tmpfs of its own if this process may mount one.
    fn new(root: &Path) -> Disk {
        let dir = root.join("audit");
        std::fs::create_dir_all(&dir).unwrap();
        let forced = std::env::var("X402_TEST_FULL_DISK").as_deref() == Ok("fsize");
        let tmpfs = !forced
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
                .arg(&dir)
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !tmpfs {
            eprintln!(
                "cannot mount a tmpfs here: a file-size limit on the seller stands in for the full disk"
            );
        }
        Disk { dir, tmpfs }
    }

    fn dir(&self) -> String {
        self.dir.to_string_lossy().into_owned()
    }

    /// No more room for the seller's journal.
    fn fill(&self, seller: &Sidecar) {
        if self.tmpfs {
            use std::io::Write;
            let mut f = std::fs::File::create(self.dir.join("filler")).unwrap();
            let chunk = vec![0u8; 4096];
            let e = loop {
                if let Err(e) = f.write_all(&chunk) {
                    break e;
                }
            };
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        } else {
            let size = x402_sidecar::audit::day_files(&self.dir)
                .unwrap()
                .iter()
                .map(|(_, p)| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
                .max()
                .unwrap_or(0);
            fsize(seller.pid(), size);
        }
    }

    /// Room again.
    fn free(&self, seller: &Sidecar) {
        if self.tmpfs {
            std::fs::remove_file(self.dir.join("filler")).unwrap();
        } else {
            fsize(seller.pid(), libc::RLIM_INFINITY);
        }
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        if self.tmpfs {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Set the soft file-size limit of process `pid`.
fn fsize(pid: u32, limit: u64) {
    let new = libc::rlimit {
        rlim_cur: limit,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: prlimit(2) on another process with a valid rlimit and no old-value pointer.
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &new,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}

/// A seller whose journal is on `disk` with its spill in `spill`, and an admin port.
async fn world(disk: &Disk, spill: &Path, admin: u16) -> World {
    let (dir, spill) = (disk.dir(), spill.to_string_lossy().into_owned());
    World::start_with(move |n| {
        n.audit_dir = Some(dir);
        n.audit_spill_dir = Some(spill);
        n.admin = Some(admin);
    })
    .await
}

/// `audit verify` on the journal and its spill: whether it passed, and what it printed.
fn verify(disk: &Disk, spill: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["audit", "--dir"])
        .arg(&disk.dir)
        .args(["verify", "--grace-secs", "0", "--spill-dir"])
        .arg(spill)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Wait (up to 20 s) until the seller's spill is empty (`/metrics`, when `admin` is given) and
/// `audit verify` passes: the spill is in the journal.
async fn until_verified(w: &World, admin: Option<u16>, disk: &Disk, spill: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = match admin {
            Some(port) => metric(w, port, "x402_audit_spill_pending").await,
            None => 0,
        };
        let (ok, text) = verify(disk, spill);
        if ok && pending == 0 {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "the spill never reached the journal ({pending} waiting):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The value of the metric line starting with `name` (0 if absent).
async fn metric(w: &World, admin: u16, name: &str) -> u64 {
    let text = get_text(&w.http, &format!("http://127.0.0.1:{admin}/metrics")).await;
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn records(disk: &Disk, event: &str) -> Vec<Record> {
    read_all(&disk.dir)
        .unwrap()
        .into_iter()
        .filter(|r| r.event == event)
        .collect()
}

/// The money invariant: Σ transfers to payTo = paid answers delivered = `settled` records (and
/// as many `answered`).
async fn assert_money_invariant(w: &World, disk: &Disk, delivered: usize) {
    w.money().assert_transfers(delivered).await;
    assert_eq!(records(disk, "settled").len(), delivered, "settled records");
    assert_eq!(
        records(disk, "answered").len(),
        delivered,
        "answered records"
    );
}

fn reason(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<none>")
}

async fn rpc(w: &World, method: &'static str, params: Value) -> Value {
    alloy_provider::Provider::raw_request(w.net.provider(), method.into(), params)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_before_settlement_refuses_with_503_and_nobody_is_charged() {
    let root = tempfile::tempdir().unwrap();
    let spill = root.path().join("spill");
    let disk = Disk::new(root.path());
    let admin = free_port();
    let w = world(&disk, &spill, admin).await;
    let buyer = w.buyer(1_000_000).await;
    let (name, header) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    disk.fill(&w.seller);

    let (status, headers, body) =
        post_json(&w.http, &w.paid_url(), seed_body(), &[(name, &header)]).await;
    assert_eq!(
        (status, reason(&body)),
        (503, "journal_unavailable"),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("not charged"),
        "{body}"
    );
    assert!(headers.get("retry-after").is_some());
    assert!(body.get("strategy").is_none());
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    assert_eq!(
        metric(
            &w,
            admin,
            "x402_audit_refusals_total{stage=\"before_settlement\"}"
        )
        .await,
        1
    );
    // Verified, forwarded, not charged: waiting in the spill, in order.
    assert_eq!(metric(&w, admin, "x402_audit_spill_pending").await, 3);
    if disk.tmpfs {
        let (ok, text) = verify(&disk, &spill);
        assert!(!ok, "{text}");
        let spilled: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("spilled, not yet in the journal"))
            .collect();
        assert_eq!(spilled.len(), 3, "{text}");
        assert!(spilled[0].contains("payment_verified"), "{text}");
        assert!(spilled[2].contains("not_charged"), "{text}");
    }

    // Room again: the spill reaches the journal by itself, and the same payment goes through.
    disk.free(&w.seller);
    until_verified(&w, Some(admin), &disk, &spill).await;
    let refused = records(&disk, "not_charged");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].details["reason"], "journal_unavailable");
    assert!(refused[0].details.contains_key("spillId"));
    let (status, _, body) =
        post_json(&w.http, &w.paid_url(), seed_body(), &[(name, &header)]).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    assert_money_invariant(&w, &disk, 1).await;
    let (ok, text) = verify(&disk, &spill);
    assert!(ok && text.contains("hash chain intact"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_that_fills_after_the_records_before_settlement_still_delivers_and_the_spill_is_written_once_there_is_room()
 {
    let root = tempfile::tempdir().unwrap();
    let spill = root.path().join("spill");
    let disk = Disk::new(root.path());
    let admin = free_port();
    let w = world(&disk, &spill, admin).await;
    // The records after the settlement carry the model call id: larger than a page.
    w.upstream.set(Mode::LongCallId(6_000));
    let buyer = w.buyer(1_000_000).await;
    let (name, header) = signed_payment(&w.http, &w.paid_url(), &buyer).await;

    // Blocks wait for the test: the disk fills between `forwarded` and the settlement's receipt.
    rpc(&w, "evm_setAutomine", serde_json::json!([false])).await;
    let (http, url, h) = (w.http.clone(), w.paid_url(), header.clone());
    let call =
        tokio::spawn(async move { post_json(&http, &url, seed_body(), &[(name, &h)]).await });
    let deadline = Instant::now() + Duration::from_secs(20);
    while records(&disk, "forwarded").is_empty() {
        assert!(Instant::now() < deadline, "no forwarded record");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    disk.fill(&w.seller);
    loop {
        let pool = rpc(&w, "txpool_status", serde_json::json!([])).await;
        if pool["pending"].as_str().is_some_and(|p| p != "0x0")
            || pool["pending"].as_u64().is_some_and(|p| p > 0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no settlement broadcast");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rpc(&w, "evm_mine", serde_json::json!([])).await;
    rpc(&w, "evm_setAutomine", serde_json::json!([true])).await;

    // The buyer paid: the answer is delivered although its records could not be written.
    let (status, _, body) = call.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body["strategy"].is_object());
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    // `answered` (larger than a page) could not be written; `settled`, queued just before it,
    // may have fit into the last page's slack or waits with it.
    assert!(records(&disk, "answered").is_empty());
    let spilled = metric(&w, admin, "x402_audit_spill_pending").await;
    assert!(
        spilled == 2 || (spilled == 1 && records(&disk, "settled").len() == 1),
        "{spilled} record(s) spilled"
    );
    assert_eq!(
        metric(
            &w,
            admin,
            "x402_audit_spill_records_total{outcome=\"spilled\"}"
        )
        .await,
        spilled
    );
    if disk.tmpfs {
        let (ok, text) = verify(&disk, &spill);
        assert!(!ok, "{text}");
        assert!(!text.contains("no record missing"), "{text}");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("spilled, not yet in the journal"))
            .collect();
        assert_eq!(lines.len() as u64, spilled, "{text}");
        assert!(lines.last().unwrap().contains(": answered at"), "{text}");
    }

    // Room again: the spill is written in order with its original times, then cleared.
    disk.free(&w.seller);
    let text = until_verified(&w, Some(admin), &disk, &spill).await;
    assert!(
        text.contains("hash chain intact, no record missing"),
        "{text}"
    );
    let settled = records(&disk, "settled");
    let answered = records(&disk, "answered");
    assert_eq!((settled.len(), answered.len()), (1, 1));
    assert!(settled[0].seq + 1 == answered[0].seq);
    assert_eq!(
        settled[0].tx.as_deref(),
        body["payment"]["transaction"].as_str()
    );
    assert!(answered[0].details.contains_key("journaledAt"));
    assert_eq!(metric(&w, admin, "x402_audit_spill_pending").await, 0);
    assert_eq!(
        metric(
            &w,
            admin,
            "x402_audit_spill_records_total{outcome=\"journaled\"}"
        )
        .await,
        spilled
    );
    assert_money_invariant(&w, &disk, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spill_on_another_disk_survives_a_kill_and_the_restarted_seller_writes_it() {
    let root = tempfile::tempdir().unwrap();
    let spill = root.path().join("spill");
    let disk = Disk::new(root.path());
    if !disk.tmpfs {
        eprintln!("skipped: the spill file needs a disk of its own (tmpfs)");
        return;
    }
    let admin = free_port();
    let mut w = world(&disk, &spill, admin).await;
    let buyer = w.buyer(1_000_000).await;
    let (name, header) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
    disk.fill(&w.seller);
    let (status, _, body) =
        post_json(&w.http, &w.paid_url(), seed_body(), &[(name, &header)]).await;
    assert_eq!(
        (status, reason(&body)),
        (503, "journal_unavailable"),
        "{body}"
    );
    w.money()
        .assert_not_charged(buyer.address(), 1_000_000)
        .await;
    // Killed (-9) with the disk still full: the spill is on a disk of its own.
    let yaml = std::fs::read_to_string(w.seller.config.clone().unwrap()).unwrap();
    // SAFETY: kill(2) on the seller this test started.
    assert_eq!(
        unsafe { libc::kill(w.seller.pid() as libc::pid_t, libc::SIGKILL) },
        0
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while w.seller.check_alive().is_ok() {
        assert!(Instant::now() < deadline, "the seller outlived kill -9");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (ok, text) = verify(&disk, &spill);
    assert!(!ok && text.contains("not_charged"), "{text}");
    // Restarted with room on the disk: it writes the spill first.
    disk.free(&w.seller);
    let mut again = run(
        launch(w.dir.path(), "seller-again").env(SETTLER_ENV, w.net.settler_key_hex()),
        &yaml,
        w.seller.port,
    )
    .await;
    until_verified(&w, None, &disk, &spill).await;
    assert_eq!(records(&disk, "not_charged").len(), 1);
    let (status, _, body) =
        post_json(&w.http, &w.paid_url(), seed_body(), &[(name, &header)]).await;
    assert_eq!(status, 200, "{body}");
    w.money().assert_paid_once(buyer.address(), 1_000_000).await;
    assert_money_invariant(&w, &disk, 1).await;
    terminate(&mut again).await;
}

/// `x402-sidecar audit --dir <dir> <args>`: its exit code and what it printed.
fn audit_at(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(bin())
        .arg("audit")
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A copy of the journal in `dir`, under `root/name`, to tamper with.
fn copy_journal(dir: &Path, root: &Path, name: &str) -> PathBuf {
    let to = root.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
    to
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paying_sellers_journal_keeps_what_was_sold_and_fails_verify_once_cut_deleted_or_reordered()
 {
    let w = World::start().await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        let buyer = w.buyer(1_000_000).await;
        let (name, header) = signed_payment(&w.http, &w.paid_url(), &buyer).await;
        let (status, headers, body) =
            post_json(&w.http, &w.paid_url(), seed_body(), &[(name, &header)]).await;
        assert_eq!(status, 200, "{body}");
        // Each buyer paid the price once (10000 units of 6-decimal USDC: $0.01).
        w.money().assert_holds(buyer.address(), 990_000).await;
        answers.push((headers["x-request-id"].to_str().unwrap().to_string(), body));
    }
    let dir = w.seller.audit_dir();
    assert_money_invariant_at(&w, &dir, 2).await;

    // What was sold is kept: the request body and the answer as delivered, with their sha256.
    let all = read_all(&dir).unwrap();
    for (request_id, body) in &answers {
        let of = |event: &str| {
            all.iter()
                .find(|r| r.event == event && r.request_id.as_deref() == Some(request_id))
                .unwrap()
                .clone()
        };
        let (fwd, ans) = (of("forwarded"), of("answered"));
        let sha = x402_sidecar::util::sha256_hex(seed_body().as_bytes());
        assert_eq!(fwd.details["requestSha256"], sha.as_str());
        assert_eq!(ans.details["requestSha256"], sha.as_str());
        let kept = x402_sidecar::audit::bodies_of(&dir, &ans).unwrap();
        let delivered: Value = serde_json::from_slice(&kept[0].bytes().unwrap()).unwrap();
        assert_eq!(&delivered, body, "the answer kept is the one delivered");
        assert_eq!(ans.details["answerSha256"], kept[0].sha256.as_str());
        let (code, shown) = audit_at(&dir, &["show", request_id]);
        assert_eq!(code, 0, "{shown}");
        assert!(shown.contains("--- request body of record"), "{shown}");
        assert!(shown.contains("--- answer body of record"), "{shown}");
        assert!(
            shown.contains(body["metadata"]["paymentId"].as_str().unwrap()),
            "{shown}"
        );
    }
    let (code, text) = audit_at(&dir, &["verify"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("hash chain intact"), "{text}");

    let root = tempfile::tempdir().unwrap();
    let day_file = |d: &Path| x402_sidecar::audit::day_files(d).unwrap().pop().unwrap().1;
    let lines = |p: &Path| -> Vec<String> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let write = |p: &Path, l: &[String]| std::fs::write(p, l.join("\n") + "\n").unwrap();

    // The last records cut off.
    let cut = copy_journal(&dir, root.path(), "cut");
    let f = day_file(&cut);
    let l = lines(&f);
    write(&f, &l[..l.len() - 2]);
    let (code, text) = audit_at(&cut, &["verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("the last 2 record(s) were cut off"), "{text}");

    // The (only, so newest and oldest) day file deleted.
    let gone = copy_journal(&dir, root.path(), "gone");
    std::fs::remove_file(day_file(&gone)).unwrap();
    let (code, text) = audit_at(&gone, &["verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("newest day file was deleted"), "{text}");

    // Two records swapped.
    let swapped = copy_journal(&dir, root.path(), "swapped");
    let f = day_file(&swapped);
    let mut l = lines(&f);
    l.swap(1, 2);
    write(&f, &l);
    let (code, text) = audit_at(&swapped, &["verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("out of order"), "{text}");
    let problems = text.lines().filter(|l| l.contains("line ")).count();
    assert!(problems >= 2, "one line per problem: {text}");

    // The answer sold altered.
    let altered = copy_journal(&dir, root.path(), "altered");
    let bodies = std::fs::read_dir(&altered)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("bodies-"))
        .unwrap();
    let text = std::fs::read_to_string(&bodies).unwrap();
    std::fs::write(&bodies, text.replacen("strategy", "strategz", 1)).unwrap();
    let (code, text) = audit_at(&altered, &["verify"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("was altered"), "{text}");

    // A directory that does not exist is a usage error, not "OK, 0 records".
    let (code, text) = audit_at(&root.path().join("typo"), &["verify"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("does not exist"), "{text}");
}

/// [`assert_money_invariant`] on a journal directory of the world's seller.
async fn assert_money_invariant_at(w: &World, dir: &Path, delivered: usize) {
    w.money().assert_transfers(delivered).await;
    let all = read_all(dir).unwrap();
    let count = |e: &str| all.iter().filter(|r| r.event == e).count();
    assert_eq!(count("settled"), delivered, "settled records");
    assert_eq!(count("answered"), delivered, "answered records");
}
