//! Black-box tests: each starts the real binary on 127.0.0.1:0 with a fresh
//! SQLite file in a temp dir and talks HTTP to it.

mod admin;
mod browser;
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
