//! The journal's unit tests: chain, durability, concurrency, retention, failures.

use super::read::read_file;
use super::writer::file_name;
use super::*;
use crate::util::{rfc3339, sha256_hex};

const DAY: u64 = 86_400;
const T0: u64 = 1_790_000_000;

fn journal(dir: &Path) -> Journal {
    Journal::open(dir, 90).unwrap()
}

fn fill(j: &Journal) {
    j.append_blocking(
        Event::new(Kind::PaymentVerified)
            .request("req_1")
            .payment("pay_1")
            .payer("0xP"),
        T0,
    )
    .unwrap();
    j.append_blocking(
        Event::new(Kind::Forwarded)
            .request("req_1")
            .payment("pay_1"),
        T0 + 1,
    )
    .unwrap();
    j.append_blocking(
        Event::new(Kind::Settled)
            .request("req_1")
            .payment("pay_1")
            .tx("0xABC")
            .with("amount", "10000"),
        T0 + DAY,
    )
    .unwrap();
    j.append_blocking(
        Event::new(Kind::Answered).request("req_1").payment("pay_1"),
        T0 + DAY,
    )
    .unwrap();
    j.append_blocking(
        Event::new(Kind::PaymentVerified)
            .request("req_2")
            .payment("pay_2"),
        T0 + DAY,
    )
    .unwrap();
}

#[test]
fn a_chain_over_several_files_verifies_and_continues_after_reopening() {
    let d = tempfile::tempdir().unwrap();
    fill(&journal(d.path()));
    // A new process continues the same chain.
    journal(d.path())
        .append_blocking(Event::new(Kind::Answered).request("req_2"), T0 + DAY)
        .unwrap();
    assert_eq!(
        verify(d.path()).unwrap(),
        Verified {
            records: 6,
            files: 2
        }
    );
}

#[test]
fn an_edited_line_is_detected() {
    let d = tempfile::tempdir().unwrap();
    fill(&journal(d.path()));
    let (_, path) = day_files(d.path()).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"10000\"", "\"1\"");
    std::fs::write(&path, text).unwrap();
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("altered"), "{e}");
}

#[test]
fn a_deleted_line_is_detected() {
    let d = tempfile::tempdir().unwrap();
    fill(&journal(d.path()));
    let (_, path) = day_files(d.path()).unwrap().pop().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let e = verify(d.path()).unwrap_err().to_string();
    assert!(e.contains("record(s) missing"), "{e}");
}

#[test]
fn show_returns_the_whole_life_from_any_id() {
    let d = tempfile::tempdir().unwrap();
    fill(&journal(d.path()));
    for id in ["req_1", "pay_1", "0xabc"] {
        let events: Vec<String> = show(d.path(), id)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(
            events,
            ["payment_verified", "forwarded", "settled", "answered"],
            "{id}"
        );
    }
    assert!(
        to_csv(&read_all(d.path()).unwrap())
            .lines()
            .nth(3)
            .unwrap()
            .contains("\"10000\"")
    );
}

#[test]
fn retention_prunes_old_days_and_keeps_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    let days = |d: &Path| -> Vec<String> {
        day_files(d)
            .unwrap()
            .into_iter()
            .map(|(day, _)| day)
            .collect()
    };
    for day in [0, 10, 95] {
        j.append_blocking(Event::new(Kind::Answered), T0 + day * DAY)
            .unwrap();
    }
    // The first record of day 95 swept the window (days 5..=95): day 0 is gone, 10 stays.
    assert_eq!(
        days(d.path()),
        [&rfc3339(T0 + 10 * DAY)[..10], &rfc3339(T0 + 95 * DAY)[..10]]
    );
    // An explicit sweep on day 101 (window 11..=101) removes day 10 and keeps day 95.
    let removed = j.prune(T0 + 101 * DAY).unwrap();
    assert_eq!(removed, [rfc3339(T0 + 10 * DAY)[..10].to_string()]);
    assert_eq!(days(d.path()), [&rfc3339(T0 + 95 * DAY)[..10]]);
    // The pruned head does not break verification of what is left.
    assert_eq!(verify(d.path()).unwrap().records, 1);
}

/// `(appender, index)` of every record, in file order, after checking seq is 1..=N.
fn appended(dir: &Path) -> Vec<(u64, u64)> {
    let all = read_all(dir).unwrap();
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (1..=all.len() as u64).collect::<Vec<_>>());
    all.iter()
        .map(|r| {
            (
                r.details["appender"].as_u64().unwrap(),
                r.details["i"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every appender's records are there exactly once, in the order it appended them.
fn assert_all_once_in_order(seen: &[(u64, u64)], appenders: u64, each: u64) {
    assert_eq!(seen.len() as u64, appenders * each);
    for a in 0..appenders {
        let mine: Vec<u64> = seen
            .iter()
            .filter(|(who, _)| *who == a)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(mine, (0..each).collect::<Vec<_>>(), "appender {a}");
    }
}

fn numbered(appender: u64, i: u64) -> Event {
    Event::new(Kind::Answered)
        .with("appender", appender)
        .with("i", i)
}

#[test]
fn concurrent_threads_produce_one_valid_chain_with_every_record_once() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    const THREADS: u64 = 8;
    const EACH: u64 = 200;
    std::thread::scope(|s| {
        for a in 0..THREADS {
            let j = &j;
            s.spawn(move || {
                for i in 0..EACH {
                    // Mixed: three steps that do not wait, then one that does.
                    if i % 4 == 3 {
                        j.append_blocking(numbered(a, i), T0).unwrap();
                    } else {
                        j.append_unsynced(numbered(a, i), T0).unwrap();
                    }
                }
            });
        }
    });
    j.flush().unwrap();
    assert_eq!(verify(d.path()).unwrap().records as u64, THREADS * EACH);
    assert_all_once_in_order(&appended(d.path()), THREADS, EACH);
}

#[test]
fn every_kind_has_its_own_name_and_only_the_steps_before_an_answer_queue() {
    let names: std::collections::HashSet<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
    assert_eq!(names.len(), Kind::ALL.len());
    let queued: Vec<&str> = Kind::ALL
        .iter()
        .filter(|k| k.durability() == Durability::WithNext)
        .map(|k| k.name())
        .collect();
    // `forwarded` is the last record before money moves: it is on disk before the settlement.
    assert_eq!(queued, ["payment_verified", "settled"]);
    for k in Kind::ALL {
        assert_eq!(Kind::from_name(k.name()), Some(k));
    }
}

#[tokio::test]
async fn record_queues_a_step_and_writes_through_a_durable_event() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let syncs = j.syncs();
    j.record(Event::new(Kind::PaymentVerified).request("req_1"), T0)
        .await
        .unwrap();
    j.record(Event::new(Kind::Settled).request("req_1"), T0)
        .await
        .unwrap();
    // Queued steps have not cost an fsync of their own.
    assert_eq!(j.syncs(), syncs);
    j.record(Event::new(Kind::Answered).request("req_1"), T0)
        .await
        .unwrap();
    // The durable answer took the queued steps with it, in order.
    let on_disk: Vec<String> = read_all(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(on_disk, ["payment_verified", "settled", "answered"]);
    assert_eq!(j.syncs(), syncs + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_tasks_share_fsyncs_and_keep_the_chain() {
    let d = tempfile::tempdir().unwrap();
    let j = Arc::new(journal(d.path()));
    const TASKS: u64 = 16;
    const EACH: u64 = 50;
    let mut tasks = Vec::new();
    for a in 0..TASKS {
        let j = j.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..EACH {
                if i % 2 == 0 {
                    j.append_unsynced(numbered(a, i), T0).unwrap();
                } else {
                    let r = j.append(numbered(a, i), T0).await.unwrap();
                    assert_eq!(r.details["i"], i);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Never more fsyncs than waited-for appends; usually far fewer.
    assert!(j.syncs() <= TASKS * EACH / 2, "{} fsyncs", j.syncs());
    assert_eq!(verify(d.path()).unwrap().records as u64, TASKS * EACH);
    assert_all_once_in_order(&appended(d.path()), TASKS, EACH);
}

#[test]
fn an_unsynced_record_is_on_disk_once_a_later_durable_one_is_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    j.append_unsynced(Event::new(Kind::PaymentVerified).request("req_1"), T0)
        .unwrap();
    j.append_unsynced(Event::new(Kind::Forwarded).request("req_1"), T0)
        .unwrap();
    let r = j
        .append_blocking(Event::new(Kind::Settled).request("req_1"), T0)
        .unwrap();
    assert_eq!(r.seq, 3);
    // Read while the journal is still open: no drop or flush has helped.
    let events: Vec<String> = read_all(d.path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(events, ["payment_verified", "forwarded", "settled"]);
    assert_eq!(j.syncs(), 1, "one fsync for the three records");
    // Unsynced records alone are written but not fsync'd; flush does.
    j.append_unsynced(Event::new(Kind::Forwarded).request("req_2"), T0)
        .unwrap();
    j.flush().unwrap();
    assert_eq!(j.syncs(), 2);
    assert_eq!(verify(d.path()).unwrap().records, 4);
}

#[test]
fn a_day_file_that_cannot_be_opened_spills_and_the_records_are_written_in_order_once_it_can() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    j.append_blocking(Event::new(Kind::Answered).request("req_1"), T0)
        .unwrap();
    // Tomorrow's file is a directory: the change of day cannot open it.
    let blocker = d.path().join(file_name(T0 + DAY));
    std::fs::create_dir(&blocker).unwrap();
    j.append_unsynced(Event::new(Kind::Forwarded).request("req_2"), T0 + DAY)
        .unwrap();
    let e = j
        .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY + 5)
        .unwrap_err();
    assert!(matches!(e, AuditError::Spilled { records: 2, .. }), "{e}");
    // Behind the spill, a newer record waits too, even before a retry: order is kept.
    let e = j
        .append_blocking(Event::new(Kind::Answered).request("req_2"), T0 + DAY + 6)
        .unwrap_err();
    assert!(matches!(e, AuditError::Spilled { records: 3, .. }), "{e}");
    assert_eq!(
        j.spill_stats(),
        SpillStats {
            pending: 3,
            spilled: 3,
            journaled: 0,
            dropped: 0
        }
    );
    // A flush says the journal is not complete while records wait.
    assert!(matches!(
        j.flush(),
        Err(AuditError::Spilled { records: 3, .. })
    ));
    // The chain alone is intact; the gap is reported by `gaps` only when the spill is on disk:
    // here it is in memory.
    assert_eq!(verify(d.path()).unwrap().records, 1);
    // Fixed: the spilled records go in first, in order, with their own time, then what is new.
    std::fs::remove_dir(&blocker).unwrap();
    j.flush().unwrap();
    let r = j
        .append_blocking(Event::new(Kind::Replayed).request("req_2"), T0 + DAY + 7)
        .unwrap();
    assert_eq!(r.seq, 5);
    let all = read_all(d.path()).unwrap();
    let got: Vec<(&str, &str)> = all
        .iter()
        .map(|r| (r.event.as_str(), r.time.as_str()))
        .collect();
    let (t1, t5, t6, t7) = (
        rfc3339(T0 + DAY),
        rfc3339(T0 + DAY + 5),
        rfc3339(T0 + DAY + 6),
        rfc3339(T0 + DAY + 7),
    );
    assert_eq!(
        got,
        [
            ("answered", rfc3339(T0).as_str()),
            ("forwarded", t1.as_str()),
            ("settled", t5.as_str()),
            ("answered", t6.as_str()),
            ("replayed", t7.as_str()),
        ]
    );
    // The late ones say so.
    assert!(
        all[1..4]
            .iter()
            .all(|r| r.details.contains_key("spillId") && r.details.contains_key("journaledAt"))
    );
    assert!(!all[4].details.contains_key("spillId"));
    assert_eq!(j.spill_stats().pending, 0);
    assert_eq!(j.spill_stats().journaled, 3);
    assert_eq!(
        verify(d.path()).unwrap(),
        Verified {
            records: 5,
            files: 2
        }
    );
}

/// A journal whose day file for `T0 + DAY` cannot be opened, with its spill in `spill`.
fn blocked(d: &Path, spill: &Path) -> (Journal, PathBuf) {
    let j = Journal::open_with_spill(d, 90, Some(spill)).unwrap();
    j.append_blocking(Event::new(Kind::Answered).request("req_1"), T0)
        .unwrap();
    let blocker = d.join(file_name(T0 + DAY));
    std::fs::create_dir(&blocker).unwrap();
    (j, blocker)
}

#[test]
fn a_spill_on_another_disk_survives_a_restart_and_is_written_first_once() {
    let d = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let (j, blocker) = blocked(d.path(), s.path());
    j.append_unsynced(
        Event::new(Kind::Settled)
            .request("req_2")
            .payment("pay_2")
            .tx("0xT"),
        T0 + DAY,
    )
    .unwrap();
    let e = j
        .append_blocking(
            Event::new(Kind::Answered).request("req_2").payment("pay_2"),
            T0 + DAY,
        )
        .unwrap_err();
    assert!(matches!(e, AuditError::Spilled { .. }), "{e}");
    // On disk in the spill before the waiter heard: `audit verify` sees the gap.
    let found = gaps(d.path(), Some(s.path()), T0 + DAY, OPEN_GRACE_SECS).unwrap();
    let lines: Vec<String> = found.iter().map(|g| g.to_string()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("spilled, not yet in the journal: settled"),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("answered") && lines[1].contains("pay_2"),
        "{lines:?}"
    );
    // The process goes away with the disk still full: the records stay in the spill file.
    drop(j);
    assert_eq!(read_spill(&s.path().join(SPILL_FILE)).unwrap().len(), 2);
    // Restarted with the disk fixed: written first, in order, and the spill is empty.
    std::fs::remove_dir(&blocker).unwrap();
    let j = Journal::open_with_spill(d.path(), 90, Some(s.path())).unwrap();
    assert_eq!(j.spill_stats().pending, 2);
    let r = j
        .append_blocking(Event::new(Kind::Replayed).request("req_3"), T0 + DAY + 1)
        .unwrap();
    assert_eq!(r.seq, 4);
    drop(j);
    let events: Vec<String> = read_all(d.path())
        .unwrap()
        .into_iter()
        .map(|r| r.event)
        .collect();
    assert_eq!(events, ["answered", "settled", "answered", "replayed"]);
    assert!(read_spill(&s.path().join(SPILL_FILE)).unwrap().is_empty());
    assert!(
        gaps(d.path(), Some(s.path()), T0 + DAY, 0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(verify(d.path()).unwrap().records, 4);
}

#[test]
fn a_crash_after_journaling_the_spill_and_before_clearing_it_journals_nothing_twice() {
    let d = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let (j, blocker) = blocked(d.path(), s.path());
    j.append_blocking(Event::new(Kind::Answered).request("req_2"), T0 + DAY)
        .unwrap_err();
    let kept = std::fs::read(s.path().join(SPILL_FILE)).unwrap();
    std::fs::remove_dir(&blocker).unwrap();
    j.flush().unwrap();
    drop(j);
    // As if the process died before the spill file was cleared.
    std::fs::write(s.path().join(SPILL_FILE), kept).unwrap();
    let j = Journal::open_with_spill(d.path(), 90, Some(s.path())).unwrap();
    assert_eq!(j.spill_stats().pending, 0);
    j.flush().unwrap();
    drop(j);
    assert_eq!(verify(d.path()).unwrap().records, 2);
    assert!(read_spill(&s.path().join(SPILL_FILE)).unwrap().is_empty());
}

#[test]
fn a_forwarded_payment_with_no_outcome_is_a_hole_once_past_the_grace() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    for (kind, pay, t) in [
        (Kind::Forwarded, "pay_1", T0),
        (Kind::Settled, "pay_1", T0),
        (Kind::Answered, "pay_1", T0),
        (Kind::Forwarded, "pay_2", T0),
        (Kind::Forwarded, "pay_3", T0 + 100),
        (Kind::SettlementPending, "pay_3", T0 + 100),
        (Kind::Forwarded, "pay_4", T0 + 1_000),
    ] {
        j.append_blocking(Event::new(kind).payment(pay).request(pay), t)
            .unwrap();
    }
    drop(j);
    // pay_4 may still be settling; pay_2 has been forwarded for too long with no outcome.
    let g = gaps(d.path(), None, T0 + 1_000, OPEN_GRACE_SECS).unwrap();
    assert_eq!(g.len(), 1, "{g:?}");
    let line = g[0].to_string();
    assert!(line.starts_with("hole: payment pay_2"), "{line}");
    assert!(line.contains("record 4"), "{line}");
    assert_eq!(gaps(d.path(), None, T0 + 1_000, 0).unwrap().len(), 2);
}

/// A write that fails (disk full) leaves no partial line and the chain continues.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_write_reaches_the_waiter_and_leaves_no_trace() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    j.append_blocking(Event::new(Kind::Answered).request("req_1"), T0)
        .unwrap();
    let full = d.path().join(file_name(T0 + DAY));
    std::os::unix::fs::symlink("/dev/full", &full).unwrap();
    let e = j
        .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
        .unwrap_err();
    assert!(e.to_string().contains("No space left"), "{e}");
    std::fs::remove_file(&full).unwrap();
    j.flush().unwrap();
    let r = j
        .append_blocking(Event::new(Kind::Answered).request("req_2"), T0 + DAY)
        .unwrap();
    assert_eq!(r.seq, 3, "the spilled record went in first");
    assert_eq!(verify(d.path()).unwrap().records, 3);
}

#[test]
fn a_change_of_day_opens_a_new_file_and_the_chain_goes_on() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    let a = j.append_blocking(Event::new(Kind::Answered), T0).unwrap();
    let b = j
        .append_blocking(Event::new(Kind::Answered), T0 + DAY)
        .unwrap();
    assert_eq!(b.prev_hash, a.hash);
    // A record whose clock was read before the last one's is not sent back a day.
    let c = j.append_blocking(Event::new(Kind::Answered), T0).unwrap();
    assert_eq!(c.time, b.time);
    assert_eq!(
        verify(d.path()).unwrap(),
        Verified {
            records: 3,
            files: 2
        }
    );
    let per_file: Vec<usize> = day_files(d.path())
        .unwrap()
        .iter()
        .map(|(_, p)| read_file(p).unwrap().len())
        .collect();
    assert_eq!(per_file, [1, 2]);
}

#[test]
fn one_writer_per_directory() {
    let d = tempfile::tempdir().unwrap();
    let first = Journal::open(d.path(), 90).unwrap();
    first
        .append_blocking(Event::new(Kind::Answered), T0)
        .unwrap();
    match Journal::open(d.path(), 90) {
        Err(AuditError::Busy(dir)) => assert_eq!(dir, d.path()),
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("a second writer opened the same journal"),
    }
    drop(first);
    let again = Journal::open(d.path(), 90).unwrap();
    again
        .append_blocking(Event::new(Kind::Answered), T0 + 1)
        .unwrap();
    drop(again);
    assert_eq!(
        verify(d.path()).unwrap().records,
        2,
        "one chain, the lock file ignored"
    );
}

#[tokio::test]
async fn a_stopped_writer_is_an_error_not_a_hang() {
    let d = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel();
    drop(rx);
    let j = Journal {
        dir: d.path().into(),
        tx: Some(tx),
        writer: None,
        syncs: Arc::default(),
        spill: Arc::default(),
        _lock: lock_dir(d.path()).unwrap(),
    };
    assert!(matches!(
        j.append(Event::new(Kind::Answered), T0).await,
        Err(AuditError::Stopped)
    ));
    assert!(matches!(
        j.append_blocking(Event::new(Kind::Answered), T0),
        Err(AuditError::Stopped)
    ));
    assert!(matches!(
        j.append_unsynced(Event::new(Kind::Answered), T0),
        Err(AuditError::Stopped)
    ));
    assert!(matches!(j.flush(), Err(AuditError::Stopped)));
}

#[test]
fn dropping_the_journal_writes_what_is_queued() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    for i in 0..100 {
        j.append_unsynced(numbered(0, i), T0).unwrap();
    }
    drop(j);
    assert_all_once_in_order(&appended(d.path()), 1, 100);
}

// ---- The anchored journal: every tamper case fails `verify`, with one line per problem. ----

/// Three days of a paid call each (verified, forwarded with the request body, answered with
/// the answer body): records 1-3 on day 0, 4-6 on day 1, 7-9 on day 2.
fn three_days(dir: &Path) {
    let j = journal(dir);
    for day in 0..3u64 {
        let (req, t) = (format!("req_{day}"), T0 + day * DAY);
        j.append_unsynced(Event::new(Kind::PaymentVerified).request(&req), t)
            .unwrap();
        j.append_blocking(
            Event::new(Kind::Forwarded)
                .request(&req)
                .body("request", format!("{{\"ask\":{day}}}").into_bytes()),
            t,
        )
        .unwrap();
        j.append_blocking(
            Event::new(Kind::Answered)
                .request(&req)
                .body("answer", format!("{{\"strategy\":{day}}}").into_bytes()),
            t,
        )
        .unwrap();
    }
}

fn problems(dir: &Path) -> Vec<String> {
    check(dir).unwrap().1
}

fn day_path(dir: &Path, day: u64) -> PathBuf {
    dir.join(file_name(T0 + day * DAY))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn an_untouched_anchored_journal_verifies_with_its_head_and_bodies() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    assert_eq!(problems(d.path()), Vec::<String>::new());
    let head = read_head(d.path()).unwrap().unwrap();
    assert_eq!((head.seq, head.base_seq), (9, 0));
    let all = read_all(d.path()).unwrap();
    assert_eq!(head.hash, all[8].hash);
    // Each day's first record carries the previous day's last hash.
    assert_eq!(all[3].prev_hash, all[2].hash);
    assert_eq!(all[6].prev_hash, all[5].hash);
}

#[test]
fn cutting_the_last_records_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    let p = day_path(d.path(), 2);
    let l = lines(&p);
    write_lines(&p, &l[..1]);
    let found = problems(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("ends at record 7") && found[0].contains("last 2 record(s) were cut off"),
        "{found:?}"
    );
}

#[test]
fn a_cut_journal_goes_on_from_its_head_so_the_cut_stays_visible() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    let p = day_path(d.path(), 2);
    let l = lines(&p);
    write_lines(&p, &l[..1]);
    // A restarted writer does not paper over the cut by chaining on from record 7.
    let r = journal(d.path())
        .append_blocking(Event::new(Kind::Answered), T0 + 2 * DAY + 5)
        .unwrap();
    assert_eq!(r.seq, 10);
    let found = problems(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("record 10 follows record 7: 2 record(s) missing"),
        "{found:?}"
    );
}

#[test]
fn deleting_the_newest_day_file_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    std::fs::remove_file(day_path(d.path(), 2)).unwrap();
    let found = problems(d.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("ends at record 6") && p.contains("newest day file was deleted")),
        "{found:?}"
    );
}

#[test]
fn deleting_the_oldest_day_file_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    std::fs::remove_file(day_path(d.path(), 0)).unwrap();
    let found = problems(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("starts at record 4")
            && found[0].contains("record(s) 1 to 3 are missing"),
        "{found:?}"
    );
}

#[test]
fn deleting_a_day_file_in_the_middle_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    std::fs::remove_file(day_path(d.path(), 1)).unwrap();
    let found = problems(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("record 7 follows record 3: 3 record(s) missing"),
        "{found:?}"
    );
}

#[test]
fn reordering_records_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    let p = day_path(d.path(), 1);
    let mut l = lines(&p);
    l.swap(0, 1);
    write_lines(&p, &l);
    let found = problems(d.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("record 5 follows record 3: 1 record(s) missing")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("record 4 comes after record 5: the records are out of order")),
        "{found:?}"
    );
}

#[test]
fn renaming_day_files_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    // Day 0 and day 2 trade names.
    let (a, c) = (day_path(d.path(), 0), day_path(d.path(), 2));
    let tmp = d.path().join("swap");
    std::fs::rename(&a, &tmp).unwrap();
    std::fs::rename(&c, &a).unwrap();
    std::fs::rename(&tmp, &c).unwrap();
    let found = problems(d.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("is in the day file of") && p.contains("renamed")),
        "{found:?}"
    );
    assert!(found.len() >= 3, "one line per problem: {found:?}");
}

#[test]
fn a_deleted_head_file_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    std::fs::remove_file(d.path().join(HEAD_FILE)).unwrap();
    let found = problems(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("head.json is missing"), "{found:?}");
}

#[test]
fn pruning_by_retention_moves_the_base_and_still_verifies() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    let j = journal(d.path());
    // Day 92: the window keeps days 2..=92, so days 0 and 1 go, with their bodies.
    let removed = j.prune(T0 + 92 * DAY).unwrap();
    assert_eq!(removed.len(), 2);
    assert!(
        !d.path()
            .join(format!("bodies-{}.jsonl", &rfc3339(T0)[..10]))
            .exists()
    );
    assert!(
        d.path()
            .join(format!("bodies-{}.jsonl", &rfc3339(T0 + 2 * DAY)[..10]))
            .exists()
    );
    let head = read_head(d.path()).unwrap().unwrap();
    assert_eq!((head.base_seq, head.seq), (6, 9));
    assert_eq!(problems(d.path()), Vec::<String>::new());
    // Deleting what retention kept is still found.
    drop(j);
    std::fs::remove_file(day_path(d.path(), 2)).unwrap();
    let found = problems(d.path());
    assert!(
        found.iter().any(|p| p.contains("ends at record 6")),
        "{found:?}"
    );
}

#[test]
fn bodies_are_kept_with_their_sha256_and_an_altered_or_missing_body_fails_verify() {
    let d = tempfile::tempdir().unwrap();
    three_days(d.path());
    let all = read_all(d.path()).unwrap();
    let fwd = &all[1];
    assert_eq!(fwd.details["bodies"], serde_json::json!(["request"]));
    assert_eq!(
        fwd.details["requestSha256"].as_str().unwrap(),
        sha256_hex(b"{\"ask\":0}")
    );
    let kept = bodies_of(d.path(), fwd).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].bytes().unwrap(), b"{\"ask\":0}");
    let ans = bodies_of(d.path(), &all[2]).unwrap();
    assert_eq!(ans[0].role, "answer");
    assert_eq!(ans[0].bytes().unwrap(), b"{\"strategy\":0}");

    // Altered: the strategy sold is not the one recorded.
    let bodies = d
        .path()
        .join(format!("bodies-{}.jsonl", &rfc3339(T0)[..10]));
    let text = std::fs::read_to_string(&bodies).unwrap();
    std::fs::write(
        &bodies,
        text.replace("{\\\"strategy\\\":0}", "{\\\"strategy\\\":1}"),
    )
    .unwrap();
    let found = problems(d.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("the answer body of record 3") && found[0].contains("was altered"),
        "{found:?}"
    );
    // Gone: both bodies of the day are missing.
    std::fs::remove_file(&bodies).unwrap();
    let found = problems(d.path());
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found.iter().all(|p| p.contains("is missing from bodies-")),
        "{found:?}"
    );
}

#[test]
fn a_body_that_is_not_text_is_kept_exactly() {
    let d = tempfile::tempdir().unwrap();
    let j = journal(d.path());
    let raw = vec![0xff, 0x00, 0xfe, b'x'];
    let r = j
        .append_blocking(Event::new(Kind::Forwarded).body("request", raw.clone()), T0)
        .unwrap();
    let kept = bodies_of(d.path(), &r).unwrap();
    assert_eq!(kept[0].encoding.as_deref(), Some("base64"));
    assert_eq!(kept[0].bytes().unwrap(), raw);
    assert_eq!(problems(d.path()), Vec::<String>::new());
}

#[test]
fn a_spilled_record_keeps_its_body_until_it_is_journaled() {
    let d = tempfile::tempdir().unwrap();
    let s = tempfile::tempdir().unwrap();
    let (j, blocker) = blocked(d.path(), s.path());
    let e = j
        .append_blocking(
            Event::new(Kind::Forwarded)
                .request("req_2")
                .body("request", b"{\"ask\":2}".to_vec()),
            T0 + DAY,
        )
        .unwrap_err();
    assert!(matches!(e, AuditError::Spilled { records: 1, .. }), "{e}");
    // The spill file holds the body too: it survives a restart.
    let spilled = read_spill(&s.path().join(SPILL_FILE)).unwrap();
    assert_eq!(spilled[0].bodies[0].body, "{\"ask\":2}");
    std::fs::remove_dir(&blocker).unwrap();
    j.flush().unwrap();
    let r = read_all(d.path()).unwrap().pop().unwrap();
    assert_eq!(r.event, "forwarded");
    assert_eq!(
        bodies_of(d.path(), &r).unwrap()[0].bytes().unwrap(),
        b"{\"ask\":2}"
    );
    assert_eq!(problems(d.path()), Vec::<String>::new());
}
