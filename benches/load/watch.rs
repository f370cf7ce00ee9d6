//! What a run cost the processes: peak memory and CPU time from /proc, per watched process.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::measure::Run;

/// The processes watched during each run.
#[derive(Clone, Copy)]
pub(crate) struct Pids {
    pub(crate) seller: u32,
    pub(crate) buyer: u32,
    pub(crate) anvil: Option<u32>,
    pub(crate) upstream: u32,
}

impl Pids {
    /// seller, buyer, anvil, upstream, this load generator.
    pub(crate) fn all(&self) -> [Option<u32>; 5] {
        [
            Some(self.seller),
            Some(self.buyer),
            self.anvil,
            Some(self.upstream),
            Some(std::process::id()),
        ]
    }
}

/// What a run cost the processes: peak RSS (kB) of the seller and the buyer, CPU time (ms) of
/// every watched process, and how busy the whole machine was (cores).
#[derive(Default, Clone, Copy)]
pub(crate) struct Cost {
    pub(crate) rss: (u64, u64),
    pub(crate) cpu_ms: [f64; 5],
    pub(crate) ours: f64,
    pub(crate) machine: f64,
    /// Seconds watched.
    pub(crate) wall: f64,
}

impl Cost {
    /// Add the cost of another run of the same scenario (interleaved rounds).
    pub(crate) fn absorb(&mut self, o: &Cost) {
        let w = self.wall + o.wall;
        if w > 0.0 {
            self.ours = (self.ours * self.wall + o.ours * o.wall) / w;
            self.machine = (self.machine * self.wall + o.machine * o.wall) / w;
        }
        self.wall = w;
        self.rss = (self.rss.0.max(o.rss.0), self.rss.1.max(o.rss.1));
        for i in 0..5 {
            self.cpu_ms[i] += o.cpu_ms[i];
        }
    }
}

/// Watches a run. Peak memory: the kernel's high-water mark (VmHWM, reset at the start through
/// /proc/<pid>/clear_refs) and, as a cross-check, VmRSS sampled every 20 ms. CPU: utime + stime
/// from /proc/<pid>/stat, and the machine's busy time from /proc/stat.
pub(crate) struct Watch {
    pids: [Option<u32>; 5],
    reset: [bool; 2],
    cpu0: [Option<u64>; 5],
    machine0: Option<(u64, u64)>,
    t0: Instant,
    stop: Arc<AtomicBool>,
    sampler: tokio::task::JoinHandle<[u64; 2]>,
}

fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// The fields of /proc/<pid>/stat after the command name: state, ppid, …
fn stat_fields(pid: u32) -> Option<(String, Vec<String>)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (s.find('(')?, s.rfind(')')?);
    let comm = s[open + 1..close].to_string();
    Some((
        comm,
        s[close + 1..]
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    ))
}

/// utime + stime in clock ticks (USER_HZ, 100 on Linux).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let (_, f) = stat_fields(pid)?;
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// (busy, total) ticks of the whole machine.
fn machine_ticks() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/stat").ok()?;
    let v: Vec<u64> = s
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle, total))
}

/// The anvil started by the devnet: our child named `anvil`.
pub(crate) fn find_anvil() -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let (comm, f) = stat_fields(pid)?;
        (comm == "anvil" && f.get(1) == Some(&me)).then_some(pid)
    })
}

const TICK_MS: f64 = 10.0;

impl Watch {
    pub(crate) fn start(p: &Pids) -> Watch {
        let reset = [p.seller, p.buyer]
            .map(|pid| std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, ps) = (stop.clone(), [p.seller, p.buyer]);
        let sampler = tokio::spawn(async move {
            let mut peak = [0u64; 2];
            while !s.load(Ordering::Relaxed) {
                for (i, pid) in ps.iter().enumerate() {
                    peak[i] = peak[i].max(status_kb(*pid, "VmRSS:").unwrap_or(0));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        });
        let pids = p.all();
        Watch {
            pids,
            reset,
            cpu0: pids.map(|p| p.and_then(cpu_ticks)),
            machine0: machine_ticks(),
            t0: Instant::now(),
            stop,
            sampler,
        }
    }

    pub(crate) async fn finish(self) -> Cost {
        let wall = self.t0.elapsed().as_secs_f64().max(1e-9);
        let cpu1 = self.pids.map(|p| p.and_then(cpu_ticks));
        let machine1 = machine_ticks();
        self.stop.store(true, Ordering::Relaxed);
        let sampled = self.sampler.await.unwrap_or_default();
        let ps = [self.pids[0], self.pids[1]];
        let rss: Vec<u64> = (0..2)
            .map(|i| {
                let hwm = match (self.reset[i], ps[i]) {
                    (true, Some(pid)) => status_kb(pid, "VmHWM:").unwrap_or(0),
                    _ => 0,
                };
                hwm.max(sampled[i])
            })
            .collect();
        let mut cpu_ms = [0.0; 5];
        for i in 0..5 {
            if let (Some(a), Some(b)) = (self.cpu0[i], cpu1[i]) {
                cpu_ms[i] = b.saturating_sub(a) as f64 * TICK_MS;
            }
        }
        let ours = cpu_ms.iter().sum::<f64>() / 1000.0 / wall;
        let machine = match (self.machine0, machine1) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
                let cores = std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1) as f64;
                (b1 - b0) as f64 / (t1 - t0) as f64 * cores
            }
            _ => f64::NAN,
        };
        Cost {
            rss: (rss[0], rss[1]),
            cpu_ms,
            ours,
            machine,
            wall,
        }
    }
}

/// Run `work` while watching the processes.
pub(crate) async fn watched(p: &Pids, work: impl Future<Output = Run>) -> (Run, Cost) {
    let w = Watch::start(p);
    let run = work.await;
    (run, w.finish().await)
}
