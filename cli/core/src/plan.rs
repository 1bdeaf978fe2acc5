//! `plan`: the desired graph against the recorded state and what is actually running,
//! giving ordered steps with the reason for each, the way a Terraform user reads them.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::graph::{Graph, Resource, ResourceKind};

/// What a provider saw of a resource just now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Observed {
    /// Running and answering.
    Running { pid: Option<u32> },
    /// Not running (or not answering), with why.
    Down { reason: String },
    /// Running, but changed outside scalectl since it was applied (someone's `kubectl
    /// edit`): these fields differ from the definition, which `up` puts back.
    Drifted { changes: Vec<Change> },
    /// Nothing to observe (one-shot tasks, or the provider cannot tell).
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub field: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Create,
    Update,
    /// Same definition, but not running: start it again.
    Start,
    /// A one-shot task re-run because something it depends on changes.
    Rerun,
    Destroy,
    Keep,
}

impl Action {
    /// The sign a Terraform user expects in front of the resource.
    pub fn sign(&self) -> &'static str {
        match self {
            Action::Create => "+",
            Action::Update | Action::Start | Action::Rerun => "~",
            Action::Destroy => "-",
            Action::Keep => " ",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub id: String,
    pub kind: ResourceKind,
    pub action: Action,
    pub reason: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// A destroy carried out after every other step has succeeded and is ready (see
    /// [`ResourceKind::removed_last`]) rather than before them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub last: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Destroys first (dependents before what they depend on), then everything else in
    /// dependency order, then the destroys marked `last`.
    pub steps: Vec<Step>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub create: usize,
    pub change: usize,
    pub destroy: usize,
    pub unchanged: usize,
}

impl Plan {
    pub fn has_changes(&self) -> bool {
        self.steps.iter().any(|s| s.action != Action::Keep)
    }

    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for step in &self.steps {
            match step.action {
                Action::Create => s.create += 1,
                Action::Update | Action::Start | Action::Rerun => s.change += 1,
                Action::Destroy => s.destroy += 1,
                Action::Keep => s.unchanged += 1,
            }
        }
        s
    }

    pub fn step(&self, id: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// Compares what should exist with what was recorded and what is running.
pub fn plan(desired: &Graph, recorded: &BTreeMap<String, Resource>, observed: &BTreeMap<String, Observed>) -> Plan {
    let mut steps = Vec::new();
    // Destroy what is no longer wanted, dependents first.
    let mut gone: Vec<&Resource> = recorded.values().filter(|r| desired.get(&r.id).is_none()).collect();
    let old_graph = Graph::new(recorded.values().cloned().collect()).ok();
    if let Some(g) = &old_graph {
        let order: BTreeMap<&str, usize> = g.resources.iter().enumerate().map(|(i, r)| (r.id.as_str(), i)).collect();
        gone.sort_by_key(|r| std::cmp::Reverse(order.get(r.id.as_str()).copied().unwrap_or(0)));
    }
    // A process that serves goes after its replacement is ready, unless that would
    // start something on the address it still holds, or what it needs goes too.
    let wanted_endpoints: BTreeSet<String> = desired.resources.iter().filter_map(Resource::endpoint).collect();
    // (`gone` lists dependents first, so its reverse decides each dependency before
    // the resources that need it.)
    let gone_ids: BTreeSet<&str> = gone.iter().map(|r| r.id.as_str()).collect();
    let mut late_ids: BTreeSet<&str> = BTreeSet::new();
    for r in gone.iter().rev() {
        if r.kind.removed_last()
            && r.endpoint().is_none_or(|e| !wanted_endpoints.contains(&e))
            && r.depends_on.iter().all(|d| !gone_ids.contains(d.as_str()) || late_ids.contains(d.as_str()))
        {
            late_ids.insert(&r.id);
        }
    }
    let (late, early): (Vec<&Resource>, Vec<&Resource>) = gone.into_iter().partition(|r| late_ids.contains(r.id.as_str()));
    for r in early {
        steps.push(Step {
            id: r.id.clone(),
            kind: r.kind,
            action: Action::Destroy,
            reason: "no longer in the manifest".into(),
            changes: vec![],
            last: false,
        });
    }

    let mut touched: BTreeSet<String> = BTreeSet::new();
    for want in &desired.resources {
        let seen = observed.get(&want.id).cloned().unwrap_or(Observed::Unknown);
        let (action, reason, changes) = match recorded.get(&want.id) {
            None => match seen {
                Observed::Running { .. } => (Action::Create, "running but not recorded in state; will adopt".to_string(), vec![]),
                _ => (Action::Create, "not in state".to_string(), vec![]),
            },
            Some(had) => {
                let changes = diff(had, want);
                if !changes.is_empty() {
                    let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
                    (Action::Update, format!("{} changed", fields.join(", ")), changes)
                } else if let Observed::Down { reason } = seen {
                    (Action::Start, reason, vec![])
                } else if let Observed::Drifted { changes } = seen {
                    let fields: Vec<&str> = changes.iter().map(|c| c.field.as_str()).collect();
                    (Action::Update, format!("changed outside scalectl: {}", fields.join(", ")), changes)
                } else if want.kind.one_shot()
                    && let Some(dep) = want.depends_on.iter().find(|d| touched.contains(*d))
                {
                    (Action::Rerun, format!("{dep} changes"), vec![])
                } else {
                    (Action::Keep, String::new(), vec![])
                }
            }
        };
        if action != Action::Keep {
            touched.insert(want.id.clone());
        }
        steps.push(Step { id: want.id.clone(), kind: want.kind, action, reason, changes, last: false });
    }
    for r in late {
        let reason = "no longer in the manifest; serves until everything else is ready".to_string();
        steps.push(Step { id: r.id.clone(), kind: r.kind, action: Action::Destroy, reason, changes: vec![], last: true });
    }
    Plan { steps }
}

fn diff(had: &Resource, want: &Resource) -> Vec<Change> {
    let mut out = Vec::new();
    let mut field = |name: &str, a: Option<String>, b: Option<String>| {
        if a != b {
            out.push(Change { field: name.to_string(), from: a, to: b });
        }
    };
    field("kind", Some(had.kind.to_string()), Some(want.kind.to_string()));
    field("address", had.address.map(|a| a.to_string()), want.address.map(|a| a.to_string()));
    field("port", had.port.map(|p| p.to_string()), want.port.map(|p| p.to_string()));
    field("depends_on", Some(had.depends_on.join(",")), Some(want.depends_on.join(",")));
    for (had, want) in [(&had.spec.leaves(), &want.spec.leaves()), (&had.digests, &want.digests)] {
        let keys: BTreeSet<&String> = had.keys().chain(want.keys()).collect();
        for k in keys {
            field(k, had.get(k).cloned(), want.get(k).cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(id: &str, kind: ResourceKind, deps: &[&str], props: &[(&str, &str)]) -> Resource {
        Resource {
            id: id.into(),
            kind,
            digests: BTreeMap::new(),
            region: "r1".into(),
            address: None,
            port: None,
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            spec: props.iter().copied().collect(),
        }
    }

    fn graph() -> Graph {
        Graph::new(vec![
            res("postgres/a", ResourceKind::Postgres, &[], &[("max_connections", "100")]),
            res("database/shop", ResourceKind::Database, &["postgres/a"], &[]),
            res("shop/1", ResourceKind::Shop, &["database/shop"], &[]),
        ])
        .unwrap()
    }

    fn recorded(g: &Graph) -> BTreeMap<String, Resource> {
        g.resources.iter().map(|r| (r.id.clone(), r.clone())).collect()
    }

    fn running(g: &Graph) -> BTreeMap<String, Observed> {
        g.resources.iter().map(|r| (r.id.clone(), Observed::Running { pid: Some(1) })).collect()
    }

    #[test]
    fn fresh_environment_creates_everything_in_order() {
        let g = graph();
        let p = plan(&g, &BTreeMap::new(), &BTreeMap::new());
        let ids: Vec<_> = p.steps.iter().map(|s| (s.id.as_str(), s.action.clone())).collect();
        assert_eq!(ids, [("postgres/a", Action::Create), ("database/shop", Action::Create), ("shop/1", Action::Create)]);
        assert_eq!(p.summary().create, 3);
    }

    #[test]
    fn converged_environment_has_no_changes() {
        let g = graph();
        let p = plan(&g, &recorded(&g), &running(&g));
        assert!(!p.has_changes(), "{p:?}");
    }

    #[test]
    fn a_changed_setting_names_the_field_and_reruns_one_shot_dependents() {
        let g = graph();
        let rec = recorded(&g);
        let mut want = g.clone();
        want.resources[0].spec = [("max_connections", "200")].into_iter().collect();
        let p = plan(&want, &rec, &running(&g));
        let pg = p.step("postgres/a").unwrap();
        assert_eq!(pg.action, Action::Update);
        assert_eq!(pg.changes, vec![Change { field: "max_connections".into(), from: Some("100".into()), to: Some("200".into()) }]);
        assert_eq!(p.step("database/shop").unwrap().action, Action::Rerun);
        assert_eq!(p.step("shop/1").unwrap().action, Action::Keep, "a process is not restarted for its dependency");
    }

    #[test]
    fn a_new_config_or_program_digest_is_a_named_change() {
        let g = graph();
        let mut rec = recorded(&g);
        rec.get_mut("shop/1").unwrap().digests.insert("program_digest".into(), "old".into());
        let mut want = g.clone();
        want.resources[2].digests.insert("program_digest".into(), "new".into());
        let p = plan(&want, &rec, &running(&g));
        let s = p.step("shop/1").unwrap();
        assert_eq!(s.action, Action::Update);
        assert_eq!(s.changes, vec![Change { field: "program_digest".into(), from: Some("old".into()), to: Some("new".into()) }]);
    }

    #[test]
    fn a_dead_process_is_started_again_with_the_reason() {
        let g = graph();
        let mut obs = running(&g);
        obs.insert("shop/1".into(), Observed::Down { reason: "process 42 is gone".into() });
        let p = plan(&g, &recorded(&g), &obs);
        let s = p.step("shop/1").unwrap();
        assert_eq!((s.action.clone(), s.reason.as_str()), (Action::Start, "process 42 is gone"));
    }

    #[test]
    fn removed_resources_are_destroyed_dependents_first() {
        let g = graph();
        let rec = recorded(&g);
        let smaller = Graph::new(vec![g.resources[0].clone()]).unwrap();
        let p = plan(&smaller, &rec, &running(&g));
        let destroys: Vec<_> = p.steps.iter().filter(|s| s.action == Action::Destroy).map(|s| s.id.as_str()).collect();
        assert_eq!(destroys, ["shop/1", "database/shop"]);
        assert_eq!(p.steps[0].action, Action::Destroy, "destroys come first");
        assert!(p.steps.iter().all(|s| !s.last), "nothing replaces the shop here, and its database goes first");
    }

    #[test]
    fn a_replaced_shop_serves_until_the_rest_is_ready_unless_its_address_is_taken() {
        let mut g = graph();
        g.resources[2].address = Some([127, 0, 0, 100].into());
        g.resources[2].port = Some(8080);
        g.resources.push(res("shop/2", ResourceKind::Shop, &["shop/1"], &[]));
        let g = Graph::new(g.resources).unwrap();
        let rec = recorded(&g);
        let mut pools = graph();
        pools.resources[2].id = "shop/auth-1".into();
        pools.resources[2].address = Some([127, 0, 0, 125].into());
        pools.resources[2].port = Some(8080);
        let p = plan(&pools, &rec, &running(&g));
        let late: Vec<_> = p.steps.iter().filter(|s| s.last).map(|s| (s.id.as_str(), &s.action)).collect();
        assert_eq!(late, [("shop/2", &Action::Destroy), ("shop/1", &Action::Destroy)], "{p:?}");
        assert_eq!(p.steps[0].id, "postgres/a", "nothing is destroyed before the new pool starts");

        pools.resources[2].address = Some([127, 0, 0, 100].into());
        let p = plan(&pools, &rec, &running(&g));
        let early: Vec<_> = p.steps.iter().take(2).map(|s| (s.id.as_str(), s.last)).collect();
        assert_eq!(early, [("shop/2", false), ("shop/1", false)], "shop/1 frees its address first, and shop/2 needs it: {p:?}");
    }
}
