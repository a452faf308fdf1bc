use std::process::ExitCode;

use clap::Parser;
use kaggleingest::cli::{Cli, Command};
use kaggleingest::config::Settings;
use kaggleingest::{logging, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            let settings = match Settings::load(&args) {
                Ok(settings) => settings,
                Err(e) => return fail(&e),
            };
            logging::init(&settings.log_level);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime,
                Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
            };
            match runtime.block_on(server::run(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            }
        }
    }
}

/// One clear line on stderr and a non-zero exit: no panic, no backtrace.
fn fail(problem: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("kaggleingest: error: {problem}");
    ExitCode::FAILURE
}
