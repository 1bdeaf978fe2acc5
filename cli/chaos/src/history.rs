//! The history a workload records under faults: every operation with its client, when it
//! was due, when it started and ended (offsets from the run's start), and what the client
//! learned. Appended as JSON lines while the run goes, read back whole by the checker.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every operation of one run, in the order they were recorded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub ops: Vec<Op>,
}

/// One attempt of one operation. A retry with the same idempotency key is another `Op`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    pub op: Operation,
    /// When the open-model schedule wanted it sent; latency counts from here.
    #[serde(rename = "scheduled_us", with = "crate::time::micros")]
    pub scheduled: Duration,
    #[serde(rename = "started_us", with = "crate::time::micros")]
    pub started: Duration,
    #[serde(rename = "ended_us", with = "crate::time::micros")]
    pub ended: Duration,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Operation {
    /// `POST /checkout` of a cart, under an `Idempotency-Key`.
    Checkout { user_id: i64, idempotency_key: String, cart: Vec<Line> },
    /// `POST /flash-sales/{id}/purchase`, under an `Idempotency-Key`.
    FlashPurchase { user_id: i64, sale_id: i64, quantity: u32, idempotency_key: String },
    /// Any request that writes nothing (browse, search, order history).
    Read { route: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub product_id: i64,
    pub quantity: u32,
}

/// What the client knows about an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// The shop acknowledged it; writes carry the order id it returned.
    Ok {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        order_id: Option<i64>,
    },
    /// The shop answered with an error. `definitive` when the answer proves nothing was
    /// written (a 4xx such as `insufficient stock`); a 5xx may have committed first.
    Failed { status: u16, definitive: bool },
    /// No answer (the connection broke, a timeout): the write may or may not have happened.
    Unknown { error: String },
}

/// Which user's which idempotency key: the identity of a write across its retries.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct IntentKey {
    pub user_id: i64,
    pub idempotency_key: String,
}

impl Op {
    pub fn is_write(&self) -> bool {
        !matches!(self.op, Operation::Read { .. })
    }

    /// The write's identity; `None` for reads.
    pub fn intent(&self) -> Option<IntentKey> {
        match &self.op {
            Operation::Checkout { user_id, idempotency_key, .. } | Operation::FlashPurchase { user_id, idempotency_key, .. } => {
                Some(IntentKey { user_id: *user_id, idempotency_key: idempotency_key.clone() })
            }
            Operation::Read { .. } => None,
        }
    }

    /// Latency as the user saw it: from when the request was due, not when it was sent.
    pub fn latency(&self) -> Duration {
        self.ended.saturating_sub(self.scheduled)
    }

    /// Counts against availability: no answer, or a server-side failure. A definitive 4xx
    /// (sold out, insufficient stock) is the shop working as designed.
    pub fn is_error(&self) -> bool {
        match self.outcome {
            Outcome::Ok { .. } => false,
            Outcome::Failed { status, .. } => status >= 500 || status == 0,
            Outcome::Unknown { .. } => true,
        }
    }

    pub fn is_ok(&self) -> bool {
        matches!(self.outcome, Outcome::Ok { .. })
    }

    /// One line of the JSON-lines history (without the newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an op always serializes")
    }
}

/// A history line that could not be read back.
#[derive(Debug, thiserror::Error)]
#[error("history line {line}: {source}")]
pub struct ReadHistoryError {
    pub line: usize,
    #[source]
    pub source: serde_json::Error,
}

impl History {
    /// The JSON-lines form, one op per line.
    pub fn to_json_lines(&self) -> String {
        self.ops.iter().map(|op| op.to_json_line() + "\n").collect()
    }

    /// Reads JSON lines back; blank lines are skipped. A run killed mid-write may leave a
    /// torn last line, which the caller can drop by passing only complete lines.
    pub fn from_json_lines(text: &str) -> Result<History, ReadHistoryError> {
        let mut ops = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
            ops.push(serde_json::from_str(line).map_err(|source| ReadHistoryError { line: i + 1, source })?);
        }
        Ok(History { ops })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip_and_name_the_broken_line() {
        let h = History {
            ops: vec![
                Op {
                    client: 1,
                    op: Operation::Checkout { user_id: 7, idempotency_key: "k1".into(), cart: vec![Line { product_id: 3, quantity: 2 }] },
                    scheduled: Duration::from_millis(10),
                    started: Duration::from_micros(10_250),
                    ended: Duration::from_millis(40),
                    outcome: Outcome::Ok { order_id: Some(99) },
                },
                Op {
                    client: 2,
                    op: Operation::Read { route: "/products".into() },
                    scheduled: Duration::ZERO,
                    started: Duration::ZERO,
                    ended: Duration::from_secs(1),
                    outcome: Outcome::Unknown { error: "connection reset".into() },
                },
            ],
        };
        let text = h.to_json_lines();
        assert!(text.lines().next().unwrap().contains(r#""type":"checkout""#), "{text}");
        assert!(text.contains(r#""started_us":10250"#), "{text}");
        assert!(text.contains(r#""outcome":"unknown""#), "{text}");
        assert_eq!(History::from_json_lines(&text).unwrap(), h);
        assert_eq!(h.ops[0].latency(), Duration::from_millis(30));

        let broken = format!("{text}\n{{\"client\": 3, \"op\"");
        assert_eq!(History::from_json_lines(&broken).unwrap_err().line, 4);
    }
}
