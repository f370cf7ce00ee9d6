//! The journal's unit tests: chain, durability, concurrency, retention, failures.

use super::read::read_file;
use super::writer::file_name;
use super::*;
use crate::util::rfc3339;

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
    assert!(e.contains("removed"), "{e}");
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
    assert_eq!(queued, ["payment_verified", "forwarded", "settled"]);
}

#[tokio::test]
async fn record_queues_a_step_and_writes_through_a_durable_event() {
    let dir = tempfile::tempdir().unwrap();
    let j = journal(dir.path());
    let syncs = j.syncs();
    j.record(Event::new(Kind::Forwarded).request("req_1"), T0)
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
    assert_eq!(on_disk, ["forwarded", "settled", "answered"]);
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
fn a_day_file_that_cannot_be_opened_fails_the_append_and_the_writer_recovers() {
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
        .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
        .unwrap_err();
    assert!(matches!(e, AuditError::Io(..)), "{e}");
    // Both failures are reported by the next flush, once.
    let e = j.flush().unwrap_err();
    assert!(matches!(e, AuditError::Lost { records: 2, .. }), "{e}");
    j.flush().unwrap();
    // Fixed: the writer carries on, the chain has no gap.
    std::fs::remove_dir(&blocker).unwrap();
    let r = j
        .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
        .unwrap();
    assert_eq!(r.seq, 2);
    assert_eq!(
        verify(d.path()).unwrap(),
        Verified {
            records: 2,
            files: 2
        }
    );
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
    let r = j
        .append_blocking(Event::new(Kind::Settled).request("req_2"), T0 + DAY)
        .unwrap();
    assert_eq!(r.seq, 2);
    assert_eq!(verify(d.path()).unwrap().records, 2);
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
        retention_days: 90,
        tx: Some(tx),
        writer: None,
        syncs: Arc::default(),
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
