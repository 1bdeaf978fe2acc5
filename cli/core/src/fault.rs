//! Chaos faults as every part of scalectl names them: the kinds of fault and the
//! selectors of what they hit. `cli/chaos` reads them from experiment files, the
//! command line parses them, and each provider injects them (`Provider::inject`).

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL every process of a node.
    NodeLoss,
    /// SIGSTOP, then SIGCONT when the duration is over.
    Freeze,
    /// Stop and start a node's processes.
    Restart,
    /// Drop traffic between two sides' addresses.
    Partition,
    /// A planned Patroni switchover to the target.
    Switchover,
    /// Kill the Redis server.
    RedisLoss,
    /// Kill one shop process behind the edge balancer.
    ShopInstanceLoss,
}

impl FaultKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::NodeLoss => "node-loss",
            FaultKind::Freeze => "freeze",
            FaultKind::Restart => "restart",
            FaultKind::Partition => "partition",
            FaultKind::Switchover => "switchover",
            FaultKind::RedisLoss => "redis-loss",
            FaultKind::ShopInstanceLoss => "shop-instance-loss",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of the environment's nodes a fault hits, resolved when the fault starts (the
/// leader is whoever leads then). Plural selectors name groups, for partition sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum Selector {
    #[serde(rename = "leader")]
    Leader,
    /// One synchronous standby (level 3 has two; `replicas` names them all).
    #[serde(rename = "sync-standby")]
    SyncStandby,
    /// Any one replica (the asynchronous one when there is one).
    #[serde(rename = "replica")]
    Replica,
    /// Every PostgreSQL node but the leader.
    #[serde(rename = "replicas")]
    Replicas,
    /// Every PostgreSQL node.
    #[serde(rename = "db")]
    Db,
    #[serde(rename = "redis")]
    Redis,
    /// One shop process, picked at random.
    #[serde(rename = "shop:any")]
    ShopAny,
    /// Every shop process.
    #[serde(rename = "shops")]
    Shops,
    /// Every outbox worker process.
    #[serde(rename = "workers")]
    Workers,
    /// The message broker (level 5 and up).
    #[serde(rename = "broker")]
    Broker,
}

impl Selector {
    pub fn as_str(self) -> &'static str {
        match self {
            Selector::Leader => "leader",
            Selector::SyncStandby => "sync-standby",
            Selector::Replica => "replica",
            Selector::Replicas => "replicas",
            Selector::Db => "db",
            Selector::Redis => "redis",
            Selector::ShopAny => "shop:any",
            Selector::Shops => "shops",
            Selector::Workers => "workers",
            Selector::Broker => "broker",
        }
    }

    /// A group of nodes rather than one: only a partition's side may be a group.
    pub fn is_group(self) -> bool {
        matches!(self, Selector::Replicas | Selector::Db | Selector::Shops)
    }

    /// The lowest level whose environment has this target (replicas and Redis come
    /// with level 3, the broker with level 5).
    pub fn min_level(self) -> u8 {
        match self {
            Selector::SyncStandby | Selector::Replica | Selector::Replicas | Selector::Redis => 3,
            Selector::Broker => 5,
            Selector::Leader | Selector::Db | Selector::ShopAny | Selector::Shops | Selector::Workers => 1,
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every fault kind, for help and error messages.
pub const FAULT_KINDS: [FaultKind; 7] = [
    FaultKind::NodeLoss,
    FaultKind::Freeze,
    FaultKind::Restart,
    FaultKind::Partition,
    FaultKind::Switchover,
    FaultKind::RedisLoss,
    FaultKind::ShopInstanceLoss,
];

/// Every selector, for help and error messages.
pub const SELECTORS: [Selector; 10] = [
    Selector::Leader,
    Selector::SyncStandby,
    Selector::Replica,
    Selector::Replicas,
    Selector::Db,
    Selector::Redis,
    Selector::ShopAny,
    Selector::Shops,
    Selector::Workers,
    Selector::Broker,
];

fn one_of<T: Copy + fmt::Display>(what: &str, text: &str, all: &[T]) -> Result<T, String> {
    all.iter().copied().find(|k| k.to_string() == text).ok_or_else(|| {
        let names: Vec<String> = all.iter().map(T::to_string).collect();
        format!("unknown {what} `{text}`; choose one of {}", names.join(", "))
    })
}

impl FromStr for FaultKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        one_of("fault", s.trim(), &FAULT_KINDS)
    }
}

impl FromStr for Selector {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        one_of("chaos target", s.trim(), &SELECTORS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_selectors_read_as_they_print() {
        for k in FAULT_KINDS {
            assert_eq!(k.to_string().parse::<FaultKind>(), Ok(k));
        }
        for s in SELECTORS {
            assert_eq!(s.to_string().parse::<Selector>(), Ok(s));
        }
        let e = "node-lost".parse::<FaultKind>().unwrap_err();
        assert!(e.starts_with("unknown fault `node-lost`; choose one of node-loss, freeze"), "{e}");
        assert!("leaders".parse::<Selector>().unwrap_err().contains("shop:any, shops"));
    }
}
