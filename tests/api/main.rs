//! Black-box tests: each starts the real binary on 127.0.0.1:0 with a fresh
//! SQLite file in a temp dir and talks HTTP to it. `tests/api_postgres`
//! runs the same HTTP tests on PostgreSQL.

mod admin;
mod browser;
// Unused here but by `helpers`, which both suites share.
#[allow(dead_code)]
mod cluster;
mod contract;
mod durability;
mod hardening;
mod helpers;
mod keys;
mod limits;
mod me;
mod metering;
mod migration;
mod ops;
mod page;
mod paths;
mod proxy;
mod signup;
mod startup;
mod storage;
mod structure;

/// The store of this suite's servers.
const BACKEND: helpers::Backend = helpers::Backend::Sqlite;
