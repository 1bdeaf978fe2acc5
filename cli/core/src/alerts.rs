//! Alerts as Alertmanager delivered them, read back: what `scalectl alerts` shows.
//!
//! Alertmanager's webhook posts notifications (format version 4), each listing the alerts
//! of one group with their state at that moment. A target keeps every notification it
//! received, in order ([`AlertOps::notifications`]); [`fold`] turns that journal into one
//! line per alert (by Alertmanager's fingerprint) in its latest state. Prometheus's own
//! `/api/v1/alerts` forgets an alert once it resolves, and a pipeline that asks "did the
//! burn-rate alert fire during the outage, and did it resolve?" needs both halves.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::provider::ProviderError;

/// One webhook delivery, as Alertmanager sends it (the fields scalectl reads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `firing` while any alert of the group fires, else `resolved`.
    pub status: String,
    pub alerts: Vec<WebhookAlert>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    /// `firing` or `resolved`.
    pub status: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    /// Alertmanager's zero time (`0001-01-01T00:00:00Z`) while it fires.
    #[serde(default)]
    pub ends_at: String,
    /// Identifies the alert (its labels) across notifications.
    pub fingerprint: String,
}

/// A notification and when the receiver got it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// RFC 3339, the receiver's clock.
    pub received_at: String,
    pub notification: Notification,
}

/// One alert in its latest known state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub name: String,
    pub severity: Option<String>,
    /// `firing`, `resolved`, or `ended` (see [`fold`]).
    pub state: String,
    pub starts_at: String,
    /// When it resolved; none while it fires.
    pub ends_at: Option<String>,
    pub summary: Option<String>,
    /// How many notifications carried it.
    pub notifications: u32,
    /// When the latest of them arrived.
    pub last_notified_at: String,
    pub labels: BTreeMap<String, String>,
    pub fingerprint: String,
}

/// The alerts of a journal, one per fingerprint in its latest state: firing ones first,
/// then the others, newest start first within each. With `active` (the fingerprints
/// Alertmanager holds now), an alert whose last word was "firing" but that Alertmanager
/// no longer holds is `ended`: no resolution was delivered because Prometheus or
/// Alertmanager restarted while it fired (`down --keep-data` and `up`, say), so it must
/// not count as firing forever.
pub fn fold(journal: &[Received], active: Option<&[String]>) -> Vec<Alert> {
    let mut by_print: BTreeMap<&str, Alert> = BTreeMap::new();
    for r in journal {
        for a in &r.notification.alerts {
            let entry = by_print.entry(&a.fingerprint).or_insert_with(|| Alert {
                name: a.labels.get("alertname").cloned().unwrap_or_else(|| "(unnamed)".into()),
                severity: None,
                state: String::new(),
                starts_at: String::new(),
                ends_at: None,
                summary: None,
                notifications: 0,
                last_notified_at: String::new(),
                labels: BTreeMap::new(),
                fingerprint: a.fingerprint.clone(),
            });
            entry.severity = a.labels.get("severity").cloned();
            entry.state = a.status.clone();
            entry.starts_at = a.starts_at.clone();
            entry.ends_at = (a.status == "resolved" && !a.ends_at.starts_with("0001-")).then(|| a.ends_at.clone());
            entry.summary = a.annotations.get("summary").cloned();
            entry.notifications += 1;
            entry.last_notified_at = r.received_at.clone();
            entry.labels = a.labels.clone();
        }
    }
    let mut alerts: Vec<Alert> = by_print.into_values().collect();
    if let Some(active) = active {
        for a in alerts.iter_mut().filter(|a| a.state == "firing" && !active.contains(&a.fingerprint)) {
            a.state = "ended".into();
        }
    }
    alerts.sort_by(|a, b| (a.state != "firing").cmp(&(b.state != "firing")).then_with(|| b.starts_at.cmp(&a.starts_at)));
    alerts
}

/// What a target can tell about the alerts it delivered.
pub trait AlertOps {
    /// Every notification the environment's receiver got, oldest first; an error when
    /// the environment routes no alerts (`spec.observability.burnRateAlerts` off).
    fn notifications(&self) -> Result<Vec<Received>, ProviderError>;

    /// The fingerprints of the alerts Alertmanager holds now, or none when it cannot be
    /// asked (then the journal alone is believed).
    fn active(&self) -> Option<Vec<String>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(name: &str, status: &str, print: &str, ends: &str) -> WebhookAlert {
        WebhookAlert {
            status: status.into(),
            labels: [("alertname".to_string(), name.to_string()), ("severity".to_string(), "page".to_string())].into(),
            annotations: [("summary".to_string(), format!("{name} {status}"))].into(),
            starts_at: format!("2026-12-07T10:00:0{}Z", print.len()),
            ends_at: ends.into(),
            fingerprint: print.into(),
        }
    }

    fn received(at: &str, alerts: Vec<WebhookAlert>) -> Received {
        Received { received_at: at.into(), notification: Notification { status: "firing".into(), alerts } }
    }

    #[test]
    fn the_latest_notification_of_each_alert_wins_and_firing_ones_come_first() {
        let zero = "0001-01-01T00:00:00Z";
        let journal = vec![
            received("t1", vec![alert("Burn", "firing", "a", zero), alert("Down", "firing", "bb", zero)]),
            received("t2", vec![alert("Burn", "resolved", "a", "2026-12-07T10:05:00Z")]),
            received("t3", vec![alert("Down", "firing", "bb", zero)]),
        ];
        let alerts = fold(&journal, Some(&["bb".to_string()]));
        assert_eq!(alerts.iter().map(|a| (a.name.as_str(), a.state.as_str())).collect::<Vec<_>>(), [("Down", "firing"), ("Burn", "resolved")]);
        assert_eq!(alerts[0].ends_at, None, "Alertmanager's zero time means it still fires");
        assert_eq!((alerts[0].notifications, alerts[0].last_notified_at.as_str()), (2, "t3"));
        assert_eq!(alerts[1].ends_at.as_deref(), Some("2026-12-07T10:05:00Z"));
        assert_eq!(alerts[1].summary.as_deref(), Some("Burn resolved"));
        assert_eq!(alerts[1].severity.as_deref(), Some("page"));
        let forgotten = fold(&journal, Some(&[]));
        let down = forgotten.iter().find(|a| a.name == "Down").unwrap();
        assert_eq!(down.state, "ended", "Alertmanager no longer holds it: it fires no more, though nothing said so");
        assert_eq!(fold(&journal, None)[0].state, "firing", "without Alertmanager's word the journal stands");
    }

    #[test]
    fn alertmanagers_webhook_body_reads() {
        let body = r#"{"receiver":"scalectl","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"ScrapeTargetDown","job":"shop"},
            "annotations":{"summary":"shop is down"},"startsAt":"2026-12-07T10:00:00.1Z","endsAt":"0001-01-01T00:00:00Z",
            "generatorURL":"http://x","fingerprint":"6d1f"}],"groupLabels":{},"commonLabels":{},"commonAnnotations":{},
            "externalURL":"http://am","version":"4","groupKey":"{}:{}","truncatedAlerts":0}"#;
        let n: Notification = serde_json::from_str(body).unwrap();
        assert_eq!(n.alerts[0].labels["job"], "shop");
        assert_eq!(n.alerts[0].fingerprint, "6d1f");
    }
}
