//! Service tests: the shop in-process on port 0 against a real PostgreSQL and Redis
//! started by `support` (one of each per test binary, a fresh database per test), and
//! PgBouncer in front of that PostgreSQL for the tests that need it.

mod support;

mod auth;
mod binary;
mod broker;
mod catalog;
mod checkout;
mod flash;
mod hostile;
mod input;
mod ops;
mod outbox;
mod partitions;
mod pgbouncer;
mod pool;
mod read_your_writes;
