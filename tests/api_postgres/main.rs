//! The black-box HTTP suite of `tests/api` again, every server on a
//! database of its own in a throwaway PostgreSQL cluster (`cluster`), plus
//! what only PostgreSQL can show: several nodes on one database, TLS,
//! `copy` between the stores (`postgres`). Without PostgreSQL on the
//! machine the suite says so in one line and skips.
//!
//! The modules are `tests/api`'s files; tests about the SQLite file itself
//! skip here, each saying so (`helpers::sqlite_only`). Left out entirely:
//! the command line and config (`startup`), SQLite migrations
//! (`migration`) and the source layout (`structure`), which involve no
//! store.

// `helpers` serves both suites: some of its items are for the modules this
// one leaves out.
#[path = "../api/admin.rs"]
mod admin;
#[path = "../api/browser.rs"]
mod browser;
#[path = "../api/cluster.rs"]
mod cluster;
#[path = "../api/contract.rs"]
mod contract;
#[path = "../api/durability.rs"]
mod durability;
#[path = "../api/hardening.rs"]
mod hardening;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[path = "../api/keys.rs"]
mod keys;
#[path = "../api/limits.rs"]
mod limits;
#[path = "../api/me.rs"]
mod me;
#[path = "../api/metering.rs"]
mod metering;
#[path = "../api/ops.rs"]
mod ops;
#[path = "../api/page.rs"]
mod page;
#[path = "../api/paths.rs"]
mod paths;
mod postgres;
#[path = "../api/proxy.rs"]
mod proxy;
#[path = "../api/signup.rs"]
mod signup;
#[path = "../api/storage.rs"]
mod storage;

/// The store of this suite's servers.
const BACKEND: helpers::Backend = helpers::Backend::Postgres;
