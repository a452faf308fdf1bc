use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use kaggleingest::cli::{Cli, Command, ConfigAction};
use kaggleingest::config::{self, Settings};
use kaggleingest::{admin, backup, copy, healthcheck, logging, server};

/// jemalloc: it keeps allocator metadata out of the pages it hands out, so
/// an idle connection's untouched buffer pages never become resident, and
/// with a background thread it returns freed memory to the OS within
/// seconds (glibc kept the peak of a connection burst resident for good).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation: purge freed pages
/// after a second, and two arenas (per-thread caches absorb the small
/// allocations of requests; more arenas only hold more idle memory).
#[allow(non_upper_case_globals)]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static malloc_conf: &[u8] =
    b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2\0";

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    if let Command::Config {
        action: ConfigAction::Example,
        ..
    } = cli.command
    {
        print!("{}", config::example());
        return ExitCode::SUCCESS;
    }
    let (settings, sources) = match Settings::load_with_sources(cli.command.config_args()) {
        Ok(loaded) => loaded,
        Err(e) => return fail(&e),
    };
    let log_guard = logging::init(&settings.log_level, settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(kaggleingest::db::on_thread_idle)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let outcome = match cli.command {
        Command::Serve(_) => runtime
            .block_on(server::run(settings))
            .map_err(anyhow::Error::from),
        Command::User { json, action, .. } => runtime.block_on(admin::run(&settings, action, json)),
        Command::Backup {
            dest, overwrite, ..
        } => runtime.block_on(backup::run(&settings.db, &dest, overwrite)),
        Command::Copy {
            from,
            to,
            overwrite,
            ..
        } => runtime.block_on(copy::run(&from, &to, overwrite)),
        Command::Healthcheck { url, .. } => {
            runtime.block_on(healthcheck::run(&settings, url.as_deref()))
        }
        Command::Config { .. } => {
            print!("{}", config::show(&settings, &sources, &matches));
            Ok(())
        }
    };
    // Tasks still running past the grace period, and the runtime's own
    // threads, log nothing more once it is gone; then every buffered line is
    // written out before the last word (or the exit).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    drop(log_guard);
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        // `{:#}`: the error and its causes on one line.
        Err(e) => fail(&format_args!("{e:#}")),
    }
}

/// One clear line on stderr and a non-zero exit: no panic, no backtrace.
fn fail(problem: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("kaggleingest: error: {problem}");
    ExitCode::FAILURE
}
