//! System test: a database cluster that spans three regions (level 6) keeps its
//! consensus store when it loses its home region. The three etcd members `expand` gives
//! level 6 are started as real etcd processes on the environment's loopback addresses;
//! the home region's member is destroyed, and the other two still have a quorum. Losing
//! a second one loses it, which shows the check can fail.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use scalectl_core::levels::level;
use scalectl_core::{Graph, Readiness, Resource, ResourceKind, Sources, Topology};
use scalectl_local::{Env, LocalProvider, Placement, etcd, expand, slots};

/// Destroys every member and releases the slot, pass or fail.
struct Members {
    provider: LocalProvider,
    members: Vec<Resource>,
    slot: u8,
    dir: tempfile::TempDir,
}

impl Drop for Members {
    fn drop(&mut self) {
        for r in &self.members {
            let _ = etcd::destroy(self.provider.env(), r, false);
        }
        slots::release(self.slot, self.dir.path());
    }
}

fn healthy(env: &Env, r: &Resource) -> bool {
    etcd::readiness(env, r).unwrap() == Readiness::Ready
}

fn within(limit: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_cluster_spanning_three_regions_keeps_its_consensus_store_without_its_home_region() {
    if scalectl_local::tools::find("etcd").is_none() {
        eprintln!("skipped: etcd is not installed (apt-get install etcd-server)");
        return;
    }
    let dir = tempfile::Builder::new().prefix("scalectl-etcd-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let slot = slots::claim(dir.path()).unwrap();
    let l = level(6).unwrap();
    let manifest = Sources::new(l.file, l.manifest).load().unwrap();
    let placement = Placement { slot };
    let all = expand(&Topology::from_manifest(&manifest), placement).unwrap();
    let members: Vec<Resource> = all.resources.iter().filter(|r| r.kind == ResourceKind::Etcd).cloned().collect();
    let regions: Vec<&str> = members.iter().map(|r| r.region.as_str()).collect();
    assert_eq!(regions, ["r1", "r2", "r3"], "one member in each region the cluster spans");
    let graph = Graph::new(members.clone()).unwrap();
    let provider = LocalProvider::new("etcd-regions", dir.path(), placement, graph).unwrap();
    let m = Members { provider, members, slot, dir };
    let env = m.provider.env();

    // All three start together, as `up` starts them: none is healthy before a majority runs.
    std::thread::scope(|s| {
        for r in &m.members {
            s.spawn(move || etcd::apply(env, r).unwrap());
        }
    });
    within(Duration::from_secs(60), "all three members healthy", || m.members.iter().all(|r| healthy(env, r)));

    etcd::destroy(env, &m.members[0], false).unwrap();
    within(Duration::from_secs(30), "a quorum of two without the home region", || m.members[1..].iter().all(|r| healthy(env, r)));
    // Still healthy a while later: not a member that has yet to notice.
    std::thread::sleep(Duration::from_secs(3));
    assert!(m.members[1..].iter().all(|r| healthy(env, r)), "the two members outside the home region keep a quorum");

    etcd::destroy(env, &m.members[1], false).unwrap();
    within(Duration::from_secs(30), "no quorum with one member of three", || !healthy(env, &m.members[2]));
}
