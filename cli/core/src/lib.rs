//! scalectl's planning core: everything between a manifest and a list of steps, with no
//! I/O, so that it is deterministic and unit-testable.
//!
//! - [`tree`]: YAML parsed into nodes that remember file, line and column.
//! - [`manifest`]: the typed manifest, its JSON Schema, and [`manifest::Sources`], which
//!   merges base, overlays and `--set` and reports every problem at once.
//! - [`schema_check`]: checks a located tree against the JSON Schema.
//! - [`rules`]: rules across fields that a schema cannot express.
//! - [`units`]: durations and sizes, parsed once and rendered for each consumer.
//! - [`diagnostic`]: one located problem, with a suggestion.
//! - [`fault`]: chaos fault kinds and selectors, shared by experiments and providers.
//! - [`levels`]: the six built-in levels and what each adds, for `levels` and `explain`.
//! - [`topology`]: what an environment is made of, target-neutral, from a manifest.
//! - [`target`]: the targets; each provider crate expands the topology for its own.
//! - [`graph`]: desired resources as a dependency graph.
//! - [`plan`]: desired against recorded and observed, as ordered steps.
//! - [`provider`]: the trait each target implements.
//! - [`ops`]: capabilities beyond up and down (database operations, chaos), typed.

pub mod alerts;
pub mod diagnostic;
pub mod fault;
pub mod graph;
pub mod levels;
pub mod manifest;
pub mod ops;
pub mod plan;
pub mod provider;
pub mod rules;
pub mod schema_check;
pub mod spec;
pub mod target;
pub mod topology;
pub mod tree;
pub mod units;

pub use diagnostic::Diagnostic;
pub use graph::{Graph, Resource, ResourceKind};
pub use manifest::{Manifest, Sources};
pub use plan::{Action, Observed, Plan, plan};
pub use provider::{Applied, Call, Check, ErrorKind, Provider, ProviderError, Readiness};
pub use spec::Spec;
pub use target::Target;
pub use topology::Topology;
pub use units::{ByteSize, Cpu, Duration};
