//! Whether a live object is ready, judged the way `kubectl rollout status` and
//! `kubectl wait` judge it, with the reason when it is not: the engine shows the reason
//! while it waits and in the error when the deadline passes.

use scalectl_core::Readiness;
use serde_json::Value;

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// The message of the condition of `kind` whose status is `status`, if there is one.
fn condition<'a>(o: &'a Value, kind: &str, status: &str) -> Option<&'a Value> {
    o["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind && c["status"] == status)
}

fn why(c: &Value) -> String {
    let reason = c["reason"].as_str().unwrap_or_default();
    let message = c["message"].as_str().unwrap_or_default();
    match (reason.is_empty(), message.is_empty()) {
        (false, false) => format!("{reason}: {message}"),
        (false, true) => reason.to_string(),
        _ => message.to_string(),
    }
}

/// Readiness of a live object.
pub fn of(o: &Value) -> Readiness {
    match o["kind"].as_str().unwrap_or_default() {
        "Deployment" => deployment(o),
        "Job" => job(o),
        "Cluster" => cluster(o),
        "Namespace" => match o["status"]["phase"].as_str() {
            Some("Active") | None => Readiness::Ready,
            Some(other) => Readiness::Pending(format!("namespace is {other}")),
        },
        _ => Readiness::Ready,
    }
}

/// A rollout is done when the controller has seen the newest spec and every wanted pod
/// runs it and is available (kubectl's rollout status).
fn deployment(o: &Value) -> Readiness {
    let s = &o["status"];
    // Status about an older spec says nothing about this one (kubectl checks it first too).
    if int(&s["observedGeneration"]) < int(&o["metadata"]["generation"]) {
        return Readiness::Pending("the rollout has not started yet".into());
    }
    if let Some(c) = condition(o, "Progressing", "False")
        && c["reason"] == "ProgressDeadlineExceeded"
    {
        return Readiness::Failed(format!("the rollout stopped progressing ({})", why(c)));
    }
    let wanted = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let (updated, available) = (int(&s["updatedReplicas"]), int(&s["availableReplicas"]));
    if updated < wanted {
        return Readiness::Pending(format!("{updated} of {wanted} pods updated"));
    }
    if int(&s["replicas"]) > updated {
        return Readiness::Pending(format!("{} old pods still terminating", int(&s["replicas"]) - updated));
    }
    if available < wanted {
        let cause = condition(o, "Available", "False").map(|c| format!(" ({})", why(c))).unwrap_or_default();
        return Readiness::Pending(format!("{available} of {wanted} pods available{cause}"));
    }
    Readiness::Ready
}

fn job(o: &Value) -> Readiness {
    if let Some(c) = condition(o, "Failed", "True") {
        return Readiness::Failed(format!("the job failed ({})", why(c)));
    }
    if int(&o["status"]["succeeded"]) >= 1 || condition(o, "Complete", "True").is_some() {
        return Readiness::Ready;
    }
    Readiness::Pending(format!("running ({} failed attempts so far)", int(&o["status"]["failed"])))
}

/// CloudNativePG: every instance ready and the operator calling the cluster healthy.
fn cluster(o: &Value) -> Readiness {
    let wanted = int(&o["spec"]["instances"]);
    let ready = int(&o["status"]["readyInstances"]);
    let phase = o["status"]["phase"].as_str().unwrap_or("not reported yet");
    if ready >= wanted && phase == "Cluster in healthy state" {
        return Readiness::Ready;
    }
    Readiness::Pending(format!("{ready} of {wanted} instances ready; phase: {phase}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_deployment_is_ready_when_its_newest_pods_are_all_available() {
        let mut d = json!({"kind": "Deployment", "metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}});
        assert_eq!(of(&d), Readiness::Pending("the rollout has not started yet".into()));
        d["status"]["observedGeneration"] = json!(2);
        d["status"]["updatedReplicas"] = json!(1);
        assert_eq!(of(&d), Readiness::Pending("1 of 3 pods updated".into()));
        d["status"]["updatedReplicas"] = json!(3);
        d["status"]["availableReplicas"] = json!(2);
        d["status"]["conditions"] = json!([{"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"}]);
        assert_eq!(of(&d), Readiness::Pending("2 of 3 pods available (MinimumReplicasUnavailable)".into()));
        d["status"]["availableReplicas"] = json!(3);
        assert_eq!(of(&d), Readiness::Ready);
        d["status"]["conditions"] = json!([{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]);
        assert!(matches!(of(&d), Readiness::Failed(why) if why.contains("ProgressDeadlineExceeded")));
    }

    #[test]
    fn a_job_is_ready_once_it_succeeded_and_failed_for_good_when_it_says_so() {
        assert!(matches!(of(&json!({"kind": "Job", "status": {"active": 1}})), Readiness::Pending(_)));
        assert_eq!(of(&json!({"kind": "Job", "status": {"succeeded": 1}})), Readiness::Ready);
        let failed = json!({"kind": "Job", "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}});
        assert!(matches!(of(&failed), Readiness::Failed(why) if why.contains("BackoffLimitExceeded")));
    }

    #[test]
    fn a_cluster_is_ready_when_every_instance_is_and_the_operator_agrees() {
        let mut c = json!({"kind": "Cluster", "spec": {"instances": 3}, "status": {"readyInstances": 2, "phase": "Creating replica"}});
        assert_eq!(of(&c), Readiness::Pending("2 of 3 instances ready; phase: Creating replica".into()));
        c["status"] = json!({"readyInstances": 3, "phase": "Cluster in healthy state"});
        assert_eq!(of(&c), Readiness::Ready);
    }
}
