//! The load generator: closed loops at a fixed concurrency ([`timed`], [`counted`]), an open
//! loop at a fixed arrival rate ([`open_loop`]), and what one run measured ([`Run`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What one run measured. Latencies are of successful calls only; errors are counted over the
/// whole run, warm-up and tail included, so "zero errors" is strict.
#[derive(Default)]
pub(crate) struct Run {
    pub(crate) lat_us: Vec<u32>,
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) elapsed: Duration,
    /// Every answer of the run, warm-up included (for CPU per call).
    pub(crate) all: u64,
}

impl Run {
    pub(crate) fn merge(&mut self, (lat, ok, all, errors): Tally) {
        self.lat_us.extend(lat);
        self.ok += ok;
        self.all += all;
        for (k, n) in errors {
            *self.errors.entry(k).or_default() += n;
        }
    }

    /// Add another run of the same scenario (interleaved rounds).
    pub(crate) fn absorb(&mut self, other: Run) {
        self.merge((other.lat_us, other.ok, other.all, other.errors));
        self.elapsed += other.elapsed;
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        self.lat_us.iter().map(|&v| v as f64).sum::<f64>() / self.lat_us.len() as f64 / 1000.0
    }

    /// Share of the latencies above `ms` milliseconds.
    pub(crate) fn share_over(&self, ms: f64) -> f64 {
        let limit = (ms * 1000.0) as u32;
        self.lat_us.iter().filter(|&&v| v > limit).count() as f64 / self.lat_us.len().max(1) as f64
    }

    /// Nearest-rank percentile in milliseconds.
    pub(crate) fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let mut v = self.lat_us.clone();
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1] as f64 / 1000.0
    }

    pub(crate) fn error_text(&self) -> String {
        self.errors
            .iter()
            .map(|(k, n)| format!("{n}× {k}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One request of a run: `Ok` if the answer was the expected one, else a short error kind.
pub(crate) type Outcome = Result<(), String>;

/// What a worker counted: latencies (µs) of good answers in the window, good answers in the
/// window, all answers, errors by kind.
pub(crate) type Tally = (Vec<u32>, u64, u64, BTreeMap<String, u64>);

pub(crate) fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

/// Closed loop, fixed concurrency, for `warmup + measure`: each worker sends its next request as
/// soon as the previous one is answered. Counted: the requests completed inside the measured
/// window (throughput = those / window).
pub(crate) async fn timed<F, Fut>(conc: usize, warmup: Duration, measure: Duration, f: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let f = Arc::new(f);
    timed_with(
        conc,
        warmup,
        measure,
        || (),
        move |()| {
            let call = f();
            async move { ((), call.await) }
        },
    )
    .await
}

/// [`timed`] with a state per worker (e.g. its own connection), made by `init` and handed to
/// each call and back.
pub(crate) async fn timed_with<S, I, F, Fut>(
    conc: usize,
    warmup: Duration,
    measure: Duration,
    init: I,
    f: F,
) -> Run
where
    S: Send + 'static,
    I: Fn() -> S,
    F: Fn(S) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (S, Outcome)> + Send + 'static,
{
    let f = Arc::new(f);
    let start = Instant::now() + warmup;
    let end = start + measure;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc {
        let f = f.clone();
        let mut state = init();
        tasks.spawn(async move {
            let mut t: Tally = Default::default();
            while Instant::now() < end {
                let s = Instant::now();
                let (next, r) = f(state).await;
                state = next;
                let e = Instant::now();
                t.2 += 1;
                match r {
                    Ok(()) if e >= start && e <= end => {
                        t.0.push(micros(e - s));
                        t.1 += 1;
                    }
                    Ok(()) => {}
                    Err(k) => *t.3.entry(k).or_default() += 1,
                }
            }
            t
        });
    }
    collect(tasks, Some(measure)).await
}

/// Open loop: requests are started on a fixed schedule (`rate` per second, dispatched on a
/// 1 ms tick) whatever the answers do; each one's latency is measured from its dispatch.
pub(crate) async fn open_loop<F, Fut>(rate: u64, warmup: Duration, measure: Duration, f: F) -> Run
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let t0 = Instant::now();
    let (start, end) = (t0 + warmup, t0 + warmup + measure);
    let total = (rate as f64 * (warmup + measure).as_secs_f64()) as u64;
    let mut early = Run::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    while sent < total {
        tick.tick().await;
        let due = ((t0.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        while sent < due {
            sent += 1;
            let fut = f();
            tasks.spawn(async move {
                let s = Instant::now();
                let r = fut.await;
                let mut t: Tally = (Vec::new(), 0, 1, BTreeMap::new());
                match r {
                    Ok(()) if s >= start && s < end => {
                        t.0.push(micros(s.elapsed()));
                        t.1 = 1;
                    }
                    Ok(()) => {}
                    Err(k) => {
                        t.3.insert(k, 1);
                    }
                }
                t
            });
        }
        // Keep memory bounded if the target falls far behind.
        while tasks.len() > 20_000 {
            match tasks.join_next().await {
                Some(Ok(t)) => early.merge(t),
                Some(Err(e)) => *early.errors.entry(format!("worker: {e}")).or_default() += 1,
                None => break,
            }
        }
    }
    let mut run = collect(tasks, Some(measure)).await;
    run.merge((early.lat_us, early.ok, early.all, early.errors));
    run
}

/// Closed loop over a fixed list of jobs (e.g. pre-signed payments), `conc` at a time.
/// Throughput = jobs / wall time from the first request to the last answer.
pub(crate) async fn counted<T, F, Fut>(conc: usize, jobs: Vec<T>, f: F) -> Run
where
    T: Send + Sync + 'static,
    F: Fn(&T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let f = Arc::new(f);
    let jobs = Arc::new(jobs);
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conc.min(jobs.len()) {
        let (f, jobs, next) = (f.clone(), jobs.clone(), next.clone());
        tasks.spawn(async move {
            let mut t: Tally = Default::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else { break };
                let s = Instant::now();
                let r = f(job).await;
                t.2 += 1;
                match r {
                    Ok(()) => {
                        t.0.push(micros(s.elapsed()));
                        t.1 += 1;
                    }
                    Err(k) => *t.3.entry(k).or_default() += 1,
                }
            }
            t
        });
    }
    let mut run = collect(tasks, None).await;
    run.elapsed = t0.elapsed();
    run
}

async fn collect(mut tasks: tokio::task::JoinSet<Tally>, window: Option<Duration>) -> Run {
    let mut run = Run {
        elapsed: window.unwrap_or_default(),
        ..Run::default()
    };
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(t) => run.merge(t),
            Err(e) => *run.errors.entry(format!("worker: {e}")).or_default() += 1,
        }
    }
    run
}

/// Send, read the whole answer, compare the status.
pub(crate) async fn expect(req: reqwest::RequestBuilder, want: u16) -> Outcome {
    let resp = req.send().await.map_err(kind)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(kind)?;
    if status == want {
        Ok(())
    } else {
        Err(status_kind(status, &body))
    }
}

fn kind(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect error".into()
    } else {
        let mut s = e.to_string();
        s.truncate(80);
        format!("transport: {s}")
    }
}

pub(crate) fn status_kind(status: u16, body: &[u8]) -> String {
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    format!("HTTP {status} {code}").trim_end().to_string()
}
