use std::process::ExitCode;

use clap::Parser;
use kaggleingest::cli::{Cli, Command};
use kaggleingest::config::Settings;
use kaggleingest::{admin, logging, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (Command::Serve(config) | Command::User { config, .. }) = &cli.command;
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(e) => return fail(&e),
    };
    logging::init(&settings.log_level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let outcome = match cli.command {
        Command::Serve(_) => runtime
            .block_on(server::run(settings))
            .map_err(|e| e.to_string()),
        Command::User { json, action, .. } => {
            runtime.block_on(admin::run(&settings.db, action, json))
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// One clear line on stderr and a non-zero exit: no panic, no backtrace.
fn fail(problem: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("kaggleingest: error: {problem}");
    ExitCode::FAILURE
}
