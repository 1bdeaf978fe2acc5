//! Carrying out a plan: destroys first, then every other step in parallel along the
//! dependency graph, each resource waited on until healthy before its dependents start,
//! and the state saved after every step so that a killed `up` resumes where it stopped.

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use scalectl_core::plan::{Action, Plan};
use scalectl_core::{Graph, Provider};

use crate::home::{Home, State};
use crate::output::Progress;

/// How many steps run at once; the machine has few cores and most steps wait on I/O.
const PARALLEL: usize = 4;

pub struct Outcome {
    /// Notes from providers worth showing (an optional part skipped, say).
    pub notes: Vec<String>,
}

pub fn execute(
    provider: &dyn Provider,
    home: &Home,
    state: &mut State,
    graph: &Graph,
    plan: &Plan,
    health_timeout: Duration,
    progress: &Progress,
) -> Result<Outcome> {
    let mut notes = Vec::new();
    for step in plan.steps.iter().filter(|s| s.action == Action::Destroy) {
        let Some(r) = state.resources.get(&step.id).cloned() else { continue };
        let t = progress.start(&step.id, "destroying");
        provider.destroy(&r, false).map_err(|e| anyhow!("destroying {}: {e}", r.id))?;
        state.resources.remove(&step.id);
        home.save(state)?;
        progress.done(&step.id, "destroyed", t);
    }

    let todo: Vec<_> = plan.steps.iter().filter(|s| !matches!(s.action, Action::Keep | Action::Destroy)).collect();
    let pending_ids: BTreeSet<&str> = todo.iter().map(|s| s.id.as_str()).collect();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut started: BTreeSet<String> = BTreeSet::new();
    let mut failure: Option<anyhow::Error> = None;

    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(String, Result<Option<String>>)>();
        let mut running = 0usize;
        loop {
            if failure.is_none() {
                for step in &todo {
                    if running >= PARALLEL || started.contains(&step.id) {
                        continue;
                    }
                    let r = graph.get(&step.id).expect("planned steps come from the graph");
                    let ready = r.depends_on.iter().all(|d| !pending_ids.contains(d.as_str()) || done.contains(d));
                    if !ready {
                        continue;
                    }
                    started.insert(step.id.clone());
                    running += 1;
                    let tx = tx.clone();
                    let verb = verb(&step.action);
                    let t = progress.start(&step.id, verb.0);
                    let action = step.action.clone();
                    scope.spawn(move || {
                        let result = provider
                            .apply(r, &action)
                            .and_then(|note| provider.wait_healthy(r, Instant::now() + health_timeout).map(|()| note))
                            .map_err(|e| anyhow!("{} {}: {e}", verb.0, r.id));
                        if result.is_ok() {
                            progress.done(&r.id, verb.1, t);
                        }
                        let _ = tx.send((r.id.clone(), result));
                    });
                }
            }
            if running == 0 {
                break;
            }
            let (id, result) = rx.recv().expect("a step always reports");
            running -= 1;
            match result {
                Ok(note) => {
                    notes.extend(note.map(|n| format!("{id}: {n}")));
                    let r = graph.get(&id).expect("from the graph").clone();
                    state.resources.insert(id.clone(), r);
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
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(Outcome { notes }),
    }
}

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
