//! Carrying out a plan: destroys first, then every other step in parallel along the
//! dependency graph, each resource waited on until healthy before its dependents start,
//! then the destroys of processes that served until now (`Step::last`), and the state
//! saved after every step so that a killed `up` resumes where it stopped.
//!
//! The engine is async: up to [`PARALLEL`] steps are futures polled together on the
//! caller's thread, so the state, the plan and the progress need no locks. A command
//! that is not async itself runs it with [`block_on`].

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::stream::{FuturesUnordered, StreamExt};
use scalectl_core::plan::{Action, Plan, Step};
use scalectl_core::{Applied, ErrorKind, Graph, Provider, ProviderError, Readiness, Resource};

use crate::home::{Home, State};
use crate::output::Progress;

/// How many steps run at once; the machine has few cores and most steps wait on I/O.
const PARALLEL: usize = 4;

#[derive(Debug)]
pub struct Outcome {
    /// Notes from providers worth showing (an optional part skipped, say).
    pub notes: Vec<String>,
}

/// Runs `work` to completion on a runtime of its own on this thread (a provider's
/// blocking work goes to the runtime's blocking pool). For commands that are not async.
pub fn block_on<F: Future>(work: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime")?;
    Ok(rt.block_on(work))
}

pub async fn execute(
    provider: &dyn Provider,
    home: &Home,
    state: &mut State,
    graph: &Graph,
    plan: &Plan,
    health_timeout: Duration,
    progress: &Progress,
) -> Result<Outcome> {
    let mut notes = Vec::new();
    destroy(provider, home, state, plan.steps.iter().filter(|s| s.action == Action::Destroy && !s.last), progress).await?;

    let todo: Vec<_> = plan.steps.iter().filter(|s| !matches!(s.action, Action::Keep | Action::Destroy)).collect();
    let pending_ids: BTreeSet<&str> = todo.iter().map(|s| s.id.as_str()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeSet<&str> = BTreeSet::new();
    let mut failure: Option<anyhow::Error> = None;
    let mut running = FuturesUnordered::new();
    loop {
        if failure.is_none() {
            for step in &todo {
                if running.len() >= PARALLEL || started.contains(step.id.as_str()) {
                    continue;
                }
                let r = graph.get(&step.id).expect("planned steps come from the graph");
                let ready = r.depends_on.iter().all(|d| !pending_ids.contains(d.as_str()) || done.contains(d));
                if !ready {
                    continue;
                }
                started.insert(&step.id);
                running.push(run_step(provider, r, &step.action, health_timeout, progress));
            }
        }
        // Nothing running: everything is done, or a failure stopped new starts.
        let Some((id, result)) = running.next().await else { break };
        match result {
            Ok(applied) => {
                notes.extend(applied.note.map(|n| format!("{id}: {n}")));
                let r = graph.get(&id).expect("from the graph").clone();
                state.resources.insert(id.clone(), r);
                if applied.outputs.is_empty() {
                    state.outputs.remove(&id);
                } else {
                    state.outputs.insert(id.clone(), applied.outputs);
                }
                if let Err(e) = home.save(state) {
                    failure.get_or_insert(e);
                }
                done.insert(id);
            }
            Err(e) => {
                progress.failed(&id);
                failure.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    destroy(provider, home, state, plan.steps.iter().filter(|s| s.action == Action::Destroy && s.last), progress).await?;
    Ok(Outcome { notes })
}

/// Destroys `steps` one after another, in the plan's order, saving the state after each.
async fn destroy<'a>(
    provider: &dyn Provider,
    home: &Home,
    state: &mut State,
    steps: impl Iterator<Item = &'a Step>,
    progress: &Progress,
) -> Result<()> {
    for step in steps {
        let Some(r) = state.resources.get(&step.id).cloned() else { continue };
        let t = progress.start(&step.id, "destroying");
        provider.destroy(&r, false).await.map_err(|e| anyhow!("destroying {}: {e}", r.id))?;
        state.resources.remove(&step.id);
        state.outputs.remove(&step.id);
        home.save(state)?;
        progress.done(&step.id, "destroyed", t);
    }
    Ok(())
}

/// One step: apply `r` (retrying transient failures), then wait until it is ready.
async fn run_step(
    provider: &dyn Provider,
    r: &Resource,
    action: &Action,
    health_timeout: Duration,
    progress: &Progress,
) -> (String, Result<Applied>) {
    let (doing, did) = verb(action);
    let t = progress.start(&r.id, doing);
    let result = async {
        let applied = apply_with_retries(provider, r, action, Instant::now() + health_timeout, progress).await?;
        wait_ready(provider, r, health_timeout, progress).await?;
        Ok::<_, ProviderError>(applied)
    }
    .await
    .map_err(|e| anyhow!("{doing} {}: {e}", r.id));
    if result.is_ok() {
        progress.done(&r.id, did, t);
    }
    (r.id.clone(), result)
}

/// First wait before retrying a transient failure; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Applies `r`, retrying a transient failure (see `ErrorKind`) with backoff for as long
/// as `deadline` allows; any other failure ends the step at once.
async fn apply_with_retries(
    provider: &dyn Provider,
    r: &Resource,
    action: &Action,
    deadline: Instant,
    progress: &Progress,
) -> Result<Applied, ProviderError> {
    let mut wait = FIRST_BACKOFF;
    loop {
        match provider.apply(r, action).await {
            Err(e) if e.is_transient() && Instant::now() + wait < deadline => {
                progress.say(&format!("  {}: {e}; retrying in {:.1} s", r.id, wait.as_secs_f64()));
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            other => return other,
        }
    }
}

/// Polls `r`'s readiness with backoff (50 ms doubling to 1 s) until it is ready, fails,
/// or its deadline passes: the provider's own for this resource, else `default`. A wait
/// past a few seconds says what it is waiting for, once per new reason.
pub async fn wait_ready(provider: &dyn Provider, r: &Resource, default: Duration, progress: &Progress) -> Result<(), ProviderError> {
    let started = Instant::now();
    let deadline = started + provider.ready_within(r).unwrap_or(default);
    let mut wait = Duration::from_millis(50);
    let mut told = String::new();
    loop {
        let why = match provider.readiness(r).await {
            Readiness::Ready => return Ok(()),
            Readiness::Failed(why) => return Err(ProviderError::new(ErrorKind::Failed, why)),
            Readiness::Pending(why) => why,
        };
        if Instant::now() >= deadline {
            let waited = started.elapsed().as_secs();
            return Err(ProviderError::new(
                ErrorKind::Failed,
                format!("{} is not ready after {waited} s ({why}); see `scalectl logs {}`", r.id, r.id),
            ));
        }
        if started.elapsed() >= SAY_WAITING_AFTER && why != told {
            progress.say(&format!("  {}: waiting: {why}", r.id));
            told = why;
        }
        tokio::time::sleep(wait.min(deadline.saturating_duration_since(Instant::now()))).await;
        wait = (wait * 2).min(Duration::from_secs(1));
    }
}

/// How long a resource may be pending before its wait is reported.
const SAY_WAITING_AFTER: Duration = Duration::from_secs(5);

fn verb(action: &Action) -> (&'static str, &'static str) {
    match action {
        Action::Create => ("creating", "created"),
        Action::Update => ("updating", "updated"),
        Action::Start => ("starting", "started"),
        Action::Rerun => ("re-running", "done"),
        Action::Destroy => ("destroying", "destroyed"),
        Action::Keep => ("keeping", "kept"),
    }
}

#[cfg(test)]
mod tests {
    //! The engine against a fake provider that records every call and fails where a
    //! test scripts it to.

    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Mutex;

    use scalectl_core::plan::{Observed, plan};
    use scalectl_core::{Call, Check, ErrorKind, ResourceKind, Sources, Target};

    use super::*;

    /// Records `start id` / `end id` around each apply; `script` says how the next
    /// applies of a resource end (Ok once the list is empty).
    struct FakeProvider {
        log: Mutex<Vec<String>>,
        script: Mutex<BTreeMap<String, VecDeque<ErrorKind>>>,
        /// How many readiness polls say "pending" before "ready", by id.
        pending: Mutex<BTreeMap<String, u32>>,
        step_time: Duration,
    }

    impl FakeProvider {
        fn new(step_time: Duration) -> Self {
            FakeProvider { log: Mutex::new(Vec::new()), script: Mutex::new(BTreeMap::new()), pending: Mutex::new(BTreeMap::new()), step_time }
        }

        fn fail(&self, id: &str, kinds: &[ErrorKind]) {
            self.script.lock().unwrap().insert(id.to_string(), kinds.iter().copied().collect());
        }

        fn log(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }

        fn applies(&self, id: &str) -> usize {
            self.log().iter().filter(|l| *l == &format!("start {id}")).count()
        }
    }

    impl Provider for FakeProvider {
        fn target(&self) -> Target {
            Target::Local
        }
        fn supports(&self, _: ResourceKind) -> bool {
            true
        }
        fn observe(&self, _: &Resource) -> Observed {
            Observed::Running { pid: None }
        }
        fn apply<'a>(&'a self, r: &'a Resource, _: &'a Action) -> Call<'a, Applied> {
            Box::pin(async move {
                self.log.lock().unwrap().push(format!("start {}", r.id));
                tokio::time::sleep(self.step_time).await;
                let scripted = self.script.lock().unwrap().get_mut(&r.id).and_then(VecDeque::pop_front);
                self.log.lock().unwrap().push(format!("end {}", r.id));
                match scripted {
                    Some(kind) => Err(ProviderError::new(kind, format!("{} failed as scripted ({kind:?})", r.id))),
                    None => Ok(Applied { note: None, outputs: [("endpoint".to_string(), format!("{}:1", r.id))].into() }),
                }
            })
        }
        fn readiness<'a>(&'a self, r: &'a Resource) -> Check<'a> {
            let mut pending = self.pending.lock().unwrap();
            let answer = match pending.get_mut(&r.id) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    Readiness::Pending(format!("{} polls to go", *n + 1))
                }
                Some(_) if r.id == "never" => Readiness::Failed("never became ready".into()),
                _ => Readiness::Ready,
            };
            Box::pin(async move { answer })
        }
        fn destroy<'a>(&'a self, r: &'a Resource, _: bool) -> Call<'a, ()> {
            self.log.lock().unwrap().push(format!("destroy {}", r.id));
            Box::pin(async { Ok(()) })
        }
        fn logs(&self, _: &Resource, _: usize) -> Result<String, ProviderError> {
            Ok(String::new())
        }
        fn config_files(&self, _: &Resource) -> Result<Vec<(String, String)>, ProviderError> {
            Ok(Vec::new())
        }
    }

    fn res(id: &str, deps: &[&str]) -> Resource {
        Resource {
            id: id.into(),
            kind: ResourceKind::Shop,
            digests: BTreeMap::new(),
            region: "r1".into(),
            address: None,
            port: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            spec: Default::default(),
        }
    }

    /// a → {b, c, d} → e: three steps that may run at once between two that may not.
    fn diamond() -> Graph {
        Graph::new(vec![res("a", &[]), res("b", &["a"]), res("c", &["a"]), res("d", &["a"]), res("e", &["b", "c", "d"])]).unwrap()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        home: Home,
        state: State,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::new(dir.path().to_path_buf());
        let l = scalectl_core::levels::level(1).unwrap();
        let manifest = Sources::new(l.file, l.manifest).load().unwrap();
        std::fs::create_dir_all(home.env_dir("fake")).unwrap();
        Fixture { _dir: dir, home, state: State::new("fake", Target::Local, 0, manifest) }
    }

    fn run(p: &FakeProvider, f: &mut Fixture, graph: &Graph) -> Result<Outcome> {
        let observed = f.state.resources.keys().map(|id| (id.clone(), Observed::Running { pid: None })).collect();
        let steps = plan(graph, &f.state.resources, &observed);
        block_on(execute(p, &f.home, &mut f.state, graph, &steps, Duration::from_secs(10), &Progress::new(true)))?
    }

    fn position(log: &[String], line: &str) -> usize {
        log.iter().position(|l| l == line).unwrap_or_else(|| panic!("no `{line}` in {log:?}"))
    }

    #[test]
    fn each_step_starts_after_its_dependencies_end_and_independent_ones_overlap() {
        let p = FakeProvider::new(Duration::from_millis(50));
        let mut f = fixture();
        let g = diamond();
        run(&p, &mut f, &g).unwrap();
        let log = p.log();
        for r in &g.resources {
            for d in &r.depends_on {
                assert!(position(&log, &format!("end {d}")) < position(&log, &format!("start {}", r.id)), "{} before {d}: {log:?}", r.id);
            }
        }
        let (mut running, mut most) = (0, 0);
        for line in &log {
            running = if line.starts_with("start") { running + 1 } else { running - 1 };
            most = most.max(running);
        }
        assert_eq!(most, 3, "b, c and d run at once, no more: {log:?}");
        assert_eq!(f.state.resources.len(), 5);
        assert_eq!(f.state.outputs["e"]["endpoint"], "e:1", "outputs are recorded");
        let saved = f.home.load("fake").unwrap().unwrap();
        assert_eq!(saved.resources.len(), 5, "and saved");
    }

    #[test]
    fn no_more_than_parallel_steps_run_at_once() {
        let p = FakeProvider::new(Duration::from_millis(30));
        let mut f = fixture();
        let ids: Vec<String> = (0..PARALLEL * 2 + 1).map(|i| format!("s{i}")).collect();
        let g = Graph::new(ids.iter().map(|id| res(id, &[])).collect()).unwrap();
        run(&p, &mut f, &g).unwrap();
        let (mut running, mut most) = (0, 0);
        for line in p.log() {
            running = if line.starts_with("start") { running + 1 } else { running - 1 };
            most = most.max(running);
        }
        assert_eq!(most, PARALLEL, "{} independent steps run {PARALLEL} at a time", ids.len());
        assert_eq!(f.state.resources.len(), ids.len());
    }

    #[test]
    fn a_failure_stops_its_dependents_and_keeps_what_finished() {
        let p = FakeProvider::new(Duration::from_millis(10));
        p.fail("c", &[ErrorKind::Failed]);
        let mut f = fixture();
        let err = run(&p, &mut f, &diamond()).unwrap_err().to_string();
        assert!(err.contains("creating c: c failed as scripted"), "{err}");
        assert_eq!(p.applies("e"), 0, "e depends on c");
        assert_eq!(p.applies("c"), 1, "a failure that is not transient is not retried");
        let recorded: Vec<&str> = f.state.resources.keys().map(String::as_str).collect();
        assert_eq!(recorded, ["a", "b", "d"]);
    }

    #[test]
    fn a_transient_failure_is_retried_and_a_conflict_is_not() {
        let p = FakeProvider::new(Duration::ZERO);
        p.fail("b", &[ErrorKind::Transient, ErrorKind::Transient]);
        let mut f = fixture();
        run(&p, &mut f, &diamond()).unwrap();
        assert_eq!(p.applies("b"), 3, "two transient failures, then success");

        let p = FakeProvider::new(Duration::ZERO);
        p.fail("b", &[ErrorKind::Conflict]);
        let mut f = fixture();
        assert!(run(&p, &mut f, &diamond()).is_err());
        assert_eq!(p.applies("b"), 1);
    }

    #[test]
    fn readiness_is_polled_until_ready_and_a_failure_or_deadline_ends_the_wait() {
        let p = FakeProvider::new(Duration::ZERO);
        p.pending.lock().unwrap().insert("a".into(), 3);
        let quiet = Progress::new(true);
        let started = Instant::now();
        block_on(wait_ready(&p, &res("a", &[]), Duration::from_secs(10), &quiet)).unwrap().unwrap();
        assert_eq!(p.pending.lock().unwrap()["a"], 0, "polled until ready");
        assert!(started.elapsed() < Duration::from_secs(2), "with a short backoff: {:?}", started.elapsed());

        p.pending.lock().unwrap().insert("slow".into(), u32::MAX);
        let e = block_on(wait_ready(&p, &res("slow", &[]), Duration::from_millis(300), &quiet)).unwrap().unwrap_err();
        assert!(e.message.starts_with("slow is not ready after 0 s (") && e.message.contains("polls to go"), "{e}");

        p.pending.lock().unwrap().insert("never".into(), 0);
        let e = block_on(wait_ready(&p, &res("never", &[]), Duration::from_secs(10), &quiet)).unwrap().unwrap_err();
        assert_eq!(e.message, "never became ready", "a failure ends the wait at once");
    }

    #[test]
    fn a_replaced_process_serves_until_its_replacement_is_ready_and_stays_if_that_fails() {
        let old = Graph::new(vec![res("a", &[]), res("old", &["a"])]).unwrap();
        let new = Graph::new(vec![res("a", &[]), res("new-1", &["a"]), res("new-2", &["new-1"])]).unwrap();
        let p = FakeProvider::new(Duration::ZERO);
        let mut f = fixture();
        run(&p, &mut f, &old).unwrap();
        p.fail("new-2", &[ErrorKind::Failed]);
        assert!(run(&p, &mut f, &new).is_err());
        assert!(!p.log().contains(&"destroy old".to_string()), "the old process still serves: {:?}", p.log());
        assert!(f.state.resources.contains_key("old"));

        run(&p, &mut f, &new).unwrap();
        let log = p.log();
        assert!(position(&log, "end new-2") < position(&log, "destroy old"), "{log:?}");
        assert_eq!(f.state.resources.keys().map(String::as_str).collect::<Vec<_>>(), ["a", "new-1", "new-2"]);
    }

    #[test]
    fn a_run_killed_at_any_step_is_finished_by_the_next_without_redoing_what_was_done() {
        let g = diamond();
        for (k, victim) in g.resources.iter().map(|r| r.id.clone()).enumerate() {
            // The step that was running when the process died never reported success:
            // it failed, and everything recorded before it stays recorded.
            let first = FakeProvider::new(Duration::ZERO);
            first.fail(&victim, &[ErrorKind::Failed]);
            let mut f = fixture();
            assert!(run(&first, &mut f, &g).is_err(), "kill at step {k}");
            let done_before: Vec<String> = f.state.resources.keys().cloned().collect();
            assert!(!done_before.contains(&victim));

            let second = FakeProvider::new(Duration::ZERO);
            run(&second, &mut f, &g).unwrap();
            assert_eq!(f.state.resources.len(), g.resources.len(), "kill at {victim}: everything exists after the resume");
            for id in &done_before {
                assert_eq!(second.applies(id), 0, "kill at {victim}: {id} was done and is not redone");
            }
            assert_eq!(second.applies(&victim), 1, "kill at {victim}: it is done again");
        }
    }
}
