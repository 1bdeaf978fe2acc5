//! The shipped experiments (`chaos/*.yaml`), compiled in so that `scalectl chaos list`
//! and `scalectl chaos run NAME` work from any directory.

/// One shipped experiment: its name (the file's stem), file path and text.
#[derive(Debug, Clone, Copy)]
pub struct Shipped {
    pub name: &'static str,
    pub file: &'static str,
    pub text: &'static str,
}

macro_rules! shipped {
    ($($name:literal),* $(,)?) => {
        &[$(Shipped { name: $name, file: concat!("chaos/", $name, ".yaml"), text: include_str!(concat!("../../../chaos/", $name, ".yaml")) }),*]
    };
}

/// Every shipped experiment, in the order `chaos list` shows them.
pub const SHIPPED: &[Shipped] = shipped![
    "primary-loss",
    "replica-loss",
    "primary-freeze",
    "redis-loss",
    "shop-instance-loss",
    "worker-loss",
    "broker-loss",
    "partition-primary-from-replicas",
    "partition-shop-from-db",
    "switchover",
    "flash-sale-under-failover",
    "switchover-then-leader-loss",
    "leader-loss-while-standby-catches-up",
    "replica-loss-then-leader-loss",
    "partition-then-leader-loss",
];

/// The shipped experiment called `name`.
pub fn shipped(name: &str) -> Option<&'static Shipped> {
    SHIPPED.iter().find(|s| s.name == name)
}
