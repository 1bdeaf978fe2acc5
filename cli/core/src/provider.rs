//! The one trait every target implements. The core only declares it; the providers
//! (`cli/local`, later `cli/kube` and `cli/aws`) do the I/O.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::graph::{Graph, Resource, ResourceKind};
use crate::ops::{ChaosOps, DatabaseOps};
use crate::plan::{Action, Observed};
use crate::target::Target;

/// What the engine needs to know about a failed provider call to act on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    /// The same call may succeed if made again (a busy peer, throttling, a timeout):
    /// the engine retries it with backoff until the step's deadline.
    Transient,
    /// Something else holds what the call needs (a port, an object another manager
    /// owns): retrying will not help until that is resolved.
    Conflict,
    /// What the call refers to does not exist.
    NotFound,
    /// Anything else: retrying will not help until the input or the machine changes.
    Failed,
}

/// A failed provider call: its kind and a message that names the resource and says
/// what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProviderError { kind, message: message.into() }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        ProviderError::new(ErrorKind::Transient, message)
    }

    pub fn is_transient(&self) -> bool {
        self.kind == ErrorKind::Transient
    }
}

/// A plain message is a failure that retrying will not mend.
impl From<String> for ProviderError {
    fn from(message: String) -> Self {
        ProviderError::new(ErrorKind::Failed, message)
    }
}

/// What a readiness check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "why", rename_all = "snake_case")]
pub enum Readiness {
    Ready,
    /// Not yet, and why (a replica catching up, a port not answering).
    Pending(String),
    /// It will not become ready by waiting (the process exited), and why.
    Failed(String),
}

/// What `apply` reports back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Something the user should read (a skipped optional part, say).
    pub note: Option<String>,
    /// What the step created that later steps and commands refer to (an endpoint, a
    /// cloud id), recorded in state so that nothing has to be guessed again.
    pub outputs: BTreeMap<String, String>,
}

/// A provider call that may take long: a boxed future, so that the engine can run
/// several at once on one thread and a provider built on an async SDK (kube-rs, the AWS
/// SDK) needs no runtime of its own. The core names no runtime; the caller brings one.
pub type Call<'a, T> = Pin<Box<dyn Future<Output = Result<T, ProviderError>> + Send + 'a>>;

/// A readiness check in flight (see [`Provider::readiness`]).
pub type Check<'a> = Pin<Box<dyn Future<Output = Readiness> + Send + 'a>>;

/// Runs resources on one target. Every method is idempotent: calling `apply` on a
/// resource that is already as desired changes nothing, and a call interrupted at any
/// point is finished by the next one.
///
/// The calls that start, stop or probe something (`apply`, `readiness`, `destroy`)
/// are async; the ones that read what is already there (`observe`, `logs`,
/// `config_files`) and the operations stay plain calls, because each is one quick
/// look that a command makes once.
pub trait Provider: Sync {
    fn target(&self) -> Target;

    /// Whether this provider can run resources of `kind` yet.
    fn supports(&self, kind: ResourceKind) -> bool;

    /// Problems that would stop `up` part-way, found before anything starts (a
    /// PostgreSQL version this machine lacks, say); each says what to do.
    fn preflight(&self, _graph: &Graph) -> Vec<String> {
        Vec::new()
    }

    /// Settings of the manifest that this machine cannot act on, though the target can
    /// elsewhere (CPU weights without the controllers for them, say); `plan` and `up`
    /// list them with what `topology::unused` finds.
    fn unused_here(&self, _graph: &Graph) -> Vec<crate::topology::Unused> {
        Vec::new()
    }

    /// What is running for `resource` right now. Cheap: `plan` calls it for every resource.
    fn observe(&self, resource: &Resource) -> Observed;

    /// Brings `resource` to its desired definition (`action` says why it is called).
    /// Returns what it created that others refer to, and anything the user should read.
    fn apply<'a>(&'a self, resource: &'a Resource, action: &'a Action) -> Call<'a, Applied>;

    /// Whether `resource` is ready now: one cheap check, never a wait. The engine polls
    /// it with backoff until the resource is ready, fails, or its deadline passes, and
    /// shows the reason it is pending.
    fn readiness<'a>(&'a self, resource: &'a Resource) -> Check<'a>;

    /// How long `resource` may take to become ready after `apply`, when the target knows
    /// better than the manifest's `healthTimeoutSeconds` (a cloud database takes minutes).
    fn ready_within(&self, _resource: &Resource) -> Option<Duration> {
        None
    }

    /// Stops `resource` and, unless `keep_data`, deletes its data.
    fn destroy<'a>(&'a self, resource: &'a Resource, keep_data: bool) -> Call<'a, ()>;

    /// The last `lines` lines of the resource's log.
    fn logs(&self, resource: &Resource, lines: usize) -> Result<String, ProviderError>;

    /// Every configuration file generated for `resource`, as (file name, contents).
    fn config_files(&self, resource: &Resource) -> Result<Vec<(String, String)>, ProviderError>;

    /// An identity of the program `resource` runs when scalectl deploys it from a local
    /// build (the shop), so that a rebuilt shop shows in the plan and is rolled out.
    fn program_digest(&self, _resource: &Resource) -> Option<String> {
        None
    }

    /// The addresses a user needs, by name: `shop` (through its balancer when there is
    /// one), `database` (without its password), `prometheus` (when it runs).
    fn endpoints(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::new()
    }

    /// The database operations this target offers, if any.
    fn database(&self) -> Option<&dyn DatabaseOps> {
        None
    }

    /// The chaos faults this target can inject and undo, if any.
    fn chaos(&self) -> Option<&dyn ChaosOps> {
        None
    }

    /// The alerts this target delivered and kept, if it keeps them.
    fn alerts(&self) -> Option<&dyn crate::alerts::AlertOps> {
        None
    }
}
