//! KaggleIngest accounts: signup with email and password, API keys, and
//! authentication with them, on one SQLite file or, for several nodes, one
//! PostgreSQL database.

/// Accounts and tiers: the domain types storage stores and handlers show.
pub mod account;
/// `kaggleingest user ...`: account administration on the database.
pub mod admin;
/// `kaggleingest backup DEST`: consistent, atomic, checked copies.
pub mod backup;
/// The command line: subcommands and flags.
pub mod cli;
/// Who the client is, behind trusted proxies.
pub mod client_ip;
/// Settings merged from flags, environment, config file and defaults.
pub mod config;
/// The per-address connection cap.
pub mod connections;
/// `kaggleingest copy`: every account from one store to the other.
pub mod copy;
/// The storage boundary: SQLite or PostgreSQL, pools, migrations, every SQL statement.
pub mod db;
/// Email parsing and normalization.
pub mod email;
/// The one error type and its mapping to HTTP.
pub mod error;
/// What each endpoint does.
pub mod handlers;
/// The bounded, low-priority bcrypt thread pool.
pub mod hasher;
/// `kaggleingest healthcheck`: readiness probe for containers.
pub mod healthcheck;
/// API key generation and digests.
pub mod keys;
/// Log output.
pub mod logging;
/// The signup page at `GET /` and its assets.
pub mod page;
/// Password rules and bcrypt.
pub mod password;
/// Per-client rate limits and their headers.
pub mod ratelimit;
/// Errors shown as one line with their sources.
pub mod report;
/// warp filters: paths, methods, headers, bodies.
pub mod routes;
/// Startup, the connection loop and graceful shutdown.
pub mod server;
/// Prometheus metrics and their listener.
pub mod telemetry;
