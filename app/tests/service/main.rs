//! Service tests: the shop in-process on port 0 against a real PostgreSQL and Redis
//! started by `support` (one of each per test binary, a fresh database per test).

mod support;

mod auth;
mod binary;
mod catalog;
mod checkout;
mod flash;
mod input;
mod ops;
mod outbox;
