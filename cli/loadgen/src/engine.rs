//! The open-model engine. Each worker owns one keep-alive connection and takes the next
//! request number from a shared counter; request i is due at `t0 + schedule.due(i)`
//! whatever the server did before, and its latency runs from that due time, not from
//! when a worker got to send it (no coordinated omission). A request that starts more
//! than `late_after` after its due time is counted as late, never dropped or re-timed.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Error;
use crate::http::{Conn, Reply, Request, STATUS_IO, Target};
use crate::schedule::{Arrivals, Schedule};
use crate::stats::{Quantiles, RowReport, Tally, Tick, histogram, record, status_label};

/// A line of the report: an endpoint, or an outcome such as a flash sale's winners.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    /// The share of scheduled operations that send to this row (0..=1), for its target
    /// rate; None when it is an outcome rather than a destination.
    pub share: Option<f64>,
}

/// How a response counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Ok,
    /// Success, recorded under another row (a flash sale's "won" or "sold out").
    OkAs(usize),
    Fail,
    /// The outcome is unknown (a 5xx, a broken connection, a timeout, "not started"):
    /// send the same request again (same idempotency key), up to `max_attempts`.
    Retry,
}

/// Judges a response: status (or [`crate::http::STATUS_IO`] /
/// [`crate::http::STATUS_TIMEOUT`]) and body.
pub type Classify = fn(u16, &[u8]) -> Class;

/// One request of an operation.
pub struct Step {
    pub row: usize,
    pub request: Request,
    pub classify: Classify,
}

/// What to send. An operation is one or more steps on one connection (a cart add, then
/// the checkout); the first step's latency runs from the due time, each later one's from
/// the end of the step before. A failed step ends its operation.
pub trait Workload: Send + Sync + 'static {
    fn rows(&self) -> Vec<Row>;
    /// Fills `steps` with operation `i`; deterministic in `i` (and the workload's seed).
    fn op(&self, i: u64, steps: &mut Vec<Step>);
}

/// How to run a schedule.
#[derive(Debug, Clone)]
pub struct Config {
    pub schedule: Schedule,
    /// Connections, and so the most requests in flight at once.
    pub connections: usize,
    /// A request starting later than this after its due time counts as late.
    pub late_after: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Attempts per request whose outcome is unknown (1: never retry).
    pub max_attempts: u32,
    /// Print a line per second on stderr.
    pub progress: bool,
    /// Stop scheduling on Ctrl-C and report what ran.
    pub interruptible: bool,
    /// Operations still not started this long after the schedule's last due time are
    /// abandoned and reported as not started (a run cannot queue forever behind a
    /// server that is too slow). None: wait for every one (a flash sale's buyers).
    pub grace: Option<Duration>,
}

impl Config {
    pub fn new(schedule: Schedule, connections: usize) -> Config {
        Config {
            schedule,
            connections: connections.max(1),
            late_after: Duration::from_millis(10),
            timeout: Duration::from_secs(10),
            max_attempts: 1,
            progress: false,
            interruptible: false,
            grace: Some(Duration::from_secs(1)),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub arrivals: Arrivals,
    /// Operations per second the schedule offered (None for a burst).
    pub target_rate: Option<f64>,
    pub scheduled: u64,
    pub started: u64,
    /// Scheduled operations never started: the run ended (`grace` after the schedule,
    /// or Ctrl-C) while they still waited for a connection.
    pub not_started: u64,
    /// Operations started per second, from the first due time to the last start.
    pub offered_rate: f64,
    /// Requests completed per second over the whole run.
    pub throughput: f64,
    /// From the first due time to the last completion.
    pub seconds: f64,
    pub connections: usize,
    /// Operations that started more than `late_after_ms` after their due time (no free
    /// connection, or the generator could not keep up). Their latency includes the wait.
    pub late: u64,
    pub late_after_ms: f64,
    /// How long after its due time each operation started.
    pub start_delay_ms: Quantiles,
    /// Requests sent again because their outcome was unknown.
    pub retries: u64,
    /// What the retried attempts got (the answer that made each one unknown).
    pub retried_statuses: BTreeMap<String, u64>,
    pub interrupted: bool,
    pub rows: Vec<RowReport>,
    /// Every request of every row together.
    pub total: RowReport,
    pub timeline: Vec<Tick>,
}

impl Run {
    pub fn row(&self, name: &str) -> Option<&RowReport> {
        self.rows.iter().find(|r| r.name == name)
    }
}

/// What one shard of workers recorded since the collector last drained it, or (in
/// [`Totals`]) everything drained so far.
struct Window {
    rows: Vec<Tally>,
    delay: Histogram<u64>,
    late: u64,
    started: u64,
    retries: u64,
    retried: BTreeMap<u16, u64>,
    last_start: Option<Instant>,
}

impl Window {
    fn new(rows: usize) -> Window {
        Window {
            rows: (0..rows).map(|_| Tally::default()).collect(),
            delay: histogram(),
            late: 0,
            started: 0,
            retries: 0,
            retried: BTreeMap::new(),
            last_start: None,
        }
    }

    fn add(&mut self, w: &Window) {
        for (total, got) in self.rows.iter_mut().zip(&w.rows) {
            total.add(got);
        }
        let _ = self.delay.add(&w.delay);
        self.late += w.late;
        self.started += w.started;
        self.retries += w.retries;
        for (s, n) in &w.retried {
            *self.retried.entry(*s).or_default() += n;
        }
        self.last_start = self.last_start.max(w.last_start);
    }
}

struct Shared<W> {
    workload: W,
    schedule: Schedule,
    t0: Instant,
    /// No operation starts after this.
    deadline: Option<Instant>,
    next: AtomicU64,
    stop: AtomicBool,
    shards: Vec<Mutex<Window>>,
    late_after: Duration,
    timeout: Duration,
    max_attempts: u32,
}

fn lock(m: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Connects `config.connections` connections, then runs the schedule from `start` (or
/// as soon as every connection is open) until every scheduled operation has finished.
pub async fn run<W: Workload>(target: &Target, config: &Config, workload: W, start: Option<Instant>) -> Result<Run, Error> {
    let rows = workload.rows();
    // Like wrk: one single-threaded event loop per core, each with its share of the
    // connections, so a request never wakes another thread (a multi-threaded runtime
    // spent much of its time parking and waking workers).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(config.connections);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<std::io::Result<()>>();
    let (go_tx, go_rx) = tokio::sync::watch::channel::<Option<Arc<Shared<W>>>>(None);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut handles = Vec::with_capacity(threads);
    for t in 0..threads {
        let ids: Vec<usize> = (t..config.connections).step_by(threads).collect();
        let (target, ready_tx, mut go_rx, done_tx) = (target.clone(), ready_tx.clone(), go_rx.clone(), done_tx.clone());
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(Error::Runtime)?;
        handles.push(std::thread::spawn(move || {
            rt.block_on(async move {
                let mut opening = tokio::task::JoinSet::new();
                for id in ids {
                    let mut c = Conn::new(target.clone());
                    opening.spawn(async move { c.connect().await.map(|()| (id, c)) });
                }
                let mut conns = Vec::new();
                while let Some(joined) = opening.join_next().await {
                    match joined.map_err(std::io::Error::other).and_then(|r| r) {
                        Ok(c) => conns.push(c),
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    }
                }
                let _ = ready_tx.send(Ok(()));
                let Ok(shared) = go_rx.wait_for(Option::is_some).await.map(|s| s.clone()) else { return };
                let Some(shared) = shared else { return };
                let mut workers = tokio::task::JoinSet::new();
                for (id, conn) in conns {
                    workers.spawn(worker(id, Arc::clone(&shared), conn));
                }
                while workers.join_next().await.is_some() {}
            });
            drop(done_tx);
        }));
    }
    drop((ready_tx, done_tx));
    for _ in 0..threads {
        match ready_rx.recv().await {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(Error::Connect { addr: target.addr, source: e }),
            None => return Err(Error::Worker("a load thread ended before connecting".into())),
        }
    }
    let shards = config.connections.clamp(1, 8);
    let t0 = start.unwrap_or_else(Instant::now).max(Instant::now());
    let shared = Arc::new(Shared {
        workload,
        schedule: config.schedule.clone(),
        t0,
        deadline: config.grace.map(|g| t0 + config.schedule.span() + g),
        next: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        shards: (0..shards).map(|_| Mutex::new(Window::new(rows.len()))).collect(),
        late_after: config.late_after,
        timeout: config.timeout,
        max_attempts: config.max_attempts.max(1),
    });
    let _ = go_tx.send(Some(Arc::clone(&shared)));
    if config.interruptible {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                shared.stop.store(true, Ordering::Relaxed);
            }
        });
    }
    let mut totals = Totals::new(rows.len());
    tokio::time::sleep_until(t0.into()).await;
    let mut tick = tokio::time::interval_at((t0 + Duration::from_secs(1)).into(), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // Every thread holds a sender until its workers are done.
            None = done_rx.recv() => break,
            _ = tick.tick() => {
                totals.drain(&shared, &rows);
                if config.progress {
                    totals.progress(config.schedule.rate);
                }
            }
        }
    }
    for h in handles {
        h.join().map_err(|_| Error::Worker("a load thread panicked".into()))?;
    }
    totals.drain(&shared, &rows);
    Ok(totals.finish(&shared, &rows, config))
}

async fn worker<W: Workload>(id: usize, shared: Arc<Shared<W>>, mut conn: Conn) {
    let shard = &shared.shards[id % shared.shards.len()];
    let mut steps = Vec::with_capacity(2);
    while !shared.stop.load(Ordering::Relaxed) {
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(offset) = shared.schedule.due(i) else { break };
        let due = shared.t0 + offset;
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let started = Instant::now();
        if shared.deadline.is_some_and(|d| started > d) {
            break;
        }
        let delay = started.saturating_duration_since(due);
        {
            let mut w = lock(shard);
            record(&mut w.delay, micros(delay));
            w.started += 1;
            w.late += u64::from(delay > shared.late_after);
            w.last_start = Some(w.last_start.map_or(started, |l| l.max(started)));
        }
        steps.clear();
        shared.workload.op(i, &mut steps);
        let mut from = due;
        for step in steps.drain(..) {
            let (status, class, retried) = attempt(&mut conn, &step, &shared).await;
            let end = Instant::now();
            let (row, ok) = match class {
                Class::Ok => (step.row, true),
                Class::OkAs(row) => (row, true),
                Class::Fail | Class::Retry => (step.row, false),
            };
            {
                let mut w = lock(shard);
                w.rows[row].record(micros(end - from), status, ok);
                for s in retried {
                    w.retries += 1;
                    *w.retried.entry(s).or_default() += 1;
                }
            }
            if !ok {
                break;
            }
            from = end;
        }
    }
}

/// Sends a step, again while its outcome is unknown (backing off 50 ms, doubling, up
/// to 1 s); returns the last status, its class and the status of every retried attempt.
async fn attempt<W>(conn: &mut Conn, step: &Step, shared: &Shared<W>) -> (u16, Class, Vec<u16>) {
    let mut backoff = Duration::from_millis(50);
    let mut retried = Vec::new();
    loop {
        let reply = conn.send(&step.request, shared.timeout).await;
        let status = reply.status();
        let class = match &reply {
            Reply::Response { status, body } => (step.classify)(*status, body),
            Reply::Io | Reply::Timeout => match (step.classify)(status, &[]) {
                Class::Retry => Class::Retry,
                _ => Class::Fail,
            },
        };
        if class != Class::Retry || retried.len() as u32 + 1 >= shared.max_attempts || shared.stop.load(Ordering::Relaxed) {
            return (status, class, retried);
        }
        retried.push(status);
        if status == STATUS_IO {
            // Whatever broke the connection may take a moment to heal.
            tokio::time::sleep(backoff / 2).await;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Everything drained so far, and the timeline.
struct Totals {
    all: Window,
    timeline: Vec<Tick>,
    last_end: Instant,
}

impl Totals {
    fn new(rows: usize) -> Totals {
        Totals { all: Window::new(rows), timeline: Vec::new(), last_end: Instant::now() }
    }

    /// Moves what the workers recorded since the last call into the totals and adds a
    /// second to the timeline.
    fn drain<W>(&mut self, shared: &Shared<W>, rows: &[Row]) {
        let mut second = Tally::default();
        for shard in &shared.shards {
            let w = std::mem::replace(&mut *lock(shard), Window::new(rows.len()));
            for got in &w.rows {
                second.add(got);
            }
            self.all.add(&w);
        }
        self.last_end = Instant::now();
        let q = Quantiles::of(&second.latency);
        let t = self.last_end.saturating_duration_since(shared.t0).as_secs_f64().ceil() as u32;
        self.timeline.push(Tick { t, count: second.count(), errors: second.failed(), p50_ms: q.p50, p99_ms: q.p99, max_ms: q.max });
    }

    fn progress(&self, rate: f64) {
        let Some(last) = self.timeline.last() else { return };
        let target = if rate.is_finite() { format!(" (target {rate:.0}/s)") } else { String::new() };
        eprintln!(
            "{:>5}s  {:>8} req/s{target}  p99 {:>9.2} ms  errors {:>6}  late starts {}",
            last.t, last.count, last.p99_ms, last.errors, self.all.late
        );
    }

    fn finish<W>(self, shared: &Shared<W>, rows: &[Row], config: &Config) -> Run {
        let t0 = shared.t0;
        let seconds = self.last_end.saturating_duration_since(t0).as_secs_f64().max(1e-3);
        let all_rows = &self.all;
        let start_span = all_rows.last_start.map_or(0.0, |l| l.saturating_duration_since(t0).as_secs_f64());
        let target_rate = config.schedule.rate.is_finite().then_some(config.schedule.rate);
        // n starts spread over (n - 1) gaps; a single start has no rate to speak of.
        let offered_rate = if all_rows.started > 1 && start_span > 0.0 { (all_rows.started - 1) as f64 / start_span } else { 0.0 };
        let mut all = Tally::default();
        let reports: Vec<RowReport> = rows
            .iter()
            .zip(&all_rows.rows)
            .map(|(row, t)| {
                all.add(t);
                RowReport::new(&row.name, t, seconds, target_rate.zip(row.share).map(|(r, s)| r * s))
            })
            .collect();
        let total = RowReport::new("all", &all, seconds, target_rate);
        Run {
            arrivals: config.schedule.arrivals,
            target_rate,
            scheduled: config.schedule.count,
            started: all_rows.started,
            not_started: config.schedule.count.saturating_sub(all_rows.started),
            offered_rate,
            throughput: total.rate,
            seconds,
            connections: config.connections,
            late: all_rows.late,
            late_after_ms: config.late_after.as_secs_f64() * 1000.0,
            start_delay_ms: Quantiles::of(&all_rows.delay),
            retries: all_rows.retries,
            retried_statuses: all_rows.retried.iter().map(|(s, n)| (status_label(*s), *n)).collect(),
            interrupted: shared.stop.load(Ordering::Relaxed),
            rows: reports,
            total,
            timeline: self.timeline,
        }
    }
}
