//! `scalectl load`: an open-model HTTP load generator that measures latency from each
//! request's scheduled start, keeps HDR histograms per endpoint, judges a run against
//! SLOs, and drives the shop's scenarios, the flash sale among them.
//!
//! Layout:
//! - [`schedule`]: when each request is due (uniform, Poisson from a seed, or a burst).
//! - [`http`]: a lean HTTP/1.1 client, one keep-alive hyper connection per worker.
//! - [`engine`]: workers, the schedule, late starts, retries of unknown outcomes.
//! - [`stats`]: histograms, quantiles, the per-second timeline.
//! - [`slo`]: the verdict against a level's SLOs.
//! - [`shop`]: the shop's API for setup (buyers, seller, catalog), reused across runs.
//! - [`scenario`]: browse, checkout and mixed as workloads.
//! - [`flash`]: the flash sale and its checks.
//! - [`shop_sql`]: the SQL that reads what the shop's database holds (flash sales, a chaos
//!   run's orders), shared by `load` and `chaos run` so both count alike.
//! - [`report`]: the text summary and the self-contained HTML report.
//! - [`recorded`]: the chaos workload, every attempt recorded in a history for the checker.
//!
//! The crate does HTTP and nothing else: database checks reach it as values from the
//! caller, which knows how to reach the environment's database.

pub mod engine;
pub mod flash;
pub mod http;
pub mod recorded;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod shop;
pub mod shop_sql;
pub mod slo;
pub mod stats;

pub use engine::{Class, Config, Row, Run, Step, Workload, run};
pub use http::{Request, Target};
pub use schedule::{Arrivals, Schedule};

/// Why a load run could not be carried out (as opposed to a run that missed an SLO).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid URL {url}: {why}")]
    Url { url: String, why: String },
    #[error("connecting to {addr}")]
    Connect {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("a load worker failed: {0}")]
    Worker(String),
    #[error("setup: {step}: {why}")]
    Setup { step: String, why: String },
    #[error("user cache {path}")]
    Cache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The runtime every entry point runs on: one worker thread per core, like wrk's threads.
pub fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(Error::Runtime)
}
