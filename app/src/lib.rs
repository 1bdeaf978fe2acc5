//! `shop`: the e-commerce service every scalectl level deploys (axum + sqlx + redis).
//!
//! Guarantees: an acknowledged order exists exactly once (idempotency keys, unique
//! constraints); stock never goes below zero and a flash sale's sold + remaining =
//! units (conditional updates in the order's transaction — Redis only gates);
//! notifications leave through a transactional outbox.
//!
//! Layout:
//! - [`config`]: settings, route roles, rate-limit specs
//! - [`state`]: `AppState` — pools, optional Redis, in-process caches and trackers
//! - [`http`]: `app(state) -> Router`, `serve`, request-id/metrics middleware, ops routes
//! - [`request_log`]: the request's id, route and user on its log lines (no span)
//! - [`error`]: `AppError` and its mapping to status codes
//! - [`extract`]: JSON/path/query extractors with field-naming errors, auth, client ip
//! - [`domain`]: parsed request values (quantities, emails, ratings…)
//! - [`auth`], [`catalog`], [`cart`], [`checkout`], [`orders`], [`flash`]: the routes
//! - [`flash_batch`]: flash purchases that arrive together buy in one transaction;
//!   [`flash_units`]: a sale's units in PostgreSQL (taking them, what is left, sealing)
//! - [`outbox`]: the worker that drains the outbox into notifications / dead letters
//! - [`cache`], [`ratelimit`], [`metrics`]: product cache, token buckets, Prometheus
//! - [`lockout`]: failed logins slow password guessing down (policy in [`failures`])
//! - leaves that `state` holds and the routes use, so that no module depends on itself
//!   through `state`: [`identity`] (users, roles, cached sessions), [`flash_memory`]
//!   (what a process remembers of flash sales), [`buckets`] (in-process token buckets),
//!   [`failures`] (the failed-login policy and its in-process counts)
//! - [`redis_link`]: the Redis connection and its circuit breaker (Redis is optional)
//! - [`db`]: `Db`/`Tx` (pools that work behind a transaction pooler, statement
//!   counts), embedded migrations; [`partitions`]: orders partitioned by month
//! - [`openapi`]: the generated OpenAPI document

pub mod auth;
pub mod broker;
pub mod buckets;
pub mod cache;
pub mod cart;
pub mod catalog;
pub mod checkout;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod extract;
pub mod failures;
pub mod flash;
pub mod flash_batch;
pub mod flash_memory;
pub mod flash_units;
pub mod http;
pub mod identity;
pub mod lockout;
pub mod metrics;
pub mod openapi;
pub mod orders;
pub mod outbox;
pub mod partitions;
pub mod ratelimit;
pub mod redis_link;
pub mod request_log;
pub mod state;

pub use config::{RateLimits, RateSpec, Role, Roles, Settings};
pub use http::{app, serve};
pub use state::AppState;
