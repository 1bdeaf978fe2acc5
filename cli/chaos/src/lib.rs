//! `scalectl chaos`: experiment files, the history a workload records under faults, and
//! the checker that judges that history against the database, the way Jepsen does. Pure:
//! the runner that injects faults, drives load and reads the database lives elsewhere and
//! hands this crate values.
//!
//! Layout:
//! - [`experiment`]: the typed experiment file and its JSON Schema; [`span`] and
//!   [`expect`] are its parsed values (durations, probe comparisons).
//! - [`load`]: text to [`Experiment`] or every located problem; [`rules`] are the rules
//!   across fields.
//! - [`library`]: the shipped experiments, compiled in.

pub mod expect;
pub mod experiment;
pub mod library;
pub mod load;
pub mod rules;
pub mod span;

pub use experiment::{Checks, Experiment, Fault, FaultKind, Probe, ProbeCheck, Rollback, Scenario, Target};
pub use library::{SHIPPED, Shipped};
pub use load::load;
pub use span::Span;
