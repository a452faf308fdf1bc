//! The command line: subcommands and their flags (clap derive).

use clap::{Parser, Subcommand};

use crate::config::ConfigArgs;

/// Sign up with email and password, get an API key, authenticate with it.
#[derive(Parser, Debug)]
#[command(name = "kaggleingest", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP server.
    Serve(ConfigArgs),
}
