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
//! - [`library`]: the shipped experiments, compiled in; [`random`]: seeded random
//!   schedules of many faults, as experiment text.
//! - [`history`]: the operations a workload recorded (JSON lines); [`snapshot`]: what
//!   the database holds afterwards, as plain data.
//! - [`check`]: history + snapshot + fault windows → a [`Report`] with a verdict per
//!   check; [`render`] writes it as text, [`svg`] as a timeline.
//! - [`time`]: how durations are serialized (text values use `scalectl_core::text_value!`).

pub mod check;
pub mod expect;
pub mod experiment;
pub mod history;
pub mod library;
pub mod load;
pub mod random;
pub mod render;
pub mod rules;
pub mod snapshot;
pub mod span;
pub mod svg;
pub mod time;

pub use check::{CheckName, CheckResult, FaultWindow, Finding, Report, Verdict, check};
pub use experiment::{Checks, Experiment, Fault, FaultKind, Probe, ProbeCheck, Rollback, Scenario, Target};
pub use history::{History, IntentKey, Line, Op, Operation, Outcome};
pub use library::{SHIPPED, Shipped};
pub use load::load;
pub use snapshot::{DbSnapshot, FlashSaleRow, OrderRow, OutboxRow, ProductRow};
pub use span::Span;
